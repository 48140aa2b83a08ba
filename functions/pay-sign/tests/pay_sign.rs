//! End to end: `POST /pay/sign` against the simulated WeChat Pay (APIv3 and APIv2) and the
//! orders table on moto.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use testkit::{APIV2_KEY, APP_ID, MerchantKeys, Stack, authed_event, read};
use wxa_shared::config::PayApi;
use wxa_shared::handlers::pay_sign;
use wxa_shared::pay::v2::SignType;

const ORDER: &str = "T20261125000001";

async fn sign(stack: &Stack, token: &str, body: Option<Value>) -> (u16, Value) {
    read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", token, body.as_ref()))
            .await,
    )
}

/// Checks a v3 paySign with the merchant's public key, independently of the server's code.
fn assert_v3_pay_sign(keys: &MerchantKeys, params: &Value) {
    let message = format!(
        "{APP_ID}\n{}\n{}\n{}\n",
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        params["package"].as_str().unwrap()
    );
    let signature = STANDARD.decode(params["paySign"].as_str().unwrap()).unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &keys.public_key_der)
        .verify(message.as_bytes(), &signature)
        .expect("paySign verifies with the merchant's public key");
}

async fn ready(api: PayApi, v2_sign_type: SignType) -> (Stack, MerchantKeys, String) {
    let stack = Stack::start_with(|c| {
        let pay = c.pay.as_mut().expect("the test stack pays");
        pay.api = api;
        pay.v2_sign_type = v2_sign_type;
    })
    .await;
    let keys = stack.enable_pay().await;
    let token = stack.log_in("o_alice").await;
    stack.put_order(ORDER, "o_alice", 1).await;
    (stack, keys, token)
}

#[tokio::test]
async fn v3_gives_request_payment_params_and_reuses_the_prepay_id() {
    let (stack, keys, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    let (status, params) = sign(&stack, &token, None).await;
    assert_eq!(status, 200, "{params}");
    assert_eq!(params["signType"], "RSA");
    let package = params["package"].as_str().unwrap();
    assert!(package.starts_with("prepay_id=wx"), "{package}");
    assert!(
        params["timeStamp"].as_str().unwrap().parse::<u64>().is_ok(),
        "timeStamp is a string of seconds"
    );
    assert!(params["nonceStr"].as_str().unwrap().len() <= 32);
    assert_v3_pay_sign(&keys, &params);
    let order = stack.order(ORDER).await;
    assert_eq!(format!("prepay_id={}", order["prepay_id"].as_s().unwrap()), package);
    assert_eq!(order["status"].as_s().unwrap(), "UNPAID");

    // Again: the stored prepay_id is reused, WeChat Pay is not asked twice.
    stack.aws_calls.take();
    let (status, again) = sign(&stack, &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(again["package"], package);
    assert_ne!(again["nonceStr"], params["nonceStr"]);
    assert_v3_pay_sign(&keys, &again);
    assert_eq!(stack.sim_calls("pay_jsapi").await, 1);
    assert_eq!(
        stack.aws_calls.take(),
        ["DynamoDB.GetItem", "DynamoDB.GetItem"],
        "session + order, nothing else"
    );
}

#[tokio::test]
async fn v2_signs_with_md5_and_hmac_sha256() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let (stack, _, token) = ready(PayApi::V2, sign_type).await;
        let (status, params) = sign(&stack, &token, None).await;
        assert_eq!(status, 200, "{params}");
        assert_eq!(params["signType"], sign_type.as_str());
        // Independently: appId, nonceStr, package, signType, timeStamp sorted, then &key=.
        let text = format!(
            "appId={APP_ID}&nonceStr={}&package={}&signType={}&timeStamp={}&key={APIV2_KEY}",
            params["nonceStr"].as_str().unwrap(),
            params["package"].as_str().unwrap(),
            params["signType"].as_str().unwrap(),
            params["timeStamp"].as_str().unwrap()
        );
        let expected = match sign_type {
            SignType::Md5 => {
                use md5::Digest;
                hex::encode_upper(md5::Md5::digest(text.as_bytes()))
            }
            SignType::HmacSha256 => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, APIV2_KEY.as_bytes());
                hex::encode_upper(aws_lc_rs::hmac::sign(&key, text.as_bytes()).as_ref())
            }
        };
        assert_eq!(params["paySign"], expected.as_str());
        assert_eq!(stack.sim_calls("pay_unifiedorder").await, 1);
        assert_eq!(stack.order(ORDER).await["pay_api"].as_s().unwrap(), "v2");
    }
}

#[tokio::test]
async fn orders_that_are_not_the_callers_to_pay_are_refused() {
    let (stack, _, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    stack.put_order("T_BOB_000001", "o_bob", 100).await;
    let cases = [
        // Another user's order is answered exactly as an unknown one.
        (json!({"out_trade_no": "T_BOB_000001"}), 404, "order_not_found"),
        (json!({"out_trade_no": "T_NOBODY_0001"}), 404, "order_not_found"),
        (json!({"out_trade_no": "T1"}), 400, "invalid_request"),
        (json!({"out_trade_no": "T 2026 1125"}), 400, "invalid_request"),
        (json!({"out_trade_no": ORDER, "amount": 1}), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = sign(&stack, &token, Some(body.clone())).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (_, bobs) = sign(&stack, &token, Some(json!({"out_trade_no": "T_BOB_000001"}))).await;
    let (_, nobodys) = sign(&stack, &token, Some(json!({"out_trade_no": "T_NOBODY_0001"}))).await;
    assert_eq!(bobs["error"]["message"], nobodys["error"]["message"]);
    // Paid already.
    stack
        .dynamodb()
        .update_item()
        .table_name(&stack.orders_table)
        .key("out_trade_no", aws_sdk_dynamodb::types::AttributeValue::S(ORDER.into()))
        .update_expression("SET #s = :paid")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":paid", aws_sdk_dynamodb::types::AttributeValue::S("PAID".into()))
        .send()
        .await
        .unwrap();
    let (got, answer) = sign(&stack, &token, None).await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (409, Some("order_already_paid"))
    );
    assert_eq!(stack.sim_calls("pay_jsapi").await, 0);
}

#[tokio::test]
async fn wechat_pay_failures_are_clear_and_store_nothing() {
    let (stack, _, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    stack
        .sim_post(
            "/__sim/faults",
            json!({"api": "pay_jsapi", "http_status": 500, "count": 2}),
        )
        .await;
    let (status, answer) = sign(&stack, &token, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("wechatpay_unavailable")),
        "{answer}"
    );
    assert_eq!(
        stack.sim_calls("pay_jsapi").await,
        2,
        "one retry: the order request is idempotent"
    );

    stack
        .sim_post("/__sim/faults", json!({"api": "pay_jsapi", "bad_signature": true}))
        .await;
    let (status, answer) = sign(&stack, &token, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("wechatpay_signature_invalid")),
        "{answer}"
    );
    assert!(
        !stack.order(ORDER).await.contains_key("prepay_id"),
        "an unverified prepay_id is not stored"
    );

    // Recovers.
    assert_eq!(sign(&stack, &token, None).await.0, 200);
}

#[tokio::test]
async fn a_request_wechat_pay_refuses_to_verify_is_sign_error() {
    let (stack, _, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    // WeChat Pay knows another public key for this merchant: our Authorization fails there.
    let other = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    let der: PublicKeyX509Der = other.public_key().as_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der.as_ref())
    );
    stack
        .sim_post(
            "/__sim/pay/merchant",
            json!({"mchid": testkit::MCHID, "serial_no": testkit::MERCHANT_SERIAL, "public_key": pem,
                   "apiv3_key": testkit::APIV3_KEY, "apiv2_key": APIV2_KEY}),
        )
        .await;
    let (status, answer) = sign(&stack, &token, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("wechatpay_rejected")),
        "{answer}"
    );
    // WeChat Pay's own code and message are for the operator's log, not the client.
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("operator") && !message.contains("SIGN_ERROR"),
        "{answer}"
    );
}

#[tokio::test]
async fn without_pay_keys_the_operator_is_told() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack.put_order(ORDER, "o_alice", 1).await;
    let (status, answer) = sign(&stack, &token, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (500, Some("server_misconfigured")),
        "{answer}"
    );
    assert!(answer["error"]["message"].as_str().unwrap().contains("operator"));
    assert!(!answer.to_string().contains(&stack.pay_secret_id), "{answer}");
}

#[tokio::test]
async fn fifty_concurrent_calls_agree_on_one_prepay_id() {
    let (stack, keys, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    let calls = (0..50).map(|_| sign(&stack, &token, None));
    let answers = futures_join_all(calls).await;
    let packages: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, params)| {
            assert_eq!(*status, 200, "{params}");
            assert_v3_pay_sign(&keys, params);
            params["package"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(packages.len(), 1, "every caller pays with the same prepay_id");
    let stored = format!("prepay_id={}", stack.order(ORDER).await["prepay_id"].as_s().unwrap());
    assert!(packages.contains(&stored));
}

/// Runs futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("all ready")).collect()
}

/// During WeChat Pay's switch from platform certificates to its public key, answers arrive
/// signed under either id; the merchant configures both, and each answer is verified by the key
/// its `Wechatpay-Serial` names. A serial the merchant has not configured is refused: nothing of
/// that answer is used or stored.
#[tokio::test]
async fn answers_signed_under_either_key_of_a_switch_are_verified_by_the_serial_they_name() {
    let (stack, _, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    for (i, serial) in ["certificate", "public_key"].into_iter().enumerate() {
        let signer = stack.sim_post("/__sim/pay/signer", json!({"serial": serial})).await;
        let no = format!("T_SWITCH_{i:05}");
        stack.put_order(&no, "o_alice", 1).await;
        let (status, params) = sign(&stack, &token, Some(json!({"out_trade_no": no}))).await;
        assert_eq!(status, 200, "{signer}: {params}");
        assert!(stack.order(&no).await.contains_key("prepay_id"), "{signer}");
    }
    // A key this merchant does not have (a new certificate not yet in the pay secret).
    stack
        .sim_post("/__sim/pay/signer", json!({"serial": "alternate"}))
        .await;
    stack.put_order("T_SWITCH_00009", "o_alice", 1).await;
    let (status, answer) = sign(&stack, &token, Some(json!({"out_trade_no": "T_SWITCH_00009"}))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("wechatpay_signature_invalid")),
        "{answer}"
    );
    assert!(!stack.order("T_SWITCH_00009").await.contains_key("prepay_id"));
}

/// A function that forgets to declare a part its handler uses fails its tests, even against the
/// test stack's state (which holds every part), as it would fail in production: the state
/// refuses a part the running function did not declare.
#[tokio::test]
async fn a_function_that_forgets_a_part_it_uses_fails_here_not_in_production() {
    let (stack, _keys, token) = ready(PayApi::V3, SignType::HmacSha256).await;
    let forgetful = wxa_shared::function::Function {
        name: "pay-sign",
        parts: wxa_shared::config::Parts {
            pay: false,
            pay_orders: false,
            ..pay_sign::FUNCTION.parts
        },
        ..pay_sign::FUNCTION
    };
    let (status, body) = read(
        &forgetful
            .handle(&stack.state, authed_event("pay-sign.json", &token, None))
            .await,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("server_misconfigured")),
        "{body}"
    );
    // The same request, the same state: the function as declared pays.
    let (status, body) = sign(&stack, &token, None).await;
    assert_eq!(status, 200, "{body}");
}
