//! Mutation fuzzing of the parsers that take untrusted input, on stable Rust: open-data
//! decryption and watermark parsing, APIv3 notification verification and resource decryption,
//! APIv2 XML, and request body parsing.
//!
//! Each target starts from the seeds in `tests/fuzz-corpus/<target>/` and mutates them (bit flips,
//! random bytes, insertions, deletions, duplications, splices, interesting bytes) for
//! `FUZZ_SECONDS` per target (2 s under `cargo test`, 60 s under `make fuzz`). Each input must be
//! handled without a panic, and with each target's own oracle (open data: `opendata::open` agrees
//! with an independent reading of the rules, success for success and failure class for failure
//! class; a notification that verifies must be the signed one; XML that parses must round-trip; a
//! refused body must be a 4xx). Each target prints its seed first; `FUZZ_SEED` replays a run (the
//! same seed gives the same inputs, tested), and a failing input is saved under the temp dir.

use std::path::Path;
use std::time::{Duration, Instant};

use lambda_http::Body;
use serde_json::Value;
use wxa_shared::api::request::parse_json_body;
use wxa_shared::opendata::{self, FailureClass};
use wxa_shared::pay::keys::VerifyingKey;
use wxa_shared::pay::{v2, v3};
use wxa_shared::redacted::Secret;

/// xorshift64*: small, fast, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\"\\{}[]<>&;:,=+/ \n\r\t0A9z";

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(8) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| INTERESTING[rng.below(INTERESTING.len())]).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                data.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                let copy = data[from..to].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                let keep = rng.below(len + 1);
                data.truncate(keep);
                data.extend_from_slice(&other[cut..]);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(64 * 1024);
    data
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

/// Runs `check` on the seeds, then on mutations until the budget is spent; returns the count.
fn fuzz(target: &str, check: impl Fn(&[u8])) -> u64 {
    let budget = Duration::from_secs_f64(
        std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).unwrap();
            u64::from_le_bytes(bytes) | 1
        });
    // Printed first: a run that crashes or hangs is replayed with FUZZ_SEED=<seed>.
    println!("fuzz {target}: FUZZ_SEED={seed}");
    let corpus = seeds(target);
    let mut rng = Rng(seed);
    let mut runs = 0u64;
    for input in &corpus {
        check(input);
        runs += 1;
    }
    let start = Instant::now();
    while start.elapsed() < budget {
        let input = mutate(&mut rng, &corpus);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = outcome {
            let path = std::env::temp_dir().join(format!("wxa-fuzz-{target}-{seed}-{runs}"));
            std::fs::write(&path, &input).unwrap();
            std::panic::resume_unwind(panic_with(path, seed, panic));
        }
        runs += 1;
    }
    println!(
        "fuzz {target}: {runs} executions in {:.1} s (FUZZ_SEED={seed})",
        start.elapsed().as_secs_f64()
    );
    runs
}

fn panic_with(
    path: std::path::PathBuf,
    seed: u64,
    panic: Box<dyn std::any::Any + Send>,
) -> Box<dyn std::any::Any + Send> {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
    Box::new(format!(
        "{} (input saved to {}; replay: FUZZ_SEED={seed} cargo test -p wxa-shared --test fuzz)",
        message.unwrap_or_default(),
        path.display()
    ))
}

/// An independent reading of the open-data rules (base64 with the `+` repair, ends included, and
/// other whitespace around it dropped; AES-128-CBC chained by hand, strict PKCS#7, a JSON object
/// with our watermark): the oracle `opendata::open` must agree with, success for success, value
/// for value, and class of failure for class of failure.
fn reference_open(key: &str, data: &str, iv: &str) -> Result<Value, FailureClass> {
    use aes::cipher::{BlockDecrypt, KeyInit};
    use base64::Engine;
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.replace(' ', "+").trim())
            .map_err(|_| FailureClass::Malformed)
    };
    let key: [u8; 16] = base64::engine::general_purpose::STANDARD
        .decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(FailureClass::StoredKey)?;
    let iv: [u8; 16] = decode(iv)?.try_into().map_err(|_| FailureClass::Malformed)?;
    let data = decode(data)?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(FailureClass::Malformed);
    }
    let cipher = aes::Aes128::new(&key.into());
    let mut previous = iv;
    let mut plain = Vec::with_capacity(data.len());
    for block in data.chunks(16) {
        let mut out = aes::Block::clone_from_slice(block);
        cipher.decrypt_block(&mut out);
        plain.extend(out.iter().zip(previous).map(|(a, b)| a ^ b));
        previous.copy_from_slice(block);
    }
    let pad = *plain.last().expect("not empty") as usize;
    if !(1..=16).contains(&pad) || plain[plain.len() - pad..].iter().any(|&b| b as usize != pad) {
        return Err(FailureClass::Rejected);
    }
    plain.truncate(plain.len() - pad);
    let value: Value = serde_json::from_slice(&plain).map_err(|_| FailureClass::Rejected)?;
    let ours = value["watermark"]["appid"] == APP && value["watermark"]["timestamp"].is_u64();
    if value.is_object() && ours {
        Ok(value)
    } else {
        Err(FailureClass::Rejected)
    }
}

const APP: &str = "wx4f4bc4dec97d474b";

/// `opendata::open` against [`reference_open`] (no age limit, a clock no watermark is ahead of).
fn check_open_data(key: &str, data: &str, iv: &str) {
    let ours = opendata::open::<Value>(&Secret::new(key), data, iv, APP, None, 1 << 62).map_err(|e| e.class());
    let reference = reference_open(key, data, iv);
    assert_eq!(ours, reference, "opendata::open and the reference disagree");
}

#[test]
fn fuzz_open_data_decryption_and_watermark() {
    // Seeds are `session_key \n encryptedData \n iv`: mutations of the text as the client sends it.
    let runs = fuzz("opendata", |input| {
        let text = String::from_utf8_lossy(input);
        let mut parts = text.splitn(3, '\n');
        let (key, data, iv) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        check_open_data(key, data, iv);
    });
    assert!(runs > 3);
}

#[test]
fn fuzz_open_data_ciphertext() {
    // Seeds are `iv (16 bytes) ‖ ciphertext` under the docs' sample key: mutations of the bytes
    // themselves, so that they reach the decryption, the padding and the JSON.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let runs = fuzz("opendata_bytes", |input| {
        let (iv, data) = input.split_at(input.len().min(16));
        check_open_data("tiihtNczf5v6AKRyjwEUhQ==", &b64.encode(data), &b64.encode(iv));
    });
    assert!(runs > 3);
}

#[test]
fn the_oracle_can_fail() {
    // The reference is not the code under test: it tells a good sample from a bad one on its own.
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/opendata/doc-sample");
    let sample: Vec<String> = std::fs::read_to_string(doc)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let opened = reference_open(&sample[0], &sample[1], &sample[2]);
    assert!(opened.is_ok(), "{opened:?}");
    let other_key = "AAAAAAAAAAAAAAAAAAAAAA==";
    assert_eq!(
        reference_open(other_key, &sample[1], &sample[2]),
        Err(FailureClass::Rejected)
    );
    assert_eq!(
        reference_open(&sample[0], "%%", &sample[2]),
        Err(FailureClass::Malformed)
    );
}

#[test]
fn a_seed_replays_the_same_inputs() {
    let corpus = seeds("opendata");
    let run = |seed| {
        let mut rng = Rng(seed);
        (0..200).map(|_| mutate(&mut rng, &corpus)).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn fuzz_v3_notification_verification_and_decryption() {
    let platform = VerifyingKey::from_pem(include_str!("../../tools/wechat-sim/src/platform_cert.pem")).unwrap();
    let seed = String::from_utf8(seeds("v3_notify")[0].clone()).unwrap();
    let (seed_headers, seed_body) = seed.split_once('\n').unwrap();
    let seed_headers: Value = serde_json::from_str(seed_headers).unwrap();
    let apiv3 = Secret::new("test-apiv3-key-0123456789abcdefg");
    let runs = fuzz("v3_notify", |input| {
        let text = String::from_utf8_lossy(input);
        let Some((headers, body)) = text.split_once('\n') else {
            return;
        };
        let headers: Value = serde_json::from_str(headers).unwrap_or(Value::Null);
        let h = |k: &str| headers[k].as_str();
        let signed = v3::SignedHeaders {
            timestamp: h("wechatpay-timestamp"),
            nonce: h("wechatpay-nonce"),
            signature: h("wechatpay-signature"),
            serial: h("wechatpay-serial"),
        };
        let keys = [("PUB_KEY_ID_0114232134912410000000000000", &platform)];
        if v3::verify_signed(&signed, body.as_bytes(), keys, 1_795_536_000).is_ok() {
            assert_eq!(body, seed_body, "a changed body verified");
            assert_eq!(
                h("wechatpay-nonce"),
                seed_headers["wechatpay-nonce"].as_str(),
                "a changed nonce verified"
            );
            assert_eq!(h("wechatpay-timestamp"), seed_headers["wechatpay-timestamp"].as_str());
        }
        let envelope: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let r = &envelope["resource"];
        let (nonce, aad, ciphertext) = (
            r["nonce"].as_str().unwrap_or(""),
            r["associated_data"].as_str().unwrap_or(""),
            r["ciphertext"].as_str().unwrap_or(""),
        );
        if let Some(plain) = v3::decrypt_resource(&apiv3, nonce, aad, ciphertext) {
            // GCM authenticates: only the sealed transaction comes out.
            let tx: Value = serde_json::from_slice(&plain).expect("the sealed plaintext is JSON");
            assert_eq!(tx["out_trade_no"], "T20261125000001");
        }
    });
    assert!(runs > 1);
}

#[test]
fn fuzz_v2_xml() {
    let key = Secret::new("test-apiv2-key-0123456789abcdefg");
    let runs = fuzz("v2_xml", |input| {
        let Ok(text) = std::str::from_utf8(input) else { return };
        if let Some(fields) = v2::from_xml(text) {
            assert_eq!(
                v2::from_xml(&v2::to_xml(&fields)).as_ref(),
                Some(&fields),
                "parsed XML round-trips"
            );
            let _ = v2::verify(&fields, &key, v2::SignType::HmacSha256);
        }
    });
    assert!(runs > 3);
}

#[test]
fn fuzz_request_body_parsing() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        code: String,
        #[serde(default)]
        n: Option<u32>,
    }
    let runs = fuzz("json_body", |input| {
        let content_type = ["application/json", "text/plain", "application/json; charset=gbk", ""][input.len() % 4];
        let mut builder = lambda_http::http::Request::builder().method("POST").uri("/login");
        if !content_type.is_empty() {
            builder = builder.header("content-type", content_type);
        }
        let body = match String::from_utf8(input.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        };
        if let Err(error) = parse_json_body::<Shape>(&builder.body(body).unwrap()) {
            assert!(error.status.is_client_error(), "{error}");
            assert!(!error.code.is_empty() && !error.message.is_empty());
        }
    });
    assert!(runs > 3);
}
