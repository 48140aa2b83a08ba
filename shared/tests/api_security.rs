//! WeChat's API security mode end to end: our requests and WeChat's answers checked against an
//! independent implementation (Python `cryptography`, `api_security_vectors.py`), the journey with
//! the mode enforced by the simulator, every refusal WeChat makes of our requests and every answer
//! we refuse to use, and WeChat's key rotation.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use testkit::{APP_ID, Stack, authed_event, read};
use wxa_shared::api_security::{ApiSecurity, ApiSecurityDocument};
use wxa_shared::clock::now_unix;
use wxa_shared::handlers::{content, decrypt_phone};

fn python(command: &str, input: Option<&Value>) -> Value {
    let script = testkit::workspace_root().join("shared/tests/api_security_vectors.py");
    let mut child = Command::new(testkit::venv_bin("python"))
        .arg(script)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "api_security_vectors.py {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from python")
}

fn parse(document: &Value) -> ApiSecurity {
    let doc: ApiSecurityDocument = serde_json::from_value(document.clone()).expect("the document's shape");
    ApiSecurity::from_document(&doc).expect("the keys parse")
}

#[test]
fn requests_and_answers_agree_with_an_independent_implementation() {
    let keys = python("keys", None);
    // The console's private key is PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    assert!(
        keys["document"]["private_key"]
            .as_str()
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let ours = parse(&keys["document"]);
    let url = "https://api.weixin.qq.com/wxa/business/getuserphonenumber";
    let ts = now_unix();

    // Ours sealed, opened by Python (signature verified first).
    let sealed = ours.seal(url, APP_ID, ts, &json!({"code": "phone-code-1"}));
    let header = |name: &str| {
        sealed
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is sent"))
    };
    assert_eq!(header("Wechatmp-Appid"), APP_ID);
    assert_eq!(header("Wechatmp-TimeStamp"), ts.to_string());
    assert_eq!(
        header("Wechatmp-Serial"),
        keys["document"]["private_key_sn"].as_str().unwrap()
    );
    let plain = python(
        "open-request",
        Some(
            &json!({"keys": keys, "url": url, "appid": APP_ID, "timestamp": ts.to_string(),
            "body": sealed.body, "signature": header("Wechatmp-Signature")}),
        ),
    );
    assert_eq!(plain["code"], "phone-code-1");
    assert_eq!(plain["_appid"], APP_ID);
    assert_eq!(plain["_timestamp"], ts);
    assert!(plain["_n"].as_str().is_some_and(|n| n.len() >= 16), "{plain}");
    assert!(plain.get("access_token").is_none());

    // Python's answer sealed and signed as WeChat's, opened by ours.
    let answer = python(
        "seal-answer",
        Some(
            &json!({"keys": keys, "url": url, "appid": APP_ID, "timestamp": ts.to_string(),
            "plaintext": r#"{"errcode":0,"phone_info":{"phoneNumber":"13800138000"}}"#}),
        ),
    );
    let sn = keys["document"]["platform_certificates"][0]["sn"]
        .as_str()
        .unwrap()
        .to_owned();
    let signature = answer["signature"].as_str().unwrap().to_owned();
    let ts_text = ts.to_string();
    let headers = [
        ("Wechatmp-Appid", APP_ID),
        ("Wechatmp-TimeStamp", ts_text.as_str()),
        ("Wechatmp-Serial", sn.as_str()),
        ("Wechatmp-Signature", signature.as_str()),
    ];
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let body = answer["body"].as_str().unwrap().as_bytes();
    let opened = ours
        .open(url, APP_ID, ts, header, body)
        .expect("Python's answer verifies and opens");
    assert_eq!(opened, br#"{"errcode":0,"phone_info":{"phoneNumber":"13800138000"}}"#);
    // The same answer for another API (urlpath in the signed string and the AAD) is refused.
    let other = "https://api.weixin.qq.com/wxa/getuserriskrank";
    assert!(ours.open(other, APP_ID, ts, header, body).is_err());
}

async fn phone_code(stack: &Stack) -> String {
    let minted = stack
        .sim_post(
            "/__sim/phone-code",
            json!({"openid": "o_alice", "phoneNumber": "13800138000"}),
        )
        .await;
    minted["code"].as_str().unwrap().to_owned()
}

/// `POST /phone {code}` in decrypt-phone's own state.
async fn ask_phone(stack: &Stack, token: &str) -> (u16, Value) {
    let code = phone_code(stack).await;
    let state = stack.state_for(&decrypt_phone::FUNCTION);
    let request = authed_event("decrypt-phone.json", token, Some(&json!({"code": code})));
    read(&decrypt_phone::FUNCTION.handle(&state, request).await)
}

async fn mode_counts(stack: &Stack) -> (u64, u64) {
    let url = format!("{}/__sim/api-security", stack.sim.base_url());
    let counts: Value = stack.http.get(url).send().await.unwrap().json().await.unwrap();
    (
        counts["verified"].as_u64().unwrap(),
        counts["refused"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn the_journey_runs_in_api_security_mode() {
    let stack = Stack::start().await;
    stack.enable_api_security().await;
    // Login is plain (jscode2session carries the AppSecret, which the mode does not cover).
    let token = stack.log_in("o_alice").await;
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(
        (status, body["phoneNumber"].as_str()),
        (200, Some("13800138000")),
        "{body}"
    );
    let state = stack.state_for(&content::FUNCTION);
    for (text, suggest) in [("一起去喝茶吗？", "pass"), ("buy sim-porn here", "risky")] {
        let request = authed_event(
            "content-check.json",
            &token,
            Some(&json!({"content": text, "scene": 2})),
        );
        let (status, body) = read(&content::FUNCTION.handle(&state, request).await);
        assert_eq!((status, body["suggest"].as_str()), (200, Some(suggest)), "{body}");
    }
    assert_eq!(
        mode_counts(&stack).await,
        (3, 0),
        "three calls in the mode, none refused"
    );
    // A business error comes back in the mode too, and reads as itself.
    let request = authed_event("decrypt-phone.json", &token, Some(&json!({"code": "no-such-code"})));
    let (status, body) = read(
        &decrypt_phone::FUNCTION
            .handle(&stack.state_for(&decrypt_phone::FUNCTION), request)
            .await,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone_code")),
        "{body}"
    );
    assert_eq!(mode_counts(&stack).await, (4, 0));
}

#[tokio::test]
async fn wechat_refuses_calls_that_are_not_in_the_mode_and_the_operator_is_told() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    // The console's mode is on, the app secret has no keys: the call goes plain and is refused.
    stack.sim_post("/__sim/api-security", json!({})).await;
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_credentials_rejected")),
        "{body}"
    );
    // Keys that are not the console's (another key pair under the right SN): signature refused.
    let other = python("keys", None);
    stack
        .enable_api_security_with(|doc| doc["private_key"] = other["document"]["private_key"].clone())
        .await;
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_credentials_rejected")),
        "{body}"
    );
    // The wrong symmetric key: the signature verifies, the body does not decrypt.
    stack
        .enable_api_security_with(|doc| doc["aes_key"] = other["document"]["aes_key"].clone())
        .await;
    let (status, _) = ask_phone(&stack, &token).await;
    assert_eq!(status, 502);
    // The wrong SN for the private key.
    stack
        .enable_api_security_with(|doc| doc["private_key_sn"] = json!("not-the-console-sn"))
        .await;
    let (status, _) = ask_phone(&stack, &token).await;
    assert_eq!(status, 502);
    assert_eq!(
        mode_counts(&stack).await,
        (0, 4),
        "every call refused before the API ran"
    );
    assert_eq!(
        stack.sim_calls("getuserphonenumber").await,
        0,
        "no phone code was spent"
    );
}

#[tokio::test]
async fn an_answer_that_fails_verification_is_never_used() {
    let stack = Stack::start().await;
    stack.enable_api_security().await;
    let token = stack.log_in("o_alice").await;
    for fault in ["bad_signature", "stale_timestamp", "wrong_serial"] {
        stack
            .sim_post("/__sim/api-security/fault", json!({"answer": fault}))
            .await;
        let (status, body) = ask_phone(&stack, &token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("wechat_unavailable")),
            "{fault}: {body}"
        );
        assert!(
            !body.to_string().contains("13800138000"),
            "{fault}: nothing of the answer is used"
        );
    }
    // The answer was WeChat's in each case: the API ran (and the code was spent).
    assert_eq!(mode_counts(&stack).await, (3, 0));
    let (status, _) = ask_phone(&stack, &token).await;
    assert_eq!(status, 200, "the next call is fine");
}

#[tokio::test]
async fn answers_stay_verified_through_wechats_key_rotation() {
    let stack = Stack::start().await;
    let first = stack.enable_api_security().await;
    let token = stack.log_in("o_alice").await;
    // WeChat signs with a new key and, in the -Deprecated pair, the old one: a server that holds
    // only the old certificate still verifies.
    let rotated = stack.sim_post("/__sim/api-security/rotate", json!({})).await;
    assert_eq!(rotated["platform_certificates"].as_array().unwrap().len(), 2);
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(status, 200, "old certificate, deprecated pair: {body}");
    // The operator adds the new certificate: verified by the current pair.
    stack
        .write_app_secret(json!({"app_secret": testkit::APP_SECRET, "api_security": rotated}))
        .await;
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(status, 200, "both certificates: {body}");
    // WeChat rotates again: the first key is gone, and a server that still holds only it cannot
    // verify anything.
    stack.sim_post("/__sim/api-security/rotate", json!({})).await;
    stack
        .write_app_secret(json!({"app_secret": testkit::APP_SECRET, "api_security": first}))
        .await;
    let (status, body) = ask_phone(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_unavailable")),
        "{body}"
    );
}

#[tokio::test]
async fn keys_that_do_not_parse_are_a_misconfiguration_answered_without_the_value() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .enable_api_security_with(|doc| doc["aes_key"] = json!("c2hvcnQ="))
        .await;
    let (status, body) = ask_phone(&stack, &token).await;
    // The app secret does not parse: as any malformed secret, an operator's fault.
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "server_misconfigured");
    assert!(!body.to_string().contains("c2hvcnQ"));
}

#[test]
fn the_apis_called_in_the_mode_are_the_simulators_and_the_readmes() {
    let mut ours = wxa_shared::api_security::SUPPORTED_APIS.to_vec();
    let mut sims = wechat_sim::api_security::SUPPORTED.to_vec();
    ours.sort();
    sims.sort();
    assert_eq!(
        ours, sims,
        "an API the simulator enforces the mode on is called in it, and only those"
    );
    let readme = std::fs::read_to_string(testkit::workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## WeChat's API security mode\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has the section");
    let listed = section
        .split("The APIs called in the mode:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .nth(1)
        .unwrap();
    for api in &ours {
        assert!(listed.contains(&format!("`{api}`")), "README lists {api}");
    }
    assert_eq!(
        listed.matches("`/").count(),
        ours.len(),
        "README lists no other API: {listed}"
    );
}
