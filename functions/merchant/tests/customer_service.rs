//! End to end on moto server and the simulator: a user writes to the customer service, WeChat
//! pushes it to `wechat-push`, which records it (and may hand it to the console's agents); the
//! back office reads the conversation and replies through `merchant`, within WeChat's window.

use base64::Engine;
use serde_json::{Value, json};
use testkit::Stack;

fn code(error: &Value) -> &str {
    error["code"].as_str().unwrap_or_default()
}

/// The user `openid` writes `text` (or enters the chat, `text` None); the simulator's answer.
async fn write(stack: &Stack, openid: &str, text: Option<&str>) -> Value {
    let body = match text {
        Some(text) => json!({"openid": openid, "msgtype": "text", "content": text}),
        None => json!({"openid": openid, "msgtype": "enter", "session_from": "order-page"}),
    };
    stack.sim_post("/__sim/customer-service/write", body).await
}

/// The conversation as WeChat's side saw it.
async fn sim_conversation(stack: &Stack, openid: &str) -> Value {
    let url = format!(
        "{}/__sim/customer-service/conversation?openid={openid}",
        stack.sim.base_url()
    );
    stack.http.get(url).send().await.unwrap().json().await.unwrap()
}

fn text_reply(openid: &str, content: &str) -> Value {
    json!({"op": "send_customer_message", "openid": openid, "msgtype": "text", "text": {"content": content}})
}

async fn conversation(stack: &Stack, openid: &str) -> Value {
    stack
        .merchant(json!({"op": "get_conversation", "openid": openid}))
        .await
        .unwrap()
}

/// The first delivery's answer to a push.
fn answered(pushed: &Value) -> (u64, String) {
    let delivery = &pushed["deliveries"][0];
    (
        delivery["status"].as_u64().unwrap_or_default(),
        delivery["body"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_users_message_is_recorded_and_answered_within_the_window() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    assert_eq!(conversation(&stack, "o_alice").await["messages"], json!([]));

    let pushed = write(&stack, "o_alice", Some("Where is my order <#42>?")).await;
    assert_eq!(answered(&pushed), (200, "success".to_owned()), "{pushed}");
    assert_eq!(pushed["handed_over"], false);
    let recorded = conversation(&stack, "o_alice").await;
    assert_eq!(recorded["messages"].as_array().unwrap().len(), 1, "{recorded}");
    let first = &recorded["messages"][0];
    assert_eq!(
        (first["from"].as_str(), first["msgtype"].as_str()),
        (Some("user"), Some("text"))
    );
    assert_eq!(first["content"], "Where is my order <#42>?");
    assert_eq!(recorded["window"]["left"], 5);
    assert_eq!(recorded["window"]["open"], true);
    assert_eq!(recorded["awaiting_reply"], true);

    let sent = stack
        .merchant(text_reply("o_alice", "It left the warehouse today."))
        .await
        .unwrap();
    assert_eq!(sent["window"]["left"], 4, "{sent}");
    let recorded = conversation(&stack, "o_alice").await;
    assert_eq!(recorded["awaiting_reply"], false);
    assert_eq!(recorded["messages"][1]["from"], "app");
    assert_eq!(recorded["messages"][1]["content"], "It left the warehouse today.");
    // WeChat delivered it to the user.
    let theirs = sim_conversation(&stack, "o_alice").await;
    let last = theirs["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["from"], "app", "{theirs}");
    assert_eq!(
        last["text"]["content"].as_str().or(last["content"].as_str()),
        Some("It left the warehouse today.")
    );
}

#[tokio::test]
async fn wechats_window_and_quota_are_answered_clearly_and_corrected_in_the_record() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "json").await;
    write(&stack, "o_bob", Some("hello")).await;
    for i in 0..5 {
        stack
            .merchant(text_reply("o_bob", &format!("reply {i}")))
            .await
            .unwrap();
    }
    let error = stack.merchant(text_reply("o_bob", "a sixth")).await.unwrap_err();
    assert_eq!(code(&error), "reply_limit_reached", "{error}");
    assert!(error["message"].as_str().unwrap().contains("45047"), "{error}");
    assert_eq!(conversation(&stack, "o_bob").await["window"]["left"], 0);

    // The user writes again: 5 more (quotas do not add up, they are renewed).
    write(&stack, "o_bob", Some("and?")).await;
    assert_eq!(conversation(&stack, "o_bob").await["window"]["left"], 5);

    // Two days later WeChat takes no reply at all.
    stack.sim_post("/__sim/time", json!({"advance_secs": 49 * 3600})).await;
    let error = stack.merchant(text_reply("o_bob", "late")).await.unwrap_err();
    assert_eq!(code(&error), "reply_window_closed", "{error}");
    assert!(error["message"].as_str().unwrap().contains("45015"), "{error}");
    let recorded = conversation(&stack, "o_bob").await;
    assert_eq!(
        (
            recorded["window"]["open"].as_bool(),
            recorded["window"]["left"].as_u64()
        ),
        (Some(false), Some(0))
    );
    // What reached the user: the 5 replies the first message allowed, none refused.
    let theirs = sim_conversation(&stack, "o_bob").await;
    let replies = theirs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "app")
        .count();
    assert_eq!(replies, 5, "{theirs}");
}

#[tokio::test]
async fn entering_the_chat_allows_two_replies_and_waits_for_nothing() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    let pushed = write(&stack, "o_carol", None).await;
    assert_eq!(answered(&pushed).0, 200, "{pushed}");
    let recorded = conversation(&stack, "o_carol").await;
    assert_eq!(recorded["messages"][0]["msgtype"], "enter");
    assert_eq!(recorded["messages"][0]["session_from"], "order-page");
    assert_eq!(recorded["window"]["left"], 2);
    assert_eq!(recorded["awaiting_reply"], false);
    stack.merchant(text_reply("o_carol", "Welcome!")).await.unwrap();
    stack.merchant(text_reply("o_carol", "How can we help?")).await.unwrap();
    let error = stack.merchant(text_reply("o_carol", "Hello?")).await.unwrap_err();
    assert_eq!(code(&error), "reply_limit_reached", "{error}");
}

#[tokio::test]
async fn duplicated_pushes_of_a_message_keep_it_once() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    let message = json!({"FromUserName": "o_dave", "MsgType": "text", "Content": "once", "MsgId": 7_654_321_u64});
    let pushed = stack
        .sim_post("/__sim/push/send", json!({"message": message, "copies": 5}))
        .await;
    assert_eq!(pushed["deliveries"].as_array().unwrap().len(), 5, "{pushed}");
    let recorded = conversation(&stack, "o_dave").await;
    assert_eq!(recorded["messages"].as_array().unwrap().len(), 1, "{recorded}");
}

/// A tiny PNG (a 1×1 image's signature and header are all WeChat looks at here).
fn png() -> String {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 13]);
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn an_image_reply_carries_an_uploaded_media_and_a_bad_one_is_refused_clearly() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    write(&stack, "o_erin", Some("a photo of the receipt, please")).await;
    let uploaded = stack
        .merchant(json!({"op": "upload_temp_media", "content_base64": png(), "filename": "receipt.png"}))
        .await
        .unwrap();
    let media_id = uploaded["media_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uploaded["expires_at"].as_u64().unwrap() - uploaded["created_at"].as_u64().unwrap(),
        3 * 24 * 3600
    );
    stack
        .merchant(json!({"op": "send_customer_message", "openid": "o_erin", "msgtype": "image", "image": {"media_id": media_id}}))
        .await
        .unwrap();
    let error = stack
        .merchant(json!({"op": "send_customer_message", "openid": "o_erin", "msgtype": "image", "image": {"media_id": "never_uploaded"}}))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_command", "{error}");
    assert!(error["message"].as_str().unwrap().contains("40007"), "{error}");
    // Not an image, or a reply that does not match its msgtype: refused before WeChat.
    let uploads = stack.sim_calls("media_upload").await;
    let error = stack
        .merchant(json!({"op": "upload_temp_media", "content_base64": "aGVsbG8="}))
        .await
        .unwrap_err();
    assert!(
        error["message"].as_str().unwrap().contains("PNG, JPEG or GIF"),
        "{error}"
    );
    assert_eq!(stack.sim_calls("media_upload").await, uploads);
    let sends = stack.sim_calls("custom_send").await;
    for bad in [
        json!({"msgtype": "image", "text": {"content": "x"}}),
        json!({"msgtype": "voice", "voice": {"media_id": "m"}}),
        json!({"msgtype": "link", "link": {"title": "t", "description": "", "url": "javascript:x", "thumb_url": "https://a/b"}}),
    ] {
        let mut command = bad.clone();
        command["op"] = json!("send_customer_message");
        command["openid"] = json!("o_erin");
        let error = stack.merchant(command).await.unwrap_err();
        assert_eq!(code(&error), "invalid_command", "{bad}: {error}");
    }
    assert_eq!(stack.sim_calls("custom_send").await, sends);
}

#[tokio::test]
async fn typing_is_shown_only_right_after_the_users_message() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    write(&stack, "o_finn", Some("hi")).await;
    let typing = json!({"op": "set_typing", "openid": "o_finn", "typing": true});
    assert_eq!(stack.merchant(typing.clone()).await.unwrap()["typing"], true);
    // Asking again for what is shown is not an error.
    assert_eq!(stack.merchant(typing.clone()).await.unwrap()["typing"], true);
    stack
        .merchant(json!({"op": "set_typing", "openid": "o_finn", "typing": false}))
        .await
        .unwrap();
    stack.sim_post("/__sim/time", json!({"advance_secs": 31})).await;
    let error = stack.merchant(typing).await.unwrap_err();
    assert_eq!(code(&error), "typing_needs_recent_message", "{error}");
}

#[tokio::test]
async fn handover_answers_transfer_to_users_messages_only_in_each_mode() {
    for (mode, format) in [("safe", "xml"), ("safe", "json"), ("plain", "xml"), ("compat", "json")] {
        let stack = Stack::start().await;
        stack
            .enable_push_with(mode, format, &[("CUSTOMER_SERVICE_HANDOVER", "console")])
            .await;
        // Entering the chat is an event: never handed over.
        let entered = write(&stack, "o_gina", None).await;
        assert_eq!(entered["handed_over"], false, "{mode}/{format}: {entered}");
        assert_eq!(answered(&entered).1, "success", "{mode}/{format}");
        let pushed = write(&stack, "o_gina", Some("I need a person")).await;
        assert_eq!(pushed["handed_over"], true, "{mode}/{format}: {pushed}");
        let (status, body) = answered(&pushed);
        assert_eq!(status, 200);
        if mode == "plain" {
            assert!(body.contains("transfer_customer_service"), "{body}");
        } else {
            // Sealed: nothing of the reply in clear.
            assert!(
                body.contains("Encrypt") && !body.contains("transfer_customer_service"),
                "{body}"
            );
        }
        let recorded = conversation(&stack, "o_gina").await;
        assert!(
            recorded["handed_over_at"].as_u64().is_some(),
            "{mode}/{format}: {recorded}"
        );
        assert_eq!(recorded["awaiting_reply"], false, "the agents have it");
        // While the agents hold it, WeChat gives them the user's messages, not us.
        let next = write(&stack, "o_gina", Some("hello?")).await;
        assert_eq!(next["to_agent"], true, "{mode}/{format}: {next}");
        assert_eq!(
            conversation(&stack, "o_gina").await["messages"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

#[tokio::test]
async fn replies_go_in_api_security_mode_when_it_is_on() {
    let stack = Stack::start().await;
    stack.enable_api_security().await;
    stack.enable_push("safe", "xml").await;
    write(&stack, "o_hana", Some("hi")).await;
    let url = format!("{}/__sim/api-security", stack.sim.base_url());
    let before: Value = stack.http.get(&url).send().await.unwrap().json().await.unwrap();
    stack.merchant(text_reply("o_hana", "hello in the mode")).await.unwrap();
    let after: Value = stack.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        after["verified"].as_u64().unwrap(),
        before["verified"].as_u64().unwrap() + 1,
        "{after}"
    );
    assert_eq!(after["refused"], before["refused"]);
}

#[tokio::test]
async fn the_operators_automatic_reply_greets_each_new_conversation_once() {
    let stack = Stack::start().await;
    let greeting = "您好，客服将尽快回复。";
    stack
        .enable_push_with("safe", "json", &[("CUSTOMER_SERVICE_AUTO_REPLY", greeting)])
        .await;
    // Entering opens the conversation: greeted.
    write(&stack, "o_ivan", None).await;
    // Writing within the open window: not greeted again; a repeat of a push neither.
    write(&stack, "o_ivan", Some("hello")).await;
    let message = json!({"FromUserName": "o_ivan", "MsgType": "text", "Content": "again", "MsgId": 11_u64});
    stack
        .sim_post("/__sim/push/send", json!({"message": message, "copies": 3}))
        .await;
    let theirs = sim_conversation(&stack, "o_ivan").await;
    let replies: Vec<&Value> = theirs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "app")
        .collect();
    assert_eq!(replies.len(), 1, "{theirs}");
    assert_eq!(replies[0]["content"], greeting);
    let recorded = conversation(&stack, "o_ivan").await;
    let ours: Vec<&Value> = recorded["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "app")
        .collect();
    assert_eq!((ours.len(), ours[0]["auto"].as_bool()), (1, Some(true)), "{recorded}");
    // One of entering's 2 replies used, then the message's 5 (not cumulative): 5 left.
    assert_eq!(recorded["window"]["left"], 5);
}

#[tokio::test]
async fn without_an_automatic_reply_the_push_receiver_has_no_wechat_api() {
    let stack = Stack::start().await;
    let state = stack.state_for(&wxa_shared::handlers::wechat_push::FUNCTION);
    assert!(state.wechat().is_err(), "no AppSecret, no token: a push secret only");
    assert!(state.config.app_secret_id.is_none(), "the AppSecret is not even named");
    let state = stack.state_with(
        &wxa_shared::handlers::wechat_push::FUNCTION,
        &[("CUSTOMER_SERVICE_AUTO_REPLY", "hi")],
    );
    assert!(state.wechat().is_ok());
}
