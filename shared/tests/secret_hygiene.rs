//! Secret hygiene: every log line written during a full journey — login, session check and
//! reset, open data, phone, code image, card, payment and its notification, a merchant transfer
//! with the payee's name, content checks,
//! message pushes, and failures — at
//! DEBUG level for every crate (AWS SDK and HTTP clients included), holds no session_key, app
//! secret, pay key, private key or login token.

use serde_json::json;
use testkit::logs::LogCapture;
use testkit::{APIV2_KEY, APIV3_KEY, APP_SECRET, Stack, authed_event, event_with_body, read};
use wxa_shared::handlers::*;

/// A merchant transfer's payee: WeChat Pay wants the real name from 2,000 CNY; it is sealed for
/// WeChat Pay and never written anywhere in the clear.
const PAYEE_NAME: &str = "张三丰";

/// The routes a journey walked, by the `routeKey` of their events.
#[derive(Default)]
struct Walked(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl Walked {
    fn mark(&self, request: lambda_http::Request) -> lambda_http::Request {
        use lambda_http::RequestExt;
        if let Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) = request.request_context_ref() {
            self.0.lock().unwrap().extend(c.route_key.clone());
        }
        request
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let walked = Walked::default();
    let capture = LogCapture::default();
    // The test runtime is single-threaded: the notify server's tasks log here too.
    let _guard = capture.install();

    let stack = Stack::start().await;
    stack.enable_pay().await;
    let code = stack.mint_code("o_alice").await;
    let (status, body) = read(
        &login::FUNCTION
            .handle(
                &stack.state,
                walked.mark(event_with_body("login.json", &json!({"code": code}).to_string())),
            )
            .await,
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let first_key = stack.sim_session_key("o_alice").await;

    assert_eq!(
        read(
            &session::FUNCTION
                .handle(&stack.state, walked.mark(authed_event("session.json", &token, None)))
                .await
        )
        .0,
        200
    );
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    let sealed = json!({"encryptedData": data, "iv": iv});
    assert_eq!(
        read(
            &share_info::FUNCTION
                .handle(
                    &stack.state,
                    walked.mark(authed_event("share-info.json", &token, Some(&sealed)))
                )
                .await
        )
        .0,
        200
    );
    let (data, iv) = stack
        .seal(
            "o_alice",
            json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 42}]}),
        )
        .await;
    let steps = json!({"encryptedData": data, "iv": iv});
    let request = walked.mark(authed_event("werun.json", &token, Some(&steps)));
    assert_eq!(read(&werun::FUNCTION.handle(&stack.state, request).await).0, 200);
    let (data, iv) = stack
        .seal("o_alice", json!({"openId": "o_alice", "nickName": "A"}))
        .await;
    let raw = r#"{"nickName":"A"}"#;
    let signature = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(format!("{raw}{first_key}").as_bytes()))
    };
    let profile = json!({"rawData": raw, "signature": signature, "encryptedData": data, "iv": iv});
    let request = walked.mark(authed_event("user-info.json", &token, Some(&profile)));
    assert_eq!(read(&user_info::FUNCTION.handle(&stack.state, request).await).0, 200);
    let phone = stack
        .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await;
    let phone_body = json!({"code": phone["code"]});
    assert_eq!(
        read(
            &decrypt_phone::FUNCTION
                .handle(
                    &stack.state,
                    walked.mark(authed_event("decrypt-phone.json", &token, Some(&phone_body)))
                )
                .await
        )
        .0,
        200
    );
    assert_eq!(
        qrcode::FUNCTION
            .handle(&stack.state, walked.mark(authed_event("qrcode.json", &token, None)))
            .await
            .status(),
        200
    );
    assert_eq!(
        read(
            &card_sign::FUNCTION
                .handle(&stack.state, walked.mark(authed_event("card-sign.json", &token, None)))
                .await
        )
        .0,
        200
    );
    stack.put_order("T20261125000001", "o_alice", 1).await;
    let (status, params) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, walked.mark(authed_event("pay-sign.json", &token, None)))
            .await,
    );
    assert_eq!(status, 200, "{params}");
    let prepay_id = params["package"].as_str().unwrap().trim_start_matches("prepay_id=");
    let paid = stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(paid["deliveries"][0]["status"], 204);
    // WeChat Pay posted it to pay-notify (served over HTTP by the test stack).
    walked.0.lock().unwrap().insert("POST /pay/notify".into());
    // The mini-program's order page; the back office's refund, notified; the reconciler.
    let page = {
        use lambda_http::RequestExt;
        let request = walked.mark(authed_event("pay-order.json", &token, None));
        let parameters: std::collections::HashMap<String, String> =
            [("out_trade_no".to_owned(), "T20261125000001".to_owned())].into();
        request.with_path_parameters(parameters)
    };
    assert_eq!(read(&pay_sign::FUNCTION.handle(&stack.state, page).await).0, 200);
    let refund =
        json!({"op": "refund", "out_trade_no": "T20261125000001", "out_refund_no": "R_HYGIENE_1", "amount": 1});
    assert!(stack.merchant(refund).await.is_ok());
    let settled = stack
        .sim_post("/__sim/pay/refund/settle", json!({"out_refund_no": "R_HYGIENE_1"}))
        .await;
    assert_eq!(settled["deliveries"][0]["status"], 204);
    let later = wxa_shared::clock::now_unix() + 3 * 3600;
    assert!(
        wxa_shared::handlers::reconciler::reconcile_at(&stack.state, later)
            .await
            .is_ok()
    );
    stack
        .sim_post(
            "/__sim/pay/complete",
            json!({"prepay_id": prepay_id, "mode": "wrong_key"}),
        )
        .await;
    // A merchant transfer with the payee's real name (sealed for WeChat Pay), confirmed by its
    // user through the route, finished by WeChat Pay's notification.
    let transfer = json!({"op": "create_transfer", "out_bill_no": "B20261206000001", "openid": "o_alice",
                          "amount": 300_000, "scene_id": "1000", "remark": "新会员开通有礼",
                          "user_name": PAYEE_NAME,
                          "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"},
                                           {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}]});
    let created = stack.merchant(transfer).await;
    assert_eq!(
        created.as_ref().map(|t| t["state"].clone()),
        Ok(json!("WAIT_USER_CONFIRM")),
        "{created:?}"
    );
    let confirm = {
        let text = std::fs::read_to_string(testkit::workspace_root().join("events/transfer-confirm.json")).unwrap();
        let mut request = lambda_http::request::from_str(&text.replace("B20261126000001", "B20261206000001")).unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        walked.mark(request)
    };
    let (status, package) = read(&pay_sign::FUNCTION.handle(&stack.state, confirm).await);
    assert_eq!(status, 200, "{package}");
    let confirmed = stack
        .sim_post(
            "/__sim/pay/transfer/confirm",
            json!({"package": package["package"], "openid": "o_alice"}),
        )
        .await;
    assert_eq!(confirmed["deliveries"][0]["status"], 204, "{confirmed}");
    // Failures log too: a stale key, a reused code, a rotated secret.
    stack.mint_code("o_alice").await;
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    let stale = json!({"encryptedData": data, "iv": iv});
    assert_eq!(
        read(
            &share_info::FUNCTION
                .handle(
                    &stack.state,
                    walked.mark(authed_event("share-info.json", &token, Some(&stale)))
                )
                .await
        )
        .0,
        401
    );
    // The rotated key revoked that session; a new one is reset, then logged out.
    let second = stack.log_in("o_alice").await;
    assert_eq!(
        read(
            &session::FUNCTION
                .handle(
                    &stack.state,
                    walked.mark(authed_event("session-reset.json", &second, None))
                )
                .await
        )
        .0,
        200
    );
    // A failure that costs the session: data that does not open (another iv).
    let (data, _) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    let tampered = json!({"encryptedData": data, "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    assert_eq!(
        read(
            &share_info::FUNCTION
                .handle(
                    &stack.state,
                    walked.mark(authed_event("share-info.json", &second, Some(&tampered)))
                )
                .await
        )
        .0,
        400
    );
    assert_eq!(
        session::FUNCTION
            .handle(&stack.state, walked.mark(authed_event("logout.json", &second, None)))
            .await
            .status(),
        204
    );
    let reused = walked.mark(event_with_body("login.json", &json!({"code": code}).to_string()));
    assert_eq!(read(&login::FUNCTION.handle(&stack.state, reused).await).0, 400);

    // Content security, and WeChat's message push (safe mode): the console's check, a popup, a
    // push that does not decrypt, the media check's verdict.
    stack.enable_push("safe", "xml").await;
    let checked = stack.sim_post("/__sim/push/verify-url", json!({})).await;
    assert_eq!(checked["echoed"], true, "{checked}");
    walked.0.lock().unwrap().insert("GET /wechat/push".into());
    let third = stack.log_in("o_alice").await;
    let popup = json!({"openid": "o_alice", "template_ids": ["tpl_order_paid"], "accept": true});
    let pushed = stack.sim_post("/__sim/subscribe/popup", popup).await;
    assert_eq!(pushed["push"]["deliveries"][0]["body"], "success", "{pushed}");
    walked.0.lock().unwrap().insert("POST /wechat/push".into());
    let forged =
        json!({"message": {"FromUserName": "o_alice", "MsgType": "text", "Content": "hi"}, "tamper": "padding"});
    assert_eq!(
        stack.sim_post("/__sim/push/send", forged).await["deliveries"][0]["status"],
        401
    );
    let text = json!({"content": "buy sim-porn here", "scene": 2});
    let request = walked.mark(authed_event("content-check.json", &third, Some(&text)));
    assert_eq!(read(&content::FUNCTION.handle(&stack.state, request).await).0, 200);
    let media = json!({"media_url": "https://cdn.example.com/a.jpg", "media_type": 2, "scene": 1});
    let request = walked.mark(authed_event("content-check-media.json", &third, Some(&media)));
    let (status, started) = read(&content::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(status, 200, "{started}");
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();
    let delivered = stack
        .sim_post("/__sim/media-check/deliver", json!({"trace_id": trace_id}))
        .await;
    assert_eq!(delivered["push"]["deliveries"][0]["body"], "success", "{delivered}");
    let verdict = {
        use lambda_http::RequestExt;
        let parameters: std::collections::HashMap<String, String> = [("trace_id".to_owned(), trace_id)].into();
        walked
            .mark(authed_event("content-media-verdict.json", &third, None))
            .with_path_parameters(parameters)
    };
    let (status, verdict) = read(&content::FUNCTION.handle(&stack.state, verdict).await);
    assert_eq!((status, verdict["status"].as_str()), (200, Some("done")), "{verdict}");

    // The journey walks every route of template.yaml.
    let every: std::collections::BTreeSet<String> = testkit::template_routes()
        .into_iter()
        .map(|(_, method, path)| format!("{method} {path}"))
        .collect();
    assert_eq!(*walked.0.lock().unwrap(), every, "the routes the journey walked");

    let logs = capture.text();
    assert!(
        logs.contains("login ok") && logs.contains("order paid"),
        "the capture works"
    );
    assert!(logs.lines().count() > 50, "DEBUG lines of every crate are captured");
    let reset_key = stack.sim_session_key("o_alice").await;
    let private_key_line = "MII"; // every PEM private key body starts so
    for (name, secret) in [
        ("first session_key", first_key.as_str()),
        ("reset session_key", reset_key.as_str()),
        ("app secret", APP_SECRET),
        ("APIv3 key", APIV3_KEY),
        ("APIv2 key", APIV2_KEY),
        ("login token", token.as_str()),
        ("second login token", second.as_str()),
        ("private key", "PRIVATE KEY"),
        ("push token", testkit::PUSH_TOKEN),
        ("push EncodingAESKey", testkit::PUSH_AES_KEY),
        ("third login token", third.as_str()),
        ("payee's name", PAYEE_NAME),
    ] {
        assert!(!logs.contains(secret), "the {name} appears in the logs");
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(private_key_line) && l.contains("BEGIN")),
        "a PEM appears in the logs"
    );
}
