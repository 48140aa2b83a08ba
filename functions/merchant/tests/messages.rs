//! End to end on moto server and the simulator: the back office's messages, links and risk
//! checks through the `merchant` function.

use serde_json::{Value, json};
use testkit::Stack;

fn code(error: &Value) -> &str {
    error["code"].as_str().unwrap_or_default()
}

fn send(template_id: &str) -> Value {
    json!({"op": "send_subscribe_message", "openid": "o_alice", "template_id": template_id,
           "page": "pages/index/index", "data": {"thing1": {"value": "A cup of tea"}, "amount2": {"value": "1.00元"}}})
}

#[tokio::test]
async fn a_template_accepted_once_is_sent_once() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.log_in("o_alice").await;
    stack
        .sim_post(
            "/__sim/subscribe/popup",
            json!({"openid": "o_alice", "template_ids": ["tpl_order_paid"], "accept": true}),
        )
        .await;
    // The popup's push would record the grant (the receiver's job); here the back office's view
    // starts from WeChat's answers alone.
    let sent = stack.merchant(send("tpl_order_paid")).await.unwrap();
    assert!(sent["msgid"].is_number() || sent["msgid"].is_string(), "{sent}");
    let again = stack.merchant(send("tpl_order_paid")).await.unwrap_err();
    assert_eq!(code(&again), "no_subscription_left", "{again}");
    let record = stack
        .state
        .messages()
        .unwrap()
        .subscription("o_alice", "tpl_order_paid")
        .await
        .unwrap()
        .expect("the record agrees");
    assert_eq!(record.remaining, 0);
    assert_eq!(stack.sim_calls("subscribe_send").await, 2);
}

#[tokio::test]
async fn a_bad_message_is_refused_naming_the_field() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.log_in("o_alice").await;
    for (change, expected) in [
        (
            json!({"data": {"thing1": {"value": "x".repeat(21)}}}),
            "data.thing1.value must be 1 to 20 characters",
        ),
        (json!({"data": {"thing1": "A cup"}}), "data.thing1 must be"),
        (json!({"data": {"widget1": {"value": "x"}}}), "data.widget1"),
        (json!({"template_id": "tpl unknown!"}), "template_id"),
        (json!({"page": "/pages/index/index"}), "page"),
        (json!({"miniprogram_state": "beta"}), "miniprogram_state"),
    ] {
        let mut command = send("tpl_order_paid");
        for (key, value) in change.as_object().unwrap() {
            command[key] = value.clone();
        }
        let error = stack.merchant(command).await.unwrap_err();
        assert_eq!(code(&error), "invalid_command", "{error}");
        assert!(error["message"].as_str().unwrap().contains(expected), "{error}");
    }
    assert_eq!(stack.sim_calls("subscribe_send").await, 0, "refused before WeChat");
    // A template WeChat does not know.
    let error = stack.merchant(send("tpl_never_registered")).await.unwrap_err();
    assert!(error["message"].as_str().unwrap().contains("40037"), "{error}");
}

#[tokio::test]
async fn links_are_made_with_their_validity_and_quota_errors() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let url = stack
        .merchant(json!({"op": "generate_url_link", "path": "pages/index/index", "query": "a=1", "expire_days": 7}))
        .await
        .unwrap();
    assert!(
        url["url_link"].as_str().unwrap().starts_with("https://wxaurl.cn/"),
        "{url}"
    );
    assert_eq!(url["expire_days"], 7);
    let scheme = stack
        .merchant(json!({"op": "generate_scheme", "path": "pages/index/index"}))
        .await
        .unwrap();
    assert!(
        scheme["openlink"]
            .as_str()
            .unwrap()
            .starts_with("weixin://dl/business/"),
        "{scheme}"
    );
    let short = stack
        .merchant(json!({"op": "generate_short_link", "page_url": "pages/index/index?a=1", "page_title": "Tea"}))
        .await
        .unwrap();
    assert!(short["link"].as_str().unwrap().starts_with("#小程序://"), "{short}");

    let too_long = stack
        .merchant(json!({"op": "generate_url_link", "expire_days": 31}))
        .await
        .unwrap_err();
    assert_eq!(code(&too_long), "invalid_command");
    stack.sim_post("/__sim/links", json!({"released": false})).await;
    let unreleased = stack.merchant(json!({"op": "generate_scheme"})).await.unwrap_err();
    assert_eq!(code(&unreleased), "no_released_version", "{unreleased}");
    stack
        .sim_post("/__sim/links", json!({"released": true, "daily_limit": 0}))
        .await;
    let quota = stack.merchant(json!({"op": "generate_url_link"})).await.unwrap_err();
    assert_eq!(code(&quota), "quota_exceeded", "{quota}");
}

#[tokio::test]
async fn a_users_risk_rank_is_asked() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.log_in("o_alice").await;
    stack
        .sim_post("/__sim/risk", json!({"openid": "o_alice", "risk_rank": 3}))
        .await;
    let risk = stack
        .merchant(json!({"op": "user_risk_rank", "openid": "o_alice", "scene": 0, "client_ip": "203.0.113.7"}))
        .await
        .unwrap();
    assert_eq!(risk["risk_rank"], 3);
    let bad_ip = stack
        .merchant(json!({"op": "user_risk_rank", "openid": "o_alice", "scene": 0, "client_ip": "not an ip"}))
        .await
        .unwrap_err();
    assert_eq!(code(&bad_ip), "invalid_command");
    // A user who has not used the mini-program lately is not answered about.
    let unseen = stack
        .merchant(json!({"op": "user_risk_rank", "openid": "o_stranger", "scene": 0, "client_ip": "203.0.113.7"}))
        .await
        .unwrap_err();
    assert!(
        matches!(code(&unseen), "invalid_command" | "user_not_active"),
        "{unseen}"
    );
}
