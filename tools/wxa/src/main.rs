//! `wxa`: debug a live mini-program backend from a terminal. JSON on stdout; on failure the exact
//! reason on stderr and a non-zero exit. Every subcommand takes `--help`.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{Value, json};
use wxa_shared::card::nonce;
use wxa_shared::opendata;
use wxa_shared::pay::keys::{SigningKey, VerifyingKey, pem_to_der, serial_of_certificate};
use wxa_shared::pay::v2::{self, SignType};
use wxa_shared::pay::v3::{self, SignedHeaders};
use wxa_shared::secret::Secret;
use wxa_shared::session::now_unix;
use wxa_shared::wechat::WechatClient;

const USAGE: &str = "wxa: debug a live WeChat mini-program backend

Usage: wxa <command> [options]   (wxa <command> --help for its options)

Commands:
  decrypt            decrypt open data (encryptedData + iv) with a session_key, check its watermark
  verify-signature   check signature = sha1(rawData + session_key)
  pay-sign v3|v2     the wx.requestPayment parameters for a prepay_id
  verify-notify      verify a WeChat Pay v3 notification and print its decrypted resource
  jscode2session     exchange a wx.login code with the app secret from Secrets Manager";

struct Command {
    name: &'static str,
    usage: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
}

const COMMANDS: &[Command] = &[
    Command {
        name: "decrypt",
        usage: "wxa decrypt --appid A --session-key K --iv IV --data D [--max-age-secs N]\n\n  Decrypts open data and checks the watermark: appid must be A, and the data at most N\n  seconds old (N = 0: no freshness check; default 0).",
        required: &["appid", "session-key", "iv", "data"],
        optional: &["max-age-secs"],
    },
    Command {
        name: "verify-signature",
        usage: "wxa verify-signature --session-key K --raw-data R --signature S\n\n  Checks S = hex(sha1(R + K)), as getUserInfo signs rawData.",
        required: &["session-key", "raw-data", "signature"],
        optional: &[],
    },
    Command {
        name: "pay-sign v3",
        usage: "wxa pay-sign v3 --appid A --prepay-id P --private-key FILE [--timestamp T] [--nonce N]\n\n  paySign = RSA-SHA256 over appId\\ntimeStamp\\nnonceStr\\npackage\\n with the merchant key (PKCS#8 PEM).",
        required: &["appid", "prepay-id", "private-key"],
        optional: &["timestamp", "nonce"],
    },
    Command {
        name: "pay-sign v2",
        usage: "wxa pay-sign v2 --appid A --prepay-id P --key K --sign-type MD5|HMAC-SHA256 [--timestamp T] [--nonce N]\n\n  paySign over appId, nonceStr, package, signType, timeStamp with the APIv2 key.",
        required: &["appid", "prepay-id", "key", "sign-type"],
        optional: &["timestamp", "nonce"],
    },
    Command {
        name: "verify-notify",
        usage: "wxa verify-notify --apiv3-key K (--platform-cert FILE | --public-key FILE --public-key-id ID)\n                  --headers FILE --body FILE [--now UNIX]\n\n  Verifies a v3 notification (headers: a JSON object of the request headers; body: the raw\n  body) and prints the decrypted resource.",
        required: &["apiv3-key", "headers", "body"],
        optional: &["platform-cert", "public-key", "public-key-id", "now"],
    },
    Command {
        name: "jscode2session",
        usage: "wxa jscode2session --appid A --secret-id S --code C [--api-base URL]\n\n  Reads {\"app_secret\"} from Secrets Manager (the usual AWS environment) and exchanges the code.\n  Prints openid and unionid; the session_key stays hidden.",
        required: &["appid", "secret-id", "code"],
        optional: &["api-base"],
    },
];

/// Parses `--name value` pairs, refusing unknown and missing options.
fn parse(command: &Command, args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut options = HashMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        if !command.required.contains(&name) && !command.optional.contains(&name) {
            return Err(format!("unknown option --{name}"));
        }
        let value = rest.next().ok_or_else(|| format!("--{name} needs a value"))?;
        options.insert(name.to_owned(), value.clone());
    }
    for name in command.required {
        if !options.contains_key(*name) {
            return Err(format!("--{name} is required"));
        }
    }
    Ok(options)
}

fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn number(options: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    options
        .get(name)
        .map(|v| v.parse::<u64>().map_err(|_| format!("--{name} must be a whole number")))
        .transpose()
}

fn decrypt(o: &HashMap<String, String>) -> Result<Value, String> {
    let max_age = number(o, "max-age-secs")?.filter(|&n| n > 0);
    let data = opendata::open(
        &Secret::new(&o["session-key"]),
        &o["data"],
        &o["iv"],
        &o["appid"],
        max_age,
        now_unix(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Value::Object(data))
}

fn verify_signature(o: &HashMap<String, String>) -> Result<Value, String> {
    if opendata::verify_signature(&o["raw-data"], &Secret::new(&o["session-key"]), &o["signature"]) {
        Ok(json!({ "valid": true }))
    } else {
        Err("the signature is not sha1(rawData + session_key)".into())
    }
}

fn request_payment(o: &HashMap<String, String>) -> Result<(String, String, String), String> {
    let timestamp = number(o, "timestamp")?.unwrap_or_else(now_unix).to_string();
    let nonce = o.get("nonce").cloned().unwrap_or_else(nonce);
    Ok((timestamp, nonce, format!("prepay_id={}", o["prepay-id"])))
}

fn pay_sign_v3(o: &HashMap<String, String>) -> Result<Value, String> {
    let pem = read_file(&o["private-key"])?;
    let key = SigningKey::from_pem(&pem).ok_or("--private-key is not a PKCS#8 RSA private key PEM")?;
    let (time_stamp, nonce_str, package) = request_payment(o)?;
    let pay_sign = v3::pay_sign(&key, &o["appid"], &time_stamp, &nonce_str, &package);
    Ok(
        json!({"timeStamp": time_stamp, "nonceStr": nonce_str, "package": package, "signType": "RSA", "paySign": pay_sign}),
    )
}

fn pay_sign_v2(o: &HashMap<String, String>) -> Result<Value, String> {
    let sign_type = SignType::parse(&o["sign-type"])
        .filter(|_| !o["sign-type"].is_empty())
        .ok_or("--sign-type must be MD5 or HMAC-SHA256")?;
    let (time_stamp, nonce_str, package) = request_payment(o)?;
    let pay_sign = v2::pay_sign(
        &Secret::new(&o["key"]),
        sign_type,
        &o["appid"],
        &time_stamp,
        &nonce_str,
        &package,
    );
    Ok(
        json!({"timeStamp": time_stamp, "nonceStr": nonce_str, "package": package, "signType": sign_type.as_str(), "paySign": pay_sign}),
    )
}

fn verify_notify(o: &HashMap<String, String>) -> Result<Value, String> {
    let (id, key) = match (o.get("platform-cert"), o.get("public-key"), o.get("public-key-id")) {
        (Some(cert), None, None) => {
            let pem = read_file(cert)?;
            let der = pem_to_der(&pem, "CERTIFICATE").ok_or("--platform-cert is not a certificate PEM")?;
            let serial = serial_of_certificate(&der).ok_or("--platform-cert has no readable serial")?;
            (
                serial,
                VerifyingKey::from_pem(&pem).ok_or("--platform-cert has no readable public key")?,
            )
        }
        (None, Some(file), Some(id)) => (
            id.clone(),
            VerifyingKey::from_pem(&read_file(file)?).ok_or("--public-key is not a BEGIN PUBLIC KEY PEM")?,
        ),
        _ => return Err("give --platform-cert FILE, or --public-key FILE with --public-key-id ID".into()),
    };
    let headers: Value =
        serde_json::from_str(&read_file(&o["headers"])?).map_err(|e| format!("--headers is not a JSON object: {e}"))?;
    let header = |name: &str| {
        headers
            .as_object()
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
    };
    let body = std::fs::read(&o["body"]).map_err(|e| format!("cannot read {}: {e}", o["body"]))?;
    let signed = SignedHeaders {
        timestamp: header("Wechatpay-Timestamp"),
        nonce: header("Wechatpay-Nonce"),
        signature: header("Wechatpay-Signature"),
        serial: header("Wechatpay-Serial"),
    };
    let now = number(o, "now")?.unwrap_or_else(now_unix);
    v3::verify_signed(&signed, &body, [(id.as_str(), &key)], now).map_err(|e| e.to_string())?;
    let envelope: Value = serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let r = &envelope["resource"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let plain = v3::decrypt_resource(
        &Secret::new(&o["apiv3-key"]),
        &text(&r["nonce"]),
        &text(&r["associated_data"]),
        &text(&r["ciphertext"]),
    )
    .ok_or("the resource does not decrypt with this APIv3 key")?;
    serde_json::from_slice(&plain).map_err(|e| format!("the resource is not JSON: {e}"))
}

async fn jscode2session(o: &HashMap<String, String>) -> Result<Value, String> {
    // An operator's machine: its own CA store (a corporate proxy's CA included).
    let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::System);
    let sdk = wxa_shared::aws::sdk_config_from_env(&tls).await;
    let secrets = wxa_shared::secrets::SecretCache::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        &o["secret-id"],
        std::time::Duration::ZERO,
    );
    let app = secrets.get().await.map_err(|e| e.to_string())?;
    let base = o
        .get("api-base")
        .map(String::as_str)
        .unwrap_or(wxa_shared::config::DEFAULT_WECHAT_API_BASE);
    let http = wxa_shared::wechat::http_client(&tls, std::time::Duration::from_secs(10));
    let client = WechatClient::new(base, &o["appid"], http);
    let session = client
        .jscode2session(&app.app_secret, &o["code"])
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!({ "openid": session.openid, "unionid": session.unionid, "session_key": "***" }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, rest) = match args.first().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return if args.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Some("pay-sign") => match args.get(1).map(String::as_str) {
            Some("v3") => ("pay-sign v3", &args[2..]),
            Some("v2") => ("pay-sign v2", &args[2..]),
            _ => {
                eprintln!("wxa pay-sign: give v3 or v2 (wxa pay-sign v3 --help)");
                return ExitCode::FAILURE;
            }
        },
        Some(other) => (other, &args[1..]),
    };
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("wxa: unknown command {name:?}\n\n{USAGE}");
        return ExitCode::FAILURE;
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", command.usage);
        return ExitCode::SUCCESS;
    }
    let options = match parse(command, rest) {
        Ok(options) => options,
        Err(reason) => {
            eprintln!("wxa {name}: {reason}\n\n{}", command.usage);
            return ExitCode::FAILURE;
        }
    };
    let result = match name {
        "decrypt" => decrypt(&options),
        "verify-signature" => verify_signature(&options),
        "pay-sign v3" => pay_sign_v3(&options),
        "pay-sign v2" => pay_sign_v2(&options),
        "verify-notify" => verify_notify(&options),
        _ => jscode2session(&options).await,
    };
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("wxa {name}: {reason}");
            ExitCode::FAILURE
        }
    }
}
