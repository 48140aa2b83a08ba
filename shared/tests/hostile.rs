//! The bad-input suite: for every function, at least 30 hostile requests built from its event
//! file (wrong methods and content types, bad tokens, broken and huge bodies, invalid UTF-8,
//! missing, extra and mistyped fields, injection strings, unicode edge cases, base64 and hex
//! garbage, short and long ivs, empty ciphertext). Every one must get a 4xx with a stable JSON
//! error code, never a panic or a 5xx, and no secret in the body.

use std::collections::BTreeMap;

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use testkit::{APIV3_KEY, APP_SECRET, Stack, event, resolve};
use wxa_shared::function::Function;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Base64,
    Number,
    Bool,
}

/// One route, as the tests see it: everything derived from template.yaml (the routes and their
/// functions), events/ (the request API Gateway sends) and openapi.yaml (auth and body fields).
struct Target {
    /// The event file's stem (`session-reset`).
    name: String,
    /// The route's path (as in template.yaml and openapi.yaml).
    path: String,
    function: &'static Function,
    event: String,
    method: Method,
    auth: bool,
    /// The route takes a JSON (or XML) body.
    has_body: bool,
    /// The body fields: name, kind, required.
    fields: Vec<(String, Kind, bool)>,
    /// Fields whose every text is valid input (`x-free-text` in openapi.yaml: what a content check
    /// checks): an injection there is answered like any text, never with a 5xx.
    free_text: Vec<String>,
}

/// Every route of template.yaml as a target.
fn targets() -> Vec<Target> {
    let openapi = testkit::openapi();
    testkit::template_routes()
        .into_iter()
        .map(|(function_name, method, path)| {
            let function = *wxa_shared::function::FUNCTIONS
                .iter()
                .find(|f| f.name == function_name)
                .expect("template.yaml's functions are registered");
            let events = testkit::events_for(&method, &path);
            // The function's own event when a route has several (pay-notify.json, not -v2).
            let event = events
                .iter()
                .find(|e| **e == format!("{function_name}.json"))
                .or(events.first())
                .unwrap_or_else(|| panic!("no event for {method} {path}"))
                .clone();
            let operation = &openapi["paths"][&path][method.to_lowercase()];
            let auth = operation.get("security") != Some(&json!([]));
            let body = resolve(&openapi, &operation["requestBody"]);
            let schema = resolve(&openapi, &body["content"]["application/json"]["schema"]);
            // Of alternatives (`/phone`: a code, or sealed data), the first.
            let schema = schema["oneOf"].get(0).map_or(schema, |first| resolve(&openapi, first));
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let free_text = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, property)| resolve(&openapi, property)["x-free-text"] == true)
                .map(|(field, _)| field.clone())
                .collect();
            let fields = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(field, property)| {
                    let property = resolve(&openapi, property);
                    let kind = match property["type"].as_str() {
                        Some("integer" | "number") => Kind::Number,
                        Some("boolean") => Kind::Bool,
                        _ if property["contentEncoding"] == "base64" => Kind::Base64,
                        _ => Kind::Text,
                    };
                    (field.clone(), kind, required.contains(&field.as_str()))
                })
                .collect();
            Target {
                name: event.trim_end_matches(".json").to_owned(),
                path,
                function,
                event,
                method: method.parse().expect("an HTTP method"),
                auth,
                has_body: !body.is_null(),
                fields,
                free_text,
            }
        })
        .collect()
}

const INJECTIONS: &[&str] = &[
    "' OR '1'='1' --",
    "\"},{\"openid\":\"o_admin\",\"x\":\"",
    "<script>alert(1)</script>",
    "..\\..\\windows\\win.ini",
    "\u{202e}\u{0000}\u{feff}😀𠜎",
    "${jndi:ldap://127.0.0.1/a}",
];

/// The hostile requests for `target`, each with a label.
fn hostile_requests(target: &Target, token: &str, expired: &str) -> Vec<(String, Request)> {
    let base = |auth: Option<&str>| {
        let mut request = event(&target.event);
        match auth {
            Some(t) => {
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            None => {
                request.headers_mut().remove("authorization");
            }
        }
        request
    };
    let with_body = |body: Body| {
        let mut request = base(Some(token));
        *request.body_mut() = body;
        request
    };
    let mut cases: Vec<(String, Request)> = Vec::new();

    // Methods.
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        if method != target.method {
            let mut request = base(Some(token));
            *request.method_mut() = method.clone();
            cases.push((format!("method {method}"), request));
        }
    }
    // Tokens.
    if target.auth {
        cases.push(("no token".into(), base(None)));
        cases.push(("forged token".into(), base(Some(&"Q".repeat(43)))));
        cases.push(("expired token".into(), base(Some(expired))));
        cases.push(("token with a slash".into(), base(Some(&format!("{}/", &token[..42])))));
        for header in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer a b",
            "bearer 😀",
            &format!("Bearer {}", "x".repeat(10_000)),
        ] {
            let mut request = base(None);
            request.headers_mut().insert(
                "authorization",
                header.parse().unwrap_or_else(|_| "Bearer ?".parse().unwrap()),
            );
            cases.push((format!("authorization {:.20}", header), request));
        }
        let near_misses = [
            token[..42].to_owned(),
            format!("{token}A"),
            format!("{token}="),
            token.to_ascii_lowercase(),
            token.chars().rev().collect(),
            wxa_shared::store::sessions::token_hash(token),
        ];
        for (i, t) in near_misses.iter().enumerate() {
            cases.push((format!("near-miss token {i}"), base(Some(t))));
        }
        for injection in INJECTIONS {
            let mut request = base(None);
            let header = format!("Bearer {injection}");
            request.headers_mut().insert(
                "authorization",
                header.parse().unwrap_or_else(|_| "Bearer %00".parse().unwrap()),
            );
            cases.push((format!("token = {injection:.12}"), request));
            let mut query = base(Some(&"Z".repeat(43)));
            *query.uri_mut() = format!("/x?openid={}", injection.escape_default())
                .parse()
                .unwrap_or_else(|_| "/x?openid=%00".parse().unwrap());
            cases.push((format!("query {injection:.12}"), query));
        }
    }
    // Bodies that are not the JSON object asked for (a GET ignores its body, but must not choke on it).
    if target.has_body {
        let bodies: Vec<(&str, Body)> = vec![
            ("empty body", Body::Empty),
            ("null", Body::Text("null".into())),
            ("array", Body::Text("[]".into())),
            ("number", Body::Text("123".into())),
            ("string", Body::Text("\"x\"".into())),
            ("truncated JSON", Body::Text("{\"a\":".into())),
            ("invalid UTF-8", Body::Binary(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])),
            ("lone surrogate", Body::Text("{\"x\":\"\\ud800\"}".into())),
            ("deep nesting", Body::Text("[".repeat(5000))),
            (
                "body over the limit",
                Body::Text(format!(
                    "{{\"pad\":\"{}\"}}",
                    "a".repeat(wxa_shared::api::request::MAX_BODY_BYTES)
                )),
            ),
            ("hex garbage", Body::Text("deadbeefcafebabe".into())),
            ("duplicate keys", Body::Text("{\"a\":1,\"a\":2}".into())),
            ("byte order mark", Body::Text("\u{feff}{}".into())),
            ("NUL bytes", Body::Binary(vec![0; 64])),
        ];
        for (label, body) in bodies {
            cases.push((label.into(), with_body(body)));
        }
        let mut plain = with_body(Body::Text("code=abc".into()));
        plain
            .headers_mut()
            .insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        cases.push(("form content type".into(), plain));
        let mut xml = with_body(Body::Text("<xml><a>1</a></xml>".into()));
        xml.headers_mut().insert("content-type", "text/xml".parse().unwrap());
        cases.push(("xml to a JSON route".into(), xml));
    }
    // Field-level mutations of the event's own body.
    let body: Value = match event(&target.event).body() {
        Body::Text(text) => serde_json::from_str(text).unwrap_or(json!({})),
        _ => json!({}),
    };
    let mutated = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut object = body.as_object().cloned().unwrap_or_default();
        change(&mut object);
        with_body(Body::Text(Value::Object(object).to_string()))
    };
    if !target.fields.is_empty() {
        cases.push((
            "extra field".into(),
            mutated(&|o| {
                o.insert("is_admin".into(), json!(true));
            }),
        ));
    }
    for (field, kind, required) in &target.fields {
        let (field, kind, required) = (field.as_str(), *kind, *required);
        if required {
            cases.push((
                format!("{field} missing"),
                mutated(&|o| {
                    o.remove(field);
                }),
            ));
            cases.push((
                format!("{field} null"),
                mutated(&|o| {
                    o.insert(field.into(), Value::Null);
                }),
            ));
        }
        let wrong_type = match kind {
            Kind::Number => json!("430"),
            Kind::Bool => json!("yes"),
            Kind::Text | Kind::Base64 => json!(42),
        };
        cases.push((
            format!("{field} mistyped"),
            mutated(&|o| {
                o.insert(field.into(), wrong_type.clone());
            }),
        ));
        cases.push((
            format!("{field} object"),
            mutated(&|o| {
                o.insert(field.into(), json!({"$ne": null}));
            }),
        ));
        if matches!(kind, Kind::Text | Kind::Base64) {
            for injection in INJECTIONS {
                cases.push((
                    format!("{field} = {injection:.12}"),
                    mutated(&|o| {
                        o.insert(field.into(), json!(injection));
                    }),
                ));
            }
            cases.push((
                format!("{field} 5000 chars"),
                mutated(&|o| {
                    o.insert(field.into(), json!("A".repeat(4999) + "="));
                }),
            ));
        }
        if kind == Kind::Base64 {
            use base64::Engine;
            let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            for (label, value) in [
                ("base64 garbage", "%%%%".to_owned()),
                ("hex", "00112233445566778899aabbccddeeff".to_owned()),
                ("15 bytes", b64(15)),
                ("17 bytes", b64(17)),
                ("empty", String::new()),
                ("33 bytes", b64(33)),
            ] {
                cases.push((
                    format!("{field} {label}"),
                    mutated(&|o| {
                        o.insert(field.into(), json!(value));
                    }),
                ));
            }
        }
    }
    if target.path == "/pay/notify" {
        for (label, change) in [
            ("no signature", ("wechatpay-signature", None)),
            (
                "signature probe",
                ("wechatpay-signature", Some("WECHATPAY/SIGNTEST/abc")),
            ),
            ("unknown serial", ("wechatpay-serial", Some("PUB_KEY_ID_NOT_OURS"))),
            ("timestamp not a number", ("wechatpay-timestamp", Some("yesterday"))),
            ("timestamp in the future", ("wechatpay-timestamp", Some("99999999999"))),
            ("no nonce", ("wechatpay-nonce", None)),
            ("signature not base64", ("wechatpay-signature", Some("%%%"))),
        ] {
            let mut request = base(None);
            match change.1 {
                Some(v) => request.headers_mut().insert(change.0, v.parse().unwrap()),
                None => request.headers_mut().remove(change.0),
            };
            cases.push((label.into(), request));
        }
        for (label, body) in [
            (
                "XML bomb",
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><xml><total_fee>&b;</total_fee></xml>",
            ),
            (
                "XML unsigned",
                "<xml><return_code>SUCCESS</return_code><out_trade_no>T20261125000001</out_trade_no></xml>",
            ),
            ("XML nested", "<xml><a><b>1</b></a></xml>"),
            ("XML truncated", "<xml><return_code>SUCCESS"),
        ] {
            let mut request = base(None);
            *request.body_mut() = Body::Text(body.into());
            cases.push((label.into(), request));
        }
    }
    if target.path == "/wechat/push" {
        cases.extend(push_cases(target));
    }
    cases
}

/// The message push receiver's own: its query (signatures, timestamp, nonce, echostr) and hostile
/// XML (entities, deep nesting, huge bodies), some signed with a fresh timestamp so that they
/// reach the decryption.
fn push_cases(target: &Target) -> Vec<(String, Request)> {
    use lambda_http::RequestExt;
    use wxa_shared::redacted::Secret;
    let token = Secret::new(testkit::PUSH_TOKEN.to_owned());
    let original: BTreeMap<String, String> = event(&target.event)
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let with_query = |query: &BTreeMap<String, String>, body: Option<String>| {
        let mut request = event(&target.event).with_query_string_parameters(
            query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
        if let Some(body) = body {
            *request.body_mut() = Body::Text(body);
        }
        request
    };
    let mut cases = Vec::new();
    for name in [
        "signature",
        "timestamp",
        "nonce",
        "echostr",
        "msg_signature",
        "encrypt_type",
    ] {
        if original.contains_key(name) {
            let mut query = original.clone();
            query.remove(name);
            cases.push((format!("no {name}"), with_query(&query, None)));
            for (label, value) in [
                ("empty", String::new()),
                ("forged", "0".repeat(40)),
                ("injected", "' OR '1'='1".to_owned()),
                ("huge", "9".repeat(10_000)),
                ("unicode", "\u{202e}😀".to_owned()),
            ] {
                let mut query = original.clone();
                query.insert(name.into(), value);
                cases.push((format!("{name} {label}"), with_query(&query, None)));
            }
        }
    }
    // Signed now, so that only what follows the signature can fail.
    let now = wxa_shared::clock::now_unix().to_string();
    let signed = |encrypt: &str| {
        let mut query = original.clone();
        query.insert("timestamp".into(), now.clone());
        query.insert("nonce".into(), "1320562132".into());
        query.insert(
            "signature".into(),
            wxa_shared::push::signature(&token, &now, "1320562132"),
        );
        query.insert(
            "msg_signature".into(),
            wxa_shared::push::msg_signature(&token, &now, "1320562132", encrypt),
        );
        query
    };
    let signed_request = |label: &str, encrypt: &str| {
        let body =
            format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
        (label.to_owned(), with_query(&signed(encrypt), Some(body)))
    };
    if target.method == Method::GET {
        // A fresh, correctly signed check with an echostr that must not be reflected.
        for echostr in ["<script>alert(1)</script>", "a b", "x".repeat(200).as_str()] {
            let mut query = signed("");
            query.insert("echostr".into(), echostr.to_owned());
            cases.push((format!("echostr {echostr:.12}"), with_query(&query, None)));
        }
        return cases;
    }
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    cases.push(signed_request("Encrypt not base64", "%%%%"));
    cases.push(signed_request("Encrypt 16 bytes", &b64(&[7; 16])));
    cases.push(signed_request("Encrypt 32 bytes of garbage", &b64(&[7; 32])));
    cases.push(signed_request("Encrypt 64 bytes of garbage", &b64(&[0; 64])));
    cases.push(signed_request("Encrypt empty", ""));
    for (label, body) in [
        (
            "XML entity bomb",
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><xml><Encrypt>&b;</Encrypt></xml>".to_owned(),
        ),
        (
            "XML external entity",
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>".to_owned(),
        ),
        ("XML undeclared entity", "<xml><Encrypt>&e;</Encrypt></xml>".to_owned()),
        (
            "XML nested 1000 deep",
            format!("<xml>{}x{}</xml>", "<a>".repeat(1000), "</a>".repeat(1000)),
        ),
        (
            "XML 2 MiB",
            format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(2 << 20)),
        ),
        ("XML Encrypt twice", "<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>".to_owned()),
        ("XML two roots", "<xml><Encrypt>a</Encrypt></xml><xml/>".to_owned()),
        ("XML truncated", "<xml><Encrypt>abc".to_owned()),
        ("XML mismatched", "<xml><Encrypt>a</Wrong></xml>".to_owned()),
        ("XML no Encrypt", "<xml><ToUserName>gh_1</ToUserName></xml>".to_owned()),
        ("XML processing instruction", "<?php system('id'); ?><xml/>".to_owned()),
        ("JSON no Encrypt", "{\"ToUserName\":\"gh_1\"}".to_owned()),
        ("JSON Encrypt a number", "{\"Encrypt\":42}".to_owned()),
    ] {
        cases.push((label.into(), with_query(&signed(""), Some(body))));
    }
    cases
}

fn body_text(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn every_function_refuses_hostile_requests_with_a_4xx_json_error() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let token = stack.log_in("o_alice").await;
    let expired = stack.log_in("o_expired").await;
    stack.expire(&expired).await;
    stack.put_order("T20261125000001", "o_alice", 1).await;
    let session_key = stack.sim_session_key("o_alice").await;
    let secrets = [
        session_key.as_str(),
        testkit::PUSH_TOKEN,
        testkit::PUSH_AES_KEY,
        APP_SECRET,
        APIV3_KEY,
        token.as_str(),
        "PRIVATE KEY",
    ];
    // Nothing of our internals either: no ARN, account, table or secret name, no SDK wording.
    let internals: Vec<String> = [
        "arn:",
        "amazonaws",
        "123456789012",
        &stack.table,
        &stack.orders_table,
        &stack.secret_id,
        &stack.pay_secret_id,
        "DynamoDB",
        "dispatch failure",
        "ResourceNotFound",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut total = 0;
    let mut records = Vec::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let targets = targets();
    for target in &targets {
        let cases = hostile_requests(target, &token, &expired);
        assert!(
            cases.len() >= 30,
            "{}: only {} hostile requests",
            target.name,
            cases.len()
        );
        // Open data that does not check out costs the session (5 failures revoke it): the cases
        // that carry the valid token get a live session each time one was spent.
        let mut live = stack.log_in("o_alice").await;
        for (label, mut request) in cases {
            if request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
            {
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {live}").parse().unwrap());
            }
            let response = target.function.handle(&stack.state, request).await;
            let status = response.status();
            let text = body_text(&response);
            let free_text = target
                .free_text
                .iter()
                .any(|field| label.starts_with(&format!("{field} = ")));
            if free_text && status.is_success() {
                records.push(testkit::record(&target.path, target.method.as_str(), &response));
                *codes.entry(format!("{status} (free text)")).or_default() += 1;
                total += 1;
                continue;
            }
            assert!(status.is_client_error(), "{} / {label}: {status} {text}", target.name);
            let code = if text.starts_with("<xml>") {
                assert!(text.contains("FAIL"), "{} / {label}: {text}", target.name);
                "xml FAIL".to_owned()
            } else {
                let json: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{} / {label}: not JSON: {text}", target.name));
                if let Some(error) = json.get("error") {
                    assert!(
                        error["request_id"].is_string(),
                        "{} / {label}: no request_id: {text}",
                        target.name
                    );
                }
                let code = json["error"]["code"].as_str().or(json["code"].as_str());
                code.unwrap_or_else(|| panic!("{} / {label}: no error code: {text}", target.name))
                    .to_owned()
            };
            if matches!(code.as_str(), "invalid_open_data" | "session_key_expired") {
                live = stack.log_in("o_alice").await;
            }
            for secret in &secrets {
                assert!(
                    !text.contains(secret),
                    "{} / {label}: a secret in the body",
                    target.name
                );
            }
            for internal in &internals {
                assert!(
                    !text.contains(internal.as_str()),
                    "{} / {label}: {internal} in the body: {text}",
                    target.name
                );
            }
            *codes.entry(format!("{status} {code}")).or_default() += 1;
            records.push(testkit::record(&target.path, target.method.as_str(), &response));
            total += 1;
        }
    }
    println!("{total} hostile requests, answers: {codes:#?}");
    assert!(total >= 30 * targets.len());
    // Every status and error code answered is documented in openapi.yaml.
    testkit::check_openapi(&records);
}

#[tokio::test]
async fn server_side_failures_name_no_arn_table_or_secret() {
    // A deployment gone wrong: tables and secrets that do not exist, named as ARNs would be.
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let missing = [
        ("SESSIONS_TABLE", "wxa-prod-SessionsTable-1A2B3C4D5E6F"),
        ("ORDERS_TABLE", "wxa-prod-OrdersTable-6F5E4D3C2B1A"),
        (
            "APP_SECRET_ID",
            "arn:aws-cn:secretsmanager:cn-north-1:210987654321:secret:wxa/app-AbCdEf",
        ),
        (
            "PAY_SECRET_ID",
            "arn:aws-cn:secretsmanager:cn-north-1:210987654321:secret:wxa/pay-FeDcBa",
        ),
        (
            "PUSH_SECRET_ID",
            "arn:aws-cn:secretsmanager:cn-north-1:210987654321:secret:wxa/push-AbCdEf",
        ),
    ];
    let mut answered = 0;
    for target in targets() {
        let state = stack.state_with(target.function, &missing);
        let mut request = event(&target.event);
        if target.auth {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let response = target.function.handle(&state, request).await;
        let status = response.status();
        let text = body_text(&response);
        assert!(status.is_server_error(), "{}: {status} {text}", target.name);
        for (_, name) in &missing {
            assert!(!text.contains(name), "{}: {name} in {text}", target.name);
        }
        for internal in [
            "arn:",
            "210987654321",
            "SessionsTable",
            "secretsmanager",
            "ResourceNotFound",
        ] {
            assert!(!text.contains(internal), "{}: {internal} in {text}", target.name);
        }
        if target.path != "/pay/notify" {
            let json: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["error"]["code"], "server_misconfigured", "{}: {text}", target.name);
            assert!(
                json["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{text}"
            );
        }
        answered += 1;
    }
    assert_eq!(answered, targets().len());
}

/// What an op of the back office may answer to a command that is not what it should be: a clear
/// refusal, never a server error.
const COMMAND_REFUSALS: &[&str] = &[
    "unknown_op",
    "invalid_command",
    "order_not_found",
    "refund_not_found",
    "order_not_paid",
    "order_not_refundable",
    "order_not_payable",
    "order_conflict",
    "refund_conflict",
    "refund_exceeds_paid",
    "no_subscription_left",
    "transfer_not_found",
    "transfer_conflict",
    "transfer_not_cancellable",
    "reply_window_closed",
    "reply_limit_reached",
    "typing_needs_recent_message",
];

#[tokio::test]
async fn every_merchant_op_refuses_malformed_commands_with_a_clear_error() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    // A paid order of this merchant, and a valid command of each op to mutate.
    stack.paid_order("T20261126000001", "o_alice", 100, false).await;
    let valid: Vec<Value> = vec![
        json!({"op": "create_order", "out_trade_no": "T20261126000002", "openid": "o_alice", "description": "tea", "amount_total": 1}),
        json!({"op": "get_order", "out_trade_no": "T20261126000001"}),
        json!({"op": "close_order", "out_trade_no": "T20261126000001"}),
        json!({"op": "refund", "out_trade_no": "T20261126000001", "out_refund_no": "R1", "amount": 1}),
        json!({"op": "get_refund", "out_refund_no": "R1"}),
        json!({"op": "create_transfer", "out_bill_no": "B20261126000001", "openid": "o_alice", "amount": 100,
               "scene_id": "1000", "remark": "tea", "report_infos": [{"info_type": "活动名称", "info_content": "tea"}]}),
        json!({"op": "get_transfer", "out_bill_no": "B20261126000001"}),
        json!({"op": "cancel_transfer", "out_bill_no": "B20261126000001"}),
        json!({"op": "upload_shipping", "out_trade_no": "T20261126000001", "logistics_type": 1, "delivery_mode": 1,
               "shipping_list": [{"tracking_no": "SF1", "express_company": "SF", "item_desc": "tea"}]}),
        json!({"op": "get_shipping_state", "out_trade_no": "T20261126000001"}),
        json!({"op": "notify_confirm_receive", "out_trade_no": "T20261126000001"}),
        json!({"op": "send_subscribe_message", "openid": "o_alice", "template_id": "tpl_order_paid",
               "data": {"thing1": {"value": "tea"}}}),
        json!({"op": "get_subscription", "openid": "o_alice", "template_id": "tpl_order_paid"}),
        json!({"op": "generate_url_link", "path": "pages/index/index", "query": "a=1"}),
        json!({"op": "generate_scheme", "path": "pages/index/index"}),
        json!({"op": "generate_short_link", "page_url": "pages/index/index?a=1"}),
        json!({"op": "user_risk_rank", "openid": "o_alice", "scene": 0, "client_ip": "203.0.113.7"}),
        json!({"op": "get_conversation", "openid": "o_alice"}),
        json!({"op": "send_customer_message", "openid": "o_alice", "msgtype": "text", "text": {"content": "hi"}}),
        json!({"op": "set_typing", "openid": "o_alice", "typing": true}),
        json!({"op": "upload_temp_media", "content_base64": "iVBORw0KGgo="}),
    ];
    let ops: Vec<&str> = wxa_shared::handlers::merchant::FUNCTION
        .ops()
        .iter()
        .map(|op| op.name)
        .collect();
    assert_eq!(
        valid.iter().map(|c| c["op"].as_str().unwrap()).collect::<Vec<_>>(),
        ops,
        "one valid command per op"
    );
    let mut total = 0;
    for command in &valid {
        let op = command["op"].as_str().unwrap();
        let mut cases: Vec<(String, Value)> = vec![
            ("not an object".into(), json!([command])),
            ("a string".into(), json!(op)),
            ("null".into(), Value::Null),
            ("op in another case".into(), json!({"op": op.to_uppercase()})),
            ("op mistyped".into(), json!({"op": 7})),
            ("op alone".into(), json!({"op": op})),
            ("empty object".into(), json!({})),
            ("op with a space".into(), json!({"op": format!(" {op}")})),
            ("op with a NUL".into(), json!({"op": format!("{op}\u{0}")})),
            ("op as an object".into(), json!({"op": {"name": op}})),
            ("deep nesting".into(), {
                let mut deep = json!(1);
                for _ in 0..64 {
                    deep = json!([deep]);
                }
                let mut c = command.clone();
                c["nested"] = deep;
                c
            }),
            ("the command as a JSON string".into(), json!(command.to_string())),
            ("a JSON number".into(), json!(42)),
            (
                "fields twice".into(),
                json!({"op": op, "out_trade_no": ["T20261126000001", "T20261126000001"]}),
            ),
            ("extra field".into(), {
                let mut c = command.clone();
                c["is_admin"] = json!(true);
                c
            }),
        ];
        let fields: Vec<String> = command
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "op")
            .cloned()
            .collect();
        for field in &fields {
            let with = |value: Value| {
                let mut c = command.clone();
                c[field.as_str()] = value;
                c
            };
            let mut without = command.clone();
            without.as_object_mut().unwrap().remove(field.as_str());
            cases.push((format!("{field} missing"), without));
            cases.push((format!("{field} null"), with(Value::Null)));
            cases.push((format!("{field} object"), with(json!({"$ne": null}))));
            cases.push((format!("{field} array"), with(json!(["x"]))));
            cases.push((format!("{field} negative"), with(json!(-1))));
            cases.push((format!("{field} float"), with(json!(0.5))));
            cases.push((format!("{field} huge"), with(json!(u64::MAX))));
            for injection in INJECTIONS {
                cases.push((format!("{field} = {injection:.12}"), with(json!(injection))));
            }
            for op_injection in INJECTIONS.iter().take(2) {
                cases.push((format!("op = {op_injection:.12}"), json!({"op": op_injection})));
            }
            cases.push((format!("{field} 5000 chars"), with(json!("A".repeat(5000)))));
            // An id that is not this merchant's (unknown here).
            cases.push((format!("{field} other id"), with(json!("T_OTHER_MCH_999"))));
        }
        assert!(cases.len() >= 30, "{op}: only {} cases", cases.len());
        for (label, case) in cases {
            let answer = wxa_shared::handlers::merchant::FUNCTION
                .invoke(&stack.state, case, &lambda_http::Context::default())
                .await;
            let text = answer.to_string();
            if let Some(error) = answer.get("error") {
                let code = error["code"].as_str().unwrap_or_default();
                assert!(COMMAND_REFUSALS.contains(&code), "{op} / {label}: {text}");
            } else {
                // A mutation can still be a valid command (another description, say).
                assert!(answer.get("ok").is_some(), "{op} / {label}: {text}");
            }
            for secret in [
                APP_SECRET,
                APIV3_KEY,
                "PRIVATE KEY",
                "arn:",
                stack.orders_table.as_str(),
            ] {
                assert!(!text.contains(secret), "{op} / {label}: {secret} in {text}");
            }
            total += 1;
        }
    }
    println!("{total} malformed commands");
}
