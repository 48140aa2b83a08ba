//! The handlers' answers match openapi.yaml: a journey through every route's success, and the
//! WeChat, WeChat Pay and order failures (the bad-input suite checks the 4xx answers the same way).

use serde_json::{Value, json};
use testkit::{Stack, authed_event, check_openapi, event_with_body, read, record};
use wxa_shared::handlers::*;

#[tokio::test]
async fn every_route_answers_as_documented() {
    let stack = Stack::start_with(|c| c.wechat_timeout = std::time::Duration::from_millis(300)).await;
    stack.enable_pay().await;
    let mut records: Vec<Value> = Vec::new();

    let code = stack.mint_code("o_alice").await;
    let response = login::FUNCTION
        .handle(
            &stack.state,
            event_with_body("login.json", &json!({"code": code}).to_string()),
        )
        .await;
    assert_eq!(response.status(), 200);
    records.push(record("/login", "POST", &response));
    for (errcode, fault) in [
        (45011, json!({"errcode": 45011})),
        (-1, json!({"errcode": -1})),
        (0, json!({"http_status": 502})),
        (0, json!({"delay_ms": 1000})),
        (40125, json!({"errcode": 40125})),
        (40226, json!({"errcode": 40226})),
    ] {
        let mut fault = fault;
        fault["api"] = json!("jscode2session");
        stack.sim_post("/__sim/faults", fault).await;
        let code = stack.mint_code("o_alice").await;
        let response = login::FUNCTION
            .handle(
                &stack.state,
                event_with_body("login.json", &json!({"code": code}).to_string()),
            )
            .await;
        assert!(response.status().as_u16() >= 400, "fault {errcode}");
        records.push(record("/login", "POST", &response));
    }
    let code = stack.mint_code("o_alice").await;
    let token = {
        let response = login::FUNCTION
            .handle(
                &stack.state,
                event_with_body("login.json", &json!({"code": code}).to_string()),
            )
            .await;
        records.push(record("/login", "POST", &response));
        read(&response).1["token"].as_str().unwrap().to_owned()
    };

    let ok = |name: &str, response: &lambda_http::Response<lambda_http::Body>| {
        assert!(response.status().is_success(), "{name}: {}", response.status());
    };
    let response = session::FUNCTION
        .handle(&stack.state, authed_event("session.json", &token, None))
        .await;
    ok("session", &response);
    records.push(record("/session", "GET", &response));
    let response = session::FUNCTION
        .handle(&stack.state, authed_event("session-reset.json", &token, None))
        .await;
    ok("reset", &response);
    records.push(record("/session/reset", "POST", &response));

    let phone = stack
        .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await;
    let response = decrypt_phone::FUNCTION
        .handle(
            &stack.state,
            authed_event("decrypt-phone.json", &token, Some(&json!({"code": phone["code"]}))),
        )
        .await;
    ok("phone", &response);
    records.push(record("/phone", "POST", &response));
    let response = decrypt_phone::FUNCTION
        .handle(
            &stack.state,
            authed_event("decrypt-phone.json", &token, Some(&json!({"code": phone["code"]}))),
        )
        .await;
    records.push(record("/phone", "POST", &response));

    let steps = json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 42}]});
    let (data, iv) = stack.seal("o_alice", steps).await;
    let response = werun::FUNCTION
        .handle(
            &stack.state,
            authed_event("werun.json", &token, Some(&json!({"encryptedData": data, "iv": iv}))),
        )
        .await;
    ok("werun", &response);
    records.push(record("/werun", "POST", &response));
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    let response = share_info::FUNCTION
        .handle(
            &stack.state,
            authed_event(
                "share-info.json",
                &token,
                Some(&json!({"encryptedData": data, "iv": iv})),
            ),
        )
        .await;
    ok("share-info", &response);
    records.push(record("/share-info", "POST", &response));
    let key = stack.sim_session_key("o_alice").await;
    let raw = r#"{"nickName":"A"}"#;
    let signature = sha1_hex(&format!("{raw}{key}"));
    let profile = json!({"openId": "o_alice", "nickName": "A", "gender": 1, "unionId": "u1"});
    let (data, iv) = stack.seal("o_alice", profile).await;
    let body = json!({"rawData": raw, "signature": signature, "encryptedData": data, "iv": iv});
    let response = user_info::FUNCTION
        .handle(&stack.state, authed_event("user-info.json", &token, Some(&body)))
        .await;
    ok("user-info", &response);
    records.push(record("/user-info", "POST", &response));
    let (data, iv) = stack.seal("o_alice", json!({"openId": "o_bob"})).await;
    let body = json!({"rawData": raw, "signature": signature, "encryptedData": data, "iv": iv});
    records.push(record(
        "/user-info",
        "POST",
        &user_info::FUNCTION
            .handle(&stack.state, authed_event("user-info.json", &token, Some(&body)))
            .await,
    ));
    // A rotated key.
    stack.mint_code("o_alice").await;
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    records.push(record(
        "/share-info",
        "POST",
        &share_info::FUNCTION
            .handle(
                &stack.state,
                authed_event(
                    "share-info.json",
                    &token,
                    Some(&json!({"encryptedData": data, "iv": iv})),
                ),
            )
            .await,
    ));
    records.push(record(
        "/session/reset",
        "POST",
        &session::FUNCTION
            .handle(&stack.state, authed_event("session-reset.json", &token, None))
            .await,
    ));
    // The rotated key revoked that session: log in again.
    let token = stack.log_in("o_alice").await;
    // Data that does not check out: the one open-data answer.
    let (data, _) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    records.push(record(
        "/share-info",
        "POST",
        &share_info::FUNCTION
            .handle(
                &stack.state,
                authed_event(
                    "share-info.json",
                    &token,
                    Some(&json!({"encryptedData": data, "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})),
                ),
            )
            .await,
    ));

    let response = qrcode::FUNCTION
        .handle(&stack.state, authed_event("qrcode.json", &token, None))
        .await;
    ok("qrcode", &response);
    records.push(record("/qrcode", "POST", &response));
    records.push(record(
        "/qrcode",
        "POST",
        &qrcode::FUNCTION
            .handle(
                &stack.state,
                authed_event(
                    "qrcode.json",
                    &token,
                    Some(&json!({"scene": "a", "page": "pages/none"})),
                ),
            )
            .await,
    ));
    stack
        .sim_post("/__sim/faults", json!({"api": "getwxacodeunlimit", "errcode": 45009}))
        .await;
    records.push(record(
        "/qrcode",
        "POST",
        &qrcode::FUNCTION
            .handle(
                &stack.state,
                authed_event("qrcode.json", &token, Some(&json!({"scene": "b"}))),
            )
            .await,
    ));
    let response = card_sign::FUNCTION
        .handle(&stack.state, authed_event("card-sign.json", &token, None))
        .await;
    ok("card", &response);
    records.push(record("/card/sign", "POST", &response));

    stack.put_order("T20261125000001", "o_alice", 1).await;
    stack.put_order("T_BOB_000001", "o_bob", 1).await;
    let response = pay_sign::FUNCTION
        .handle(&stack.state, authed_event("pay-sign.json", &token, None))
        .await;
    ok("pay-sign", &response);
    records.push(record("/pay/sign", "POST", &response));
    let prepay_id = read(&response).1["package"]
        .as_str()
        .unwrap()
        .trim_start_matches("prepay_id=")
        .to_owned();
    for body in [
        json!({"out_trade_no": "T_BOB_000001"}),
        json!({"out_trade_no": "T_NONE_00001"}),
    ] {
        records.push(record(
            "/pay/sign",
            "POST",
            &pay_sign::FUNCTION
                .handle(&stack.state, authed_event("pay-sign.json", &token, Some(&body)))
                .await,
        ));
    }
    stack
        .sim_post("/__sim/faults", json!({"api": "pay_jsapi", "bad_signature": true}))
        .await;
    stack.put_order("T20261125000009", "o_alice", 5).await;
    let body = json!({"out_trade_no": "T20261125000009"});
    records.push(record(
        "/pay/sign",
        "POST",
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, Some(&body)))
            .await,
    ));
    // The notification, delivered over HTTP by the simulator: 204; then the order is paid.
    let delivered = stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(delivered["deliveries"][0]["status"], 204);
    records.push(json!({"path": "/pay/notify", "method": "POST", "status": 204, "content_type": "", "body": null}));
    records.push(record(
        "/pay/sign",
        "POST",
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, None))
            .await,
    ));
    let forged = stack
        .sim_post(
            "/__sim/pay/complete",
            json!({"prepay_id": prepay_id, "mode": "tampered"}),
        )
        .await;
    let body: Value = serde_json::from_str(forged["deliveries"][0]["body"].as_str().unwrap()).unwrap();
    records.push(json!({"path": "/pay/notify", "method": "POST", "status": forged["deliveries"][0]["status"], "content_type": "application/json", "body": body}));
    records.push(record(
        "/pay/notify",
        "POST",
        &pay_notify::FUNCTION
            .handle(&stack.state, testkit::event("pay-notify-v2.json"))
            .await,
    ));

    // A merchant transfer to o_alice: the confirm route's package; then unknown (another
    // number) and already confirmed.
    let transfer = json!({"op": "create_transfer", "out_bill_no": "B20261126000001", "openid": "o_alice",
                          "amount": 500, "scene_id": "1000", "remark": "新会员开通有礼",
                          "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"}]});
    stack.merchant(transfer).await.expect("transfer created");
    let confirm = |no: &str| {
        let text = std::fs::read_to_string(testkit::workspace_root().join("events/transfer-confirm.json")).unwrap();
        let mut request = lambda_http::request::from_str(&text.replace("B20261126000001", no)).unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let path = "/transfers/{out_bill_no}/confirm";
    let response = pay_sign::FUNCTION
        .handle(&stack.state, confirm("B20261126000001"))
        .await;
    ok("transfer confirm", &response);
    records.push(record(path, "POST", &response));
    let package = read(&response).1["package"].as_str().unwrap().to_owned();
    records.push(record(
        path,
        "POST",
        &pay_sign::FUNCTION
            .handle(&stack.state, confirm("B20261126999999"))
            .await,
    ));
    stack
        .sim_post(
            "/__sim/pay/transfer/confirm",
            json!({"package": package, "openid": "o_alice"}),
        )
        .await;
    let response = pay_sign::FUNCTION
        .handle(&stack.state, confirm("B20261126000001"))
        .await;
    assert_eq!(response.status(), 409);
    records.push(record(path, "POST", &response));

    let response = session::FUNCTION
        .handle(&stack.state, authed_event("logout.json", &token, None))
        .await;
    assert_eq!(response.status(), 204);
    records.push(record("/logout", "POST", &response));
    records.push(record(
        "/logout",
        "POST",
        &session::FUNCTION
            .handle(&stack.state, authed_event("logout.json", &token, None))
            .await,
    ));

    check_openapi(&records);
}

fn sha1_hex(text: &str) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(text.as_bytes()))
}

/// The longest a request body openapi.yaml calls valid can be, written by any JSON encoder, is
/// within the handlers' body limit: a valid request is never refused as `body_too_large`.
#[test]
fn every_valid_body_fits_the_body_limit() {
    let openapi = testkit::openapi();
    let limit = wxa_shared::api::request::MAX_BODY_BYTES;
    let mut checked = 0;
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        // WeChat Pay's notifications and WeChat's pushes are read whole (their own limits).
        if path == "/pay/notify" || path == "/wechat/push" {
            continue;
        }
        for (method, operation) in item.as_object().expect("an operation") {
            let body = testkit::resolve(&openapi, &operation["requestBody"]);
            let schema = &body["content"]["application/json"]["schema"];
            if schema.is_null() {
                continue;
            }
            let most = max_json_bytes(&openapi, schema)
                .unwrap_or_else(|| panic!("{method} {path}: the body schema does not bound its size"));
            println!("{method} {path}: at most {most} bytes");
            assert!(most <= limit, "{method} {path}: up to {most} bytes, over {limit}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} bodies checked");
}

/// The most bytes a value of `schema` takes as JSON, with `": "` and `", "` between members (as
/// Python writes it); `None` when the schema does not bound it.
fn max_json_bytes(openapi: &Value, schema: &Value) -> Option<usize> {
    let schema = testkit::resolve(openapi, schema);
    if let Some(alternatives) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return alternatives.iter().map(|s| max_json_bytes(openapi, s)).max().flatten();
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().map(|v| v.to_string().len()).max();
    }
    match schema["type"].as_str()? {
        "object" => {
            if schema["additionalProperties"] != false {
                return None;
            }
            let properties = schema["properties"].as_object()?;
            let mut total = 2 + 2 * properties.len().saturating_sub(1);
            for (name, property) in properties {
                total += name.len() + 4 + max_json_bytes(openapi, property)?;
            }
            Some(total)
        }
        "string" => {
            let max_length = usize::try_from(schema["maxLength"].as_u64()?).ok()?;
            Some(2 + max_length * max_char_bytes(schema["pattern"].as_str()))
        }
        // Written as a float at worst: `1280.0`.
        "integer" => {
            let bound = |k: &str| schema[k].as_i64().map(|n| n.to_string().len());
            Some(bound("minimum")?.max(bound("maximum")?) + 2)
        }
        "boolean" => Some("false".len()),
        _ => None,
    }
}

/// The most bytes one character of a string matching `pattern` takes in JSON: 12 for any
/// character (a `\u`-escaped surrogate pair); 1 for printable ASCII, 2 where `"` or `\` may occur.
fn max_char_bytes(pattern: Option<&str>) -> usize {
    let Some(ranges) = pattern.and_then(pattern_characters) else {
        return 12;
    };
    let within = |c: char| ranges.iter().any(|&(low, high)| (low..=high).contains(&c));
    if !ranges.iter().all(|&(low, high)| low >= ' ' && high <= '~') {
        12
    } else if within('"') || within('\\') {
        2
    } else {
        1
    }
}

/// The characters a simple pattern can match, as ranges: literals and `[...]` classes between
/// anchors, groups, alternatives and quantifiers. `None` for anything else (`.`, escapes,
/// negated classes), which may match any character.
fn pattern_characters(pattern: &str) -> Option<Vec<(char, char)>> {
    let mut ranges = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '^' | '$' | '(' | ')' | '|' | '?' | '*' | '+' => {}
            '{' => while chars.next_if(|&c| c != '}').is_some() {},
            '}' => {}
            '.' | '\\' => return None,
            '[' => {
                if chars.peek() == Some(&'^') {
                    return None;
                }
                loop {
                    let low = chars.next()?;
                    match low {
                        ']' => break,
                        '\\' => return None,
                        _ if chars.peek() == Some(&'-') => {
                            chars.next();
                            match chars.next()? {
                                // A `-` last in the class is itself.
                                ']' => {
                                    ranges.extend([(low, low), ('-', '-')]);
                                    break;
                                }
                                high => ranges.push((low, high)),
                            }
                        }
                        _ => ranges.push((low, low)),
                    }
                }
            }
            literal => ranges.push((literal, literal)),
        }
    }
    Some(ranges)
}
