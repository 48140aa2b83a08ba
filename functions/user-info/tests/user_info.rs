//! End to end: `POST /user-info` with `events/user-info.json` (the sample from WeChat's docs) and
//! the simulator's payloads.

use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use testkit::{DOC_OPENID, DOC_SESSION_KEY, Stack, authed_event, check_open_data_contract, read};
use wxa_shared::handlers::user_info;

fn sign(raw: &str, key: &str) -> String {
    hex::encode(Sha1::digest(format!("{raw}{key}").as_bytes()))
}

fn profile(openid: &str) -> Value {
    json!({"openId": openid, "nickName": "Alice", "gender": 2, "language": "zh_CN", "city": "Shenzhen",
           "province": "Guangdong", "country": "CN", "avatarUrl": "https://thirdwx.qlogo.cn/a/132"})
}

fn body(data: &str, iv: &str, key: &str) -> Value {
    let raw = r#"{"nickName":"Alice","gender":2}"#;
    json!({"rawData": raw, "signature": sign(raw, key), "encryptedData": data, "iv": iv})
}

#[tokio::test]
async fn the_published_sample_decrypts_for_its_user() {
    let stack = Stack::start_with(|c| c.watermark_max_age_secs = None).await;
    let token = stack
        .log_in_as(json!({"openid": DOC_OPENID, "session_key": DOC_SESSION_KEY}))
        .await;
    let (status, body) = read(
        &user_info::FUNCTION
            .handle(&stack.state, authed_event("user-info.json", &token, None))
            .await,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nickName"], "Band");
    assert_eq!(body["openId"], DOC_OPENID);
    assert_eq!(body["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
    assert!(body.get("watermark").is_none());
}

#[tokio::test]
async fn a_signed_profile_is_returned_with_one_dynamodb_read() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let key = stack.sim_session_key("o_alice").await;
    let (data, iv) = stack.seal("o_alice", profile("o_alice")).await;
    stack.aws_calls.take();
    let (status, got) = read(
        &user_info::FUNCTION
            .handle(
                &stack.state,
                authed_event("user-info.json", &token, Some(&body(&data, &iv, &key))),
            )
            .await,
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, profile("o_alice"));
    assert_eq!(stack.aws_calls.take(), ["DynamoDB.GetItem"]);
    assert_eq!(stack.sim_calls("checksession").await, 0);
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (data, iv) = stack.seal("o_alice", profile("o_alice")).await;
    let mut forged = body(&data, &iv, "not-the-key");
    forged["rawData"] = json!(r#"{"nickName":"Mallory"}"#);
    let (status, got) = read(
        &user_info::FUNCTION
            .handle(&stack.state, authed_event("user-info.json", &token, Some(&forged)))
            .await,
    );
    // The one open-data answer: a signature check is no more an oracle than a decryption.
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (400, Some("invalid_open_data")),
        "{got}"
    );
    assert_eq!(
        stack.sim_calls("checksession").await,
        1,
        "the same remote calls as any failure"
    );
}

#[tokio::test]
async fn another_users_data_is_refused() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let key = stack.sim_session_key("o_alice").await;
    // Bob's profile sealed under Alice's key: decrypts, but is not hers.
    let (data, iv) = stack.seal("o_alice", profile("o_bob")).await;
    let (status, got) = read(
        &user_info::FUNCTION
            .handle(
                &stack.state,
                authed_event("user-info.json", &token, Some(&body(&data, &iv, &key))),
            )
            .await,
    );
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (400, Some("invalid_open_data")),
        "{got}"
    );
    assert!(!got.to_string().contains("o_bob"), "{got}");
}

#[tokio::test]
async fn the_open_data_contract_holds() {
    check_open_data_contract(&user_info::FUNCTION, "user-info.json", profile("o_alice"), body).await;
}
