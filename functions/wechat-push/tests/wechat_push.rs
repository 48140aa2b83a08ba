//! End to end on moto server and the simulator: WeChat pushes to `wechat-push` over HTTP in every
//! mode and format, as the console would be set; what each push changes is read back from the
//! tables the other functions read.

use serde_json::{Value, json};
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::content;

const TEMPLATE: &str = "tpl_order_paid";

/// The simulator's answer to a push: each delivery's `{status, body, attempts}`.
fn deliveries(pushed: &Value) -> Vec<Value> {
    pushed["deliveries"].as_array().cloned().unwrap_or_default()
}

async fn remaining(stack: &Stack, openid: &str, template_id: &str) -> Option<(String, u64)> {
    let record = stack
        .state
        .messages()
        .unwrap()
        .subscription(openid, template_id)
        .await
        .unwrap()?;
    Some((record.status, record.remaining))
}

async fn popup(stack: &Stack, openid: &str, accept: bool) -> Value {
    stack
        .sim_post(
            "/__sim/subscribe/popup",
            json!({"openid": openid, "template_ids": [TEMPLATE], "accept": accept}),
        )
        .await
}

#[tokio::test]
async fn the_consoles_url_check_is_answered_only_when_signed() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    let checked = stack.sim_post("/__sim/push/verify-url", json!({})).await;
    assert_eq!(checked["echoed"], true, "{checked}");
    let forged = stack
        .sim_post("/__sim/push/verify-url", json!({"tamper": "signature"}))
        .await;
    assert_eq!(
        (forged["status"].as_u64(), &forged["echoed"]),
        (Some(401), &json!(false)),
        "{forged}"
    );
    let body: Value = serde_json::from_str(forged["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_push");
}

#[tokio::test]
async fn a_popup_is_recorded_in_every_mode_and_format() {
    for (mode, format) in [
        ("safe", "xml"),
        ("safe", "json"),
        ("compat", "xml"),
        ("compat", "json"),
        ("plain", "xml"),
        ("plain", "json"),
    ] {
        let stack = Stack::start().await;
        // Plain mode changes state only when the operator opts in (see the test below).
        let opt_in: &[(&str, &str)] = if mode == "plain" {
            &[("PUSH_PLAIN_EFFECTS", "true")]
        } else {
            &[]
        };
        stack.enable_push_with(mode, format, opt_in).await;
        stack.log_in("o_alice").await;
        let pushed = popup(&stack, "o_alice", true).await;
        let delivered = deliveries(&pushed["push"]);
        assert_eq!(delivered.len(), 1, "{mode}/{format}: {pushed}");
        assert_eq!(
            (delivered[0]["status"].as_u64(), delivered[0]["body"].as_str()),
            (Some(200), Some("success")),
            "{mode}/{format}: {pushed}"
        );
        assert_eq!(
            remaining(&stack, "o_alice", TEMPLATE).await,
            Some(("accept".to_owned(), 1)),
            "{mode}/{format}"
        );
        // A rejection records the choice and grants nothing.
        popup(&stack, "o_alice", false).await;
        assert_eq!(
            remaining(&stack, "o_alice", TEMPLATE).await,
            Some(("reject".to_owned(), 1)),
            "{mode}/{format}"
        );
        // Turned off in the settings: none left.
        let changed = stack
            .sim_post(
                "/__sim/subscribe/change",
                json!({"openid": "o_alice", "template_ids": [TEMPLATE]}),
            )
            .await;
        assert_eq!(deliveries(&changed["push"])[0]["status"], 200, "{changed}");
        assert_eq!(
            remaining(&stack, "o_alice", TEMPLATE).await,
            Some(("reject".to_owned(), 0)),
            "{mode}/{format}"
        );
    }
}

#[tokio::test]
async fn an_accepted_popup_allows_one_send_and_the_record_agrees() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.enable_push("safe", "xml").await;
    stack.log_in("o_alice").await;
    let send = json!({"op": "send_subscribe_message", "openid": "o_alice", "template_id": TEMPLATE,
                      "data": {"thing1": {"value": "A cup of tea"}}});
    let refused = stack.merchant(send.clone()).await.unwrap_err();
    assert_eq!(refused["code"], "no_subscription_left", "{refused}");

    popup(&stack, "o_alice", true).await;
    let record = json!({"op": "get_subscription", "openid": "o_alice", "template_id": TEMPLATE});
    let before = stack.merchant(record.clone()).await.unwrap();
    assert_eq!(
        (before["status"].as_str(), before["remaining"].as_u64()),
        (Some("accept"), Some(1))
    );

    let sent = stack.merchant(send.clone()).await.expect("one send");
    assert!(sent["msgid"].is_u64(), "{sent}");
    let after = stack.merchant(record.clone()).await.unwrap();
    assert_eq!(after["remaining"], 0, "{after}");

    let second = stack.merchant(send).await.unwrap_err();
    assert_eq!(second["code"], "no_subscription_left", "{second}");
    let last = stack.merchant(record).await.unwrap();
    assert_eq!(last["remaining"], 0, "{last}");
    assert_eq!(stack.sim_calls("subscribe_send").await, 3);
}

#[tokio::test]
async fn a_media_check_is_answered_through_the_push() {
    for format in ["xml", "json"] {
        let stack = Stack::start().await;
        stack.enable_push("safe", format).await;
        let token = stack.log_in("o_alice").await;
        let body = json!({"media_url": "https://cdn.example.com/sim-porn.jpg", "media_type": 2, "scene": 1});
        let request = authed_event("content-check-media.json", &token, Some(&body));
        let (status, started) = read(&content::FUNCTION.handle(&stack.state, request).await);
        assert_eq!(status, 200, "{started}");
        let trace_id = started["trace_id"].as_str().unwrap().to_owned();
        let verdict = || async {
            use lambda_http::RequestExt;
            let parameters: std::collections::HashMap<String, String> =
                [("trace_id".to_owned(), trace_id.clone())].into();
            let request = authed_event("content-media-verdict.json", &token, None).with_path_parameters(parameters);
            read(&content::FUNCTION.handle(&stack.state, request).await)
        };
        assert_eq!(verdict().await.1["status"], "pending");
        // WeChat's verdict comes a minute later.
        let moved = stack.sim_post("/__sim/time", json!({"advance_secs": 61})).await;
        let pushed = &moved["media_checks_delivered"][0]["push"];
        assert_eq!(deliveries(pushed)[0]["body"], "success", "{format}: {moved}");
        let (status, body) = verdict().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (
                body["status"].as_str(),
                body["suggest"].as_str(),
                body["label"].as_str()
            ),
            (Some("done"), Some("risky"), Some("20002")),
            "{format}: {body}"
        );
    }
}

/// A `trade_manage_*` event about `out_trade_no`, as WeChat's order management sends it.
fn trade_event(event: &str, out_trade_no: &str, transaction_id: &str) -> Value {
    json!({"FromUserName": "o_wechat_trade", "MsgType": "event", "Event": event,
           "merchant_trade_no": out_trade_no, "transaction_id": transaction_id,
           "merchant_id": testkit::MCHID, "pay_time": 1795536000, "settlement_time": 1795622400})
}

#[tokio::test]
async fn an_order_settlement_push_updates_the_paid_order_only() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.enable_push("safe", "json").await;
    stack.paid_order("T-SETTLE-1", "o_alice", 100, false).await;
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": "T-SETTLE-1"}))
        .await
        .unwrap();
    let transaction_id = order["transaction_id"].as_str().unwrap().to_owned();

    // Another transaction id: not this order's (nothing changes, the push is acknowledged).
    let wrong = trade_event(
        "trade_manage_order_settlement",
        "T-SETTLE-1",
        "4200000000000000000000000000",
    );
    let pushed = stack.sim_post("/__sim/push/send", json!({"message": wrong})).await;
    assert_eq!(deliveries(&pushed)[0]["body"], "success", "{pushed}");
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": "T-SETTLE-1"}))
        .await
        .unwrap();
    assert!(order.get("settled_at").is_none(), "{order}");

    let reminder = trade_event("trade_manage_remind_shipping", "T-SETTLE-1", &transaction_id);
    stack.sim_post("/__sim/push/send", json!({"message": reminder})).await;
    let settled = trade_event("trade_manage_order_settlement", "T-SETTLE-1", &transaction_id);
    let pushed = stack.sim_post("/__sim/push/send", json!({"message": settled})).await;
    assert_eq!(deliveries(&pushed)[0]["body"], "success", "{pushed}");
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": "T-SETTLE-1"}))
        .await
        .unwrap();
    assert_eq!(order["settled_at"], 1795622400, "{order}");
    assert_eq!(order["shipping_state"], "CONFIRMED", "{order}");
    assert!(order["shipping_reminded_at"].is_u64(), "{order}");
    assert_eq!(order["status"], "PAID");
}

/// A popup event for `openid` as the simulator's XML format writes it, with a fixed time so that
/// every copy is the same push.
fn popup_event(openid: &str, create_time: u64) -> Value {
    json!({"FromUserName": openid, "MsgType": "event", "Event": "subscribe_msg_popup_event",
           "CreateTime": create_time,
           "SubscribeMsgPopupEvent": {"List": [{"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"}]}})
}

#[tokio::test]
async fn a_hundred_copies_of_a_push_change_the_record_once() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    let now = wxa_shared::clock::now_unix();
    let message = popup_event("o_alice", now);
    let (first, second) = tokio::join!(
        stack.sim_post("/__sim/push/send", json!({"message": message, "copies": 50})),
        stack.sim_post("/__sim/push/send", json!({"message": message, "copies": 50})),
    );
    let all: Vec<Value> = deliveries(&first).into_iter().chain(deliveries(&second)).collect();
    assert_eq!(all.len(), 100);
    // Each copy is acknowledged, or (while the first is still being handled, after the
    // simulator's retries) refused as in progress, for WeChat to ask again.
    for delivery in &all {
        let acknowledged = delivery["status"] == 200 && delivery["body"] == "success";
        let in_progress = delivery["status"] == 503
            && delivery["body"]
                .as_str()
                .is_some_and(|b| b.contains("push_in_progress"));
        assert!(acknowledged || in_progress, "{delivery}");
    }
    assert!(all.iter().any(|d| d["body"] == "success"));
    assert_eq!(
        remaining(&stack, "o_alice", TEMPLATE).await,
        Some(("accept".to_owned(), 1))
    );
    // The same popup a second later is another push.
    let later = popup_event("o_alice", now + 1);
    stack.sim_post("/__sim/push/send", json!({"message": later})).await;
    assert_eq!(
        remaining(&stack, "o_alice", TEMPLATE).await,
        Some(("accept".to_owned(), 2))
    );
}

#[tokio::test]
async fn forged_stale_and_replayed_pushes_change_nothing_and_all_read_alike() {
    for format in ["xml", "json"] {
        let stack = Stack::start().await;
        stack.enable_push("safe", format).await;
        let now = wxa_shared::clock::now_unix();
        let mut refusals = Vec::new();
        for (i, forgery) in [
            json!({"tamper": "signature"}),
            json!({"tamper": "body"}),
            json!({"tamper": "appid"}),
            json!({"tamper": "padding"}),
            json!({"timestamp_offset_secs": -400}),
            json!({"timestamp_offset_secs": 400}),
        ]
        .into_iter()
        .enumerate()
        {
            let mut send = forgery.clone();
            send["message"] = popup_event("o_mallory", now + i as u64);
            let pushed = stack.sim_post("/__sim/push/send", send).await;
            let delivered = deliveries(&pushed);
            assert_eq!(delivered[0]["status"], 401, "{format} {forgery}: {pushed}");
            let body: Value = serde_json::from_str(delivered[0]["body"].as_str().unwrap()).unwrap();
            refusals.push((body["error"]["code"].clone(), body["error"]["message"].clone()));
        }
        refusals.dedup();
        assert_eq!(refusals.len(), 1, "one answer whatever failed: {refusals:?}");
        assert_eq!(refusals[0].0, "invalid_push");
        assert_eq!(
            remaining(&stack, "o_mallory", TEMPLATE).await,
            None,
            "{format}: nothing recorded"
        );

        // A genuine push replayed byte for byte within the window is a duplicate: acknowledged,
        // no second effect.
        let genuine = stack
            .sim_post("/__sim/push/send", json!({"message": popup_event("o_alice", now)}))
            .await;
        let replayed = stack
            .sim_post("/__sim/push/send", json!({"replay_of": genuine["push_id"]}))
            .await;
        assert_eq!(deliveries(&replayed)[0]["body"], "success", "{replayed}");
        assert_eq!(
            remaining(&stack, "o_alice", TEMPLATE).await,
            Some(("accept".to_owned(), 1))
        );
    }
}

/// Plain mode signs no body. Unless the operator opts in, a plain push that would change state
/// is refused; and a captured (timestamp, nonce, signature) never carries another body, even
/// with the opt-in.
#[tokio::test]
async fn plain_pushes_change_nothing_unless_opted_in_and_a_signature_carries_one_body() {
    let stack = Stack::start().await;
    stack.enable_push("plain", "xml").await;
    stack.log_in("o_alice").await;
    let pushed = popup(&stack, "o_alice", true).await;
    let delivered = deliveries(&pushed["push"]);
    let body: Value = serde_json::from_str(delivered[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (delivered[0]["status"].as_u64(), body["error"]["code"].as_str()),
        (Some(403), Some("push_mode_insecure")),
        "{pushed}"
    );
    assert_eq!(remaining(&stack, "o_alice", TEMPLATE).await, None);
    // A push with nothing to change is still taken.
    let now = wxa_shared::clock::now_unix();
    let entered =
        json!({"MsgType": "event", "Event": "user_enter_tempsession", "FromUserName": "o_alice", "CreateTime": now});
    let genuine = stack.sim_post("/__sim/push/send", json!({"message": entered})).await;
    assert_eq!(deliveries(&genuine)[0]["body"], "success", "{genuine}");

    // With the opt-in, the captured signature of that harmless push carrying a grant is refused
    // like a forgery; the same push again is a duplicate.
    let stack = Stack::start().await;
    stack
        .enable_push_with("plain", "xml", &[("PUSH_PLAIN_EFFECTS", "true")])
        .await;
    let genuine = stack.sim_post("/__sim/push/send", json!({"message": entered})).await;
    assert_eq!(deliveries(&genuine)[0]["body"], "success", "{genuine}");
    let swapped = stack
        .sim_post(
            "/__sim/push/send",
            json!({"replay_of": genuine["push_id"], "message": popup_event("o_mallory", now)}),
        )
        .await;
    assert_eq!(deliveries(&swapped)[0]["status"], 401, "{swapped}");
    assert_eq!(remaining(&stack, "o_mallory", TEMPLATE).await, None);
    let replayed = stack
        .sim_post("/__sim/push/send", json!({"replay_of": genuine["push_id"]}))
        .await;
    assert_eq!(deliveries(&replayed)[0]["body"], "success", "{replayed}");
}

#[tokio::test]
async fn a_plain_push_is_refused_once_safe_mode_is_configured() {
    let stack = Stack::start().await;
    // The console says plain, but the server holds an EncodingAESKey: a downgrade.
    let url = stack.enable_push("safe", "xml").await;
    stack
        .sim_post(
            "/__sim/push/config",
            json!({"url": url, "token": testkit::PUSH_TOKEN, "mode": "plain", "format": "xml"}),
        )
        .await;
    stack.log_in("o_alice").await;
    let pushed = popup(&stack, "o_alice", true).await;
    assert_eq!(deliveries(&pushed["push"])[0]["status"], 401, "{pushed}");
    assert_eq!(remaining(&stack, "o_alice", TEMPLATE).await, None);
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_ours_and_a_failed_effect_is_retried() {
    let stack = Stack::start().await;
    stack.enable_push("safe", "xml").await;
    stack.log_in("o_alice").await;
    // The claim's put reaches the table but its answer is lost (throttled): the SDK's retry finds
    // this delivery's own claim, and the effect is made once.
    stack.throttle.next(1);
    let pushed = popup(&stack, "o_alice", true).await;
    assert_eq!(deliveries(&pushed["push"])[0]["body"], "success", "{pushed}");
    assert_eq!(
        remaining(&stack, "o_alice", TEMPLATE).await,
        Some(("accept".to_owned(), 1))
    );

    // The effect's write fails (the orders table is missing): the claim is given back, every
    // delivery is refused, and once the receiver is whole again the same push has its effect.
    stack.enable_pay().await;
    stack.paid_order("T-RETRY-1", "o_alice", 100, false).await;
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": "T-RETRY-1"}))
        .await
        .unwrap();
    let settled = trade_event(
        "trade_manage_order_settlement",
        "T-RETRY-1",
        order["transaction_id"].as_str().unwrap(),
    );
    let mut message = settled.clone();
    message["CreateTime"] = json!(wxa_shared::clock::now_unix());
    stack
        .enable_push_with("safe", "xml", &[("ORDERS_TABLE", "no-such-orders-table")])
        .await;
    let failed = stack.sim_post("/__sim/push/send", json!({"message": message})).await;
    let delivered = deliveries(&failed);
    assert_eq!(delivered[0]["attempts"], 3, "retried while unacknowledged: {failed}");
    assert!(delivered[0]["status"].as_u64().unwrap() >= 500, "{failed}");
    stack.enable_push("safe", "xml").await;
    let again = stack.sim_post("/__sim/push/send", json!({"message": message})).await;
    assert_eq!(deliveries(&again)[0]["body"], "success", "{again}");
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": "T-RETRY-1"}))
        .await
        .unwrap();
    assert_eq!(order["settled_at"], 1795622400, "{order}");
}
