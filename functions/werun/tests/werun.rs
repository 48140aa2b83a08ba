//! End to end: `POST /werun` with `events/werun.json` and the simulator's encrypted payloads.

use serde_json::{Value, json};
use testkit::{DOC_OPENID, DOC_SESSION_KEY, Stack, authed_event, check_open_data_contract, read};
use wxa_shared::handlers::werun;

#[tokio::test]
async fn the_event_file_decrypts_for_its_user() {
    // The event was sealed under the docs' sample key, with a fixed watermark: no age limit here.
    let stack = Stack::start_with(|c| c.watermark_max_age_secs = None).await;
    let token = stack
        .log_in_as(json!({"openid": DOC_OPENID, "session_key": DOC_SESSION_KEY}))
        .await;
    let (status, body) = read(
        &werun::FUNCTION
            .handle(&stack.state, authed_event("werun.json", &token, None))
            .await,
    );
    assert_eq!(status, 200, "{body}");
    let days = body["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[0]["date"], "2026-10-27");
    assert_eq!(days[29]["date"], "2026-11-25");
    assert_eq!(days[29]["timestamp"], 1_795_536_000);
    assert_eq!(body["total"], 246_051);
}

#[tokio::test]
async fn steps_are_dated_in_china_time_sorted_and_totalled_with_one_dynamodb_read() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    // Unsorted, as nothing promises order; 2026-11-24 16:00 UTC is 2026-11-25 00:00 in China.
    let steps = json!([
        {"timestamp": 1_795_536_000u64, "step": 100},
        {"timestamp": 1_795_536_000u64 - 2 * 86_400, "step": 300},
        {"timestamp": 1_795_536_000u64 - 86_400, "step": 200},
    ]);
    let (data, iv) = stack.seal("o_alice", json!({"stepInfoList": steps})).await;
    stack.aws_calls.take();
    let before = stack.sim_calls("checksession").await + stack.sim_calls("stable_token").await;
    let request = authed_event("werun.json", &token, Some(&json!({"encryptedData": data, "iv": iv})));
    let (status, body) = read(&werun::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"days": [
            {"date": "2026-11-23", "timestamp": 1_795_536_000u64 - 2 * 86_400, "step": 300},
            {"date": "2026-11-24", "timestamp": 1_795_536_000u64 - 86_400, "step": 200},
            {"date": "2026-11-25", "timestamp": 1_795_536_000u64, "step": 100},
        ], "total": 600})
    );
    assert_eq!(
        stack.aws_calls.take(),
        ["DynamoDB.GetItem"],
        "one read, no Secrets Manager call"
    );
    let after = stack.sim_calls("checksession").await + stack.sim_calls("stable_token").await;
    assert_eq!(after, before, "no WeChat call for data that decrypts");
}

#[tokio::test]
async fn data_without_steps_or_with_absurd_steps_is_refused_as_any_bad_data() {
    let stack = Stack::start().await;
    let huge = u64::MAX / 2 + 1;
    for payload in [
        json!({"openGId": "g"}),
        json!({"stepInfoList": [{"timestamp": "x", "step": 1}]}),
        // Two counts whose sum overflows 64 bits: a clear 400, never a panic or a wrapped total.
        json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": huge}, {"timestamp": 1_795_449_600u64, "step": huge}]}),
        // A timestamp no calendar reaches: no date arithmetic overflow.
        json!({"stepInfoList": [{"timestamp": u64::MAX, "step": 1}]}),
    ] {
        // Each failure costs the session one of its budget: a fresh login per case.
        let token = stack.log_in("o_alice").await;
        let (data, iv) = stack.seal("o_alice", payload.clone()).await;
        let request = authed_event("werun.json", &token, Some(&json!({"encryptedData": data, "iv": iv})));
        let (status, body): (u16, Value) = read(&werun::FUNCTION.handle(&stack.state, request).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_open_data")),
            "{payload}: {body}"
        );
    }
}

#[tokio::test]
async fn the_open_data_contract_holds() {
    check_open_data_contract(
        &werun::FUNCTION,
        "werun.json",
        json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 1}]}),
        |data, iv, _| json!({"encryptedData": data, "iv": iv}),
    )
    .await;
}
