//! `wxa push-decrypt` against the committed vectors (shared/tests/push-vectors, made by an
//! independent Python implementation).

use std::process::{Command, Output};

use serde_json::Value;
use wxa_shared::push::PushKeys;
use wxa_shared::redacted::Secret;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/tests/push-vectors/vectors.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all["open"].as_array().unwrap().clone()
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap()
}

/// `wxa push-decrypt ARGS` with the push secrets' variables set to `env` only.
fn push_decrypt(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wxa"))
        .env_remove("WXA_PUSH_TOKEN")
        .env_remove("WXA_PUSH_AES_KEY")
        .arg("push-decrypt")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("wxa runs")
}

/// The vector's body in a file of this run's scratch folder.
fn body_file(v: &Value, name: &str) -> String {
    let path = std::env::temp_dir().join(format!("wxa-push-{}-{name}", std::process::id()));
    std::fs::write(&path, text(v, "body")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Every flag but the secrets.
fn query<'a>(v: &'a Value, body: &'a str) -> Vec<&'a str> {
    vec![
        "--appid",
        text(v, "appid"),
        "--timestamp",
        text(v, "timestamp"),
        "--nonce",
        text(v, "nonce"),
        "--msg-signature",
        text(v, "msg_signature"),
        "--body",
        body,
    ]
}

#[test]
fn prints_the_message_or_one_line_with_the_reason() {
    let with_body: Vec<Value> = vectors().into_iter().filter(|v| v["body"].is_string()).collect();
    assert!(with_body.len() >= 15);
    for (i, v) in with_body.iter().enumerate() {
        let body = body_file(v, &i.to_string());
        let secrets = ["--token", text(v, "token"), "--aes-key", text(v, "encoding_aes_key")];
        let out = push_decrypt(&[&secrets[..], &query(v, &body)].concat(), &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let name = text(v, "name");
        match v["message"].as_str() {
            Some(message) => {
                assert!(out.status.success(), "{name}: {stderr}");
                assert_eq!(stdout, format!("{message}\n"), "{name}: the message as is");
            }
            None => {
                // The reason is the library's own for this failure, on one line.
                let err = PushKeys::new(
                    Secret::new(text(v, "token")),
                    &Secret::new(text(v, "encoding_aes_key")),
                    text(v, "appid"),
                )
                .and_then(|k| {
                    k.open(
                        text(v, "timestamp"),
                        text(v, "nonce"),
                        text(v, "msg_signature"),
                        text(v, "body"),
                    )
                })
                .unwrap_err();
                assert_eq!(format!("{err:?}"), text(v, "error"), "{name}");
                assert!(!out.status.success(), "{name}");
                assert_eq!(stdout, "", "{name}");
                assert_eq!(stderr, format!("wxa push-decrypt: {err}\n"), "{name}");
            }
        }
    }
}

#[test]
fn the_reasons_an_operator_reads() {
    let all = vectors();
    let reason = |name: &str| {
        let v = all.iter().find(|v| text(v, "name") == name).unwrap();
        let body = body_file(v, "reason");
        let secrets = ["--token", text(v, "token"), "--aes-key", text(v, "encoding_aes_key")];
        let out = push_decrypt(&[&secrets[..], &query(v, &body)].concat(), &[]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (name, expected) in [
        (
            "a wrong msg_signature (another token)",
            "msg_signature is not sha1 of the sorted token, timestamp, nonce and Encrypt",
        ),
        (
            "pad byte 33",
            "bad padding: the last byte is 33, not a pad length from 1 to 32",
        ),
        (
            "pad bytes that disagree",
            "bad padding: the last 32 bytes are not all 32",
        ),
        (
            "a length field larger than the data",
            "the length field says 1000 bytes, but only 300 follow",
        ),
        (
            "sealed for another appid",
            "the message was encrypted for another app (wx00000000000000ff)",
        ),
        (
            "an EncodingAESKey of 42 characters",
            "the EncodingAESKey must be 43 characters, it is 42",
        ),
    ] {
        let stderr = reason(name);
        assert!(
            stderr.starts_with(&format!("wxa push-decrypt: {expected}")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn the_secrets_from_the_environment_or_a_file() {
    let v = vectors()
        .into_iter()
        .find(|v| text(v, "name") == "a JSON message in a JSON envelope")
        .unwrap();
    let body = body_file(&v, "env");
    let env = [
        ("WXA_PUSH_TOKEN", text(&v, "token")),
        ("WXA_PUSH_AES_KEY", text(&v, "encoding_aes_key")),
    ];
    let out = push_decrypt(&query(&v, &body), &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), text(&v, "message"));

    let token_file = std::env::temp_dir().join(format!("wxa-push-{}-token", std::process::id()));
    std::fs::write(&token_file, format!("{}\n", text(&v, "token"))).unwrap();
    let args = [&query(&v, &body)[..], &["--token-file", token_file.to_str().unwrap()]].concat();
    let out = push_decrypt(&args, &env[1..]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A wrong token from the environment fails as a wrong one on the command line does.
    let out = push_decrypt(&query(&v, &body), &[("WXA_PUSH_TOKEN", "wrong"), env[1]]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("msg_signature is not sha1"));

    let out = push_decrypt(&query(&v, &body), &env[1..]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--token is required (or --token-file PATH, or WXA_PUSH_TOKEN in the environment)")
    );
    let both = [&query(&v, &body)[..], &["--aes-key", text(&v, "encoding_aes_key")]].concat();
    let out = push_decrypt(&both, &env);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the EncodingAESKey is given more than once (--aes-key, WXA_PUSH_AES_KEY)")
    );
}
