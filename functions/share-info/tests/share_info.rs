//! End to end: `POST /share-info` with `events/share-info.json` and the simulator's payloads.

use serde_json::json;
use testkit::{DOC_OPENID, DOC_SESSION_KEY, Stack, authed_event, check_open_data_contract, read};
use wxa_shared::handlers::share_info;

#[tokio::test]
async fn the_event_file_decrypts_for_its_user() {
    let stack = Stack::start_with(|c| c.watermark_max_age_secs = None).await;
    let token = stack
        .log_in_as(json!({"openid": DOC_OPENID, "session_key": DOC_SESSION_KEY}))
        .await;
    let response = share_info::FUNCTION
        .handle(&stack.state, authed_event("share-info.json", &token, None))
        .await;
    assert_eq!(
        read(&response),
        (200, json!({"openGId": "GA0vb5B2I0GyDjxjz9KhDEVk2BgE"}))
    );
}

#[tokio::test]
async fn a_fresh_share_ticket_gives_the_group_id_with_one_dynamodb_read() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G_group_1"})).await;
    stack.aws_calls.take();
    let request = authed_event(
        "share-info.json",
        &token,
        Some(&json!({"encryptedData": data, "iv": iv})),
    );
    assert_eq!(
        read(&share_info::FUNCTION.handle(&stack.state, request).await),
        (200, json!({"openGId": "G_group_1"}))
    );
    assert_eq!(stack.aws_calls.take(), ["DynamoDB.GetItem"]);
    // A '+' turned into a space by form encoding still works.
    let (data, iv) = loop {
        let (data, iv) = stack.seal("o_alice", json!({"openGId": "G_group_1"})).await;
        if data.contains('+') || iv.contains('+') {
            break (data.replace('+', " "), iv.replace('+', " "));
        }
    };
    let request = authed_event(
        "share-info.json",
        &token,
        Some(&json!({"encryptedData": data, "iv": iv})),
    );
    assert_eq!(read(&share_info::FUNCTION.handle(&stack.state, request).await).0, 200);
}

#[tokio::test]
async fn the_open_data_contract_holds() {
    check_open_data_contract(
        &share_info::FUNCTION,
        "share-info.json",
        json!({"openGId": "G1"}),
        |data, iv, _| json!({"encryptedData": data, "iv": iv}),
    )
    .await;
}
