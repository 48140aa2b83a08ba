//! Warm CPU of each piece of work a function does per request, remote I/O excluded (criterion).
//!
//!     cargo bench -p wxa-shared --bench warm        (or `make bench`, which also runs wechatpy)
//!
//! `handler/*`: an API Gateway event as Lambda delivers it (JSON text) → lambda_http's request →
//! the handler's work after the session lookup (parse body, decrypt, check the watermark, build
//! the answer) → the API Gateway response as JSON text: what a warm container does per request
//! besides the DynamoDB read. `for_session/*`: the handler's own part alone. `event_parse/*`:
//! lambda_http's event → request alone. `crypto/*`: the primitives. The payloads are written to `target/bench/opendata-payloads.json` so that
//! `scripts/bench_wechatpy.py` times wechatpy on the very same bytes.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Body, LambdaEvent, Request, Response, Service, service_fn};
use serde_json::{Value, json};
use wxa_shared::clock::now_unix;
use wxa_shared::pay::keys::{SigningKey, VerifyingKey};
use wxa_shared::redacted::Secret;
use wxa_shared::store::sessions::Session;
use wxa_shared::{AppState, Config, handlers, opendata, pay};

const APP_ID: &str = "wx4f4bc4dec97d474b";
const OPENID: &str = "o_bench_user";
const IV: [u8; 16] = [7; 16];

/// Runs a future that never waits (no I/O on these paths) to completion.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked path waited on I/O"),
    }
}

fn state() -> &'static AppState {
    // Watermark age check off: a bench run may outlast the 300 s default with the same payloads.
    let vars = [
        ("APP_ID", APP_ID),
        ("SESSIONS_TABLE", "sessions"),
        ("APP_SECRET_ID", "wxa/app"),
        ("WATERMARK_MAX_AGE_SECS", "0"),
    ];
    // The parts the four open-data functions share.
    let parts = handlers::werun::FUNCTION.parts;
    let config = Config::from_lookup(parts, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::Bundled);
    // Clients that are never called on the benchmarked paths.
    let http = wxa_shared::net::aws::sdk_http_client(&tls);
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .http_client(http.clone())
            .build(),
    );
    let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .http_client(http)
            .build(),
    );
    Box::leak(Box::new(AppState::from_clients(config, dynamodb, secretsmanager, &tls)))
}

/// Open data as the WeChat client seals it, for the session key of the bench user.
fn seal(session_key: &str, data: Value) -> Value {
    let mut data = data;
    data["watermark"] = json!({"appid": APP_ID, "timestamp": now_unix()});
    let sealed = wechat_sim::crypto::encrypt(session_key, &IV, data.to_string().as_bytes()).unwrap();
    json!({"encryptedData": sealed, "iv": STANDARD.encode(IV)})
}

/// The four open-data requests, as (function, event JSON text, plaintext-free request body).
fn payloads(session_key: &str) -> Vec<(&'static str, String, Value)> {
    let today = now_unix() / 86_400 * 86_400;
    let steps: Vec<Value> = (0..31)
        .map(|d| json!({"timestamp": today - d * 86_400, "step": 4000 + d * 37}))
        .collect();
    let profile = json!({
        "openId": OPENID, "nickName": "Band", "gender": 1, "language": "zh_CN", "city": "Guangzhou",
        "province": "Guangdong", "country": "CN", "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0",
    });
    let raw_data = json!({"nickName": "Band", "gender": 1, "language": "zh_CN", "city": "Guangzhou",
        "province": "Guangdong", "country": "CN", "avatarUrl": profile["avatarUrl"]})
    .to_string();
    let signature = opendata_signature(&raw_data, &Secret::new(session_key));
    let mut user_info = seal(session_key, profile);
    user_info["rawData"] = json!(raw_data);
    user_info["signature"] = json!(signature);
    let bodies = [
        (
            "decrypt-phone",
            seal(
                session_key,
                json!({"phoneNumber": "+86 13800138000", "purePhoneNumber": "13800138000", "countryCode": "86"}),
            ),
        ),
        ("werun", seal(session_key, json!({"stepInfoList": steps}))),
        (
            "share-info",
            seal(session_key, json!({"openGId": "GVbKl0xHHtS0iErWPVHvxSLvNsXM"})),
        ),
        ("user-info", user_info),
    ];
    bodies
        .into_iter()
        .map(|(function, body)| {
            let path = wxa_shared_root().join(format!("events/{function}.json"));
            let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            event["body"] = json!(body.to_string());
            (function, event.to_string(), body)
        })
        .collect()
}

fn wxa_shared_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

type ForSession = for<'a> fn(
    &'a AppState,
    &'a Session,
    &'a Request,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<Response<Body>, wxa_shared::ApiError>> + Send + 'a>,
>;

fn for_session_of(function: &str) -> ForSession {
    match function {
        "decrypt-phone" => |s, session, r| Box::pin(handlers::decrypt_phone::phone(s, session, r)),
        "werun" => |s, session, r| Box::pin(handlers::werun::werun(s, session, r)),
        "share-info" => |s, session, r| Box::pin(handlers::share_info::share_info(s, session, r)),
        "user-info" => |s, session, r| Box::pin(handlers::user_info::user_info(s, session, r)),
        other => panic!("no handler {other}"),
    }
}

fn handlers(c: &mut Criterion) {
    let state = state();
    let session_key = wechat_sim::crypto::new_session_key();
    let session: &'static Session = Box::leak(Box::new(Session {
        token_hash: "bench".into(),
        openid: OPENID.into(),
        unionid: None,
        session_key: Secret::new(&session_key),
        created_at: now_unix(),
        expires_at: now_unix() + 3600,
    }));
    let payloads = payloads(&session_key);
    let out = wxa_shared_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let record: Vec<Value> = payloads
        .iter()
        .map(|(f, event, body)| json!({"function": f, "event": event, "body": body}))
        .collect();
    std::fs::write(
        out.join("opendata-payloads.json"),
        serde_json::to_string_pretty(&json!({"app_id": APP_ID, "session_key": session_key, "payloads": record}))
            .unwrap(),
    )
    .unwrap();

    for (function, event, _) in &payloads {
        let for_session = for_session_of(function);
        // The whole warm path but the DynamoDB read, as lambda_http runs it.
        let mut adapter = Adapter::from(service_fn(move |req: Request| async move {
            let response = for_session(state, session, &req).await;
            Ok::<_, lambda_http::Error>(response.unwrap_or_else(|e| e.into_response("bench")))
        }));
        let answer = |adapter: &mut Adapter<'_, _, _>, event: &str| {
            let payload: LambdaRequest = serde_json::from_str(event).unwrap();
            let response = now(adapter.call(LambdaEvent::new(payload, lambda_http::Context::default()))).unwrap();
            serde_json::to_vec(&response).unwrap()
        };
        let sample: Value = serde_json::from_slice(&answer(&mut adapter, event)).unwrap();
        assert_eq!(sample["statusCode"], 200, "{function}: {sample}");
        c.bench_function(&format!("handler/{function}"), |b| {
            b.iter(|| answer(&mut adapter, black_box(event)))
        });
        c.bench_function(&format!("event_parse/{function}"), |b| {
            b.iter(|| lambda_http::request::from_str(black_box(event)).unwrap())
        });
        let request = lambda_http::request::from_str(event).unwrap();
        c.bench_function(&format!("for_session/{function}"), |b| {
            b.iter(|| now(for_session(state, session, black_box(&request))).unwrap())
        });
    }
}

fn crypto(c: &mut Criterion) {
    // The sample published with WeChat's decryption docs (also in the fuzz corpus).
    let doc = std::fs::read_to_string(wxa_shared_root().join("shared/tests/fuzz-corpus/opendata/doc-sample")).unwrap();
    let doc_data = doc.lines().nth(1).unwrap().to_owned();
    let doc_key = Secret::new("tiihtNczf5v6AKRyjwEUhQ==");
    let doc_iv = "r7BXXKkLb8qrSNn05n0qiA==";
    c.bench_function("crypto/opendata_decrypt_doc_sample", |b| {
        b.iter(|| opendata::decrypt(&doc_key, black_box(&doc_data), doc_iv).unwrap())
    });
    c.bench_function("crypto/opendata_open_doc_sample", |b| {
        b.iter(|| {
            opendata::open::<serde_json::Map<String, Value>>(
                &doc_key,
                black_box(&doc_data),
                doc_iv,
                "wx4f4bc4dec97d474b",
                None,
                1_477_314_187,
            )
            .unwrap()
        })
    });
    let raw = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
    let sig = opendata_signature(raw, &doc_key);
    c.bench_function("crypto/rawdata_signature_check", |b| {
        b.iter(|| assert!(opendata::verify_signature(black_box(raw), &doc_key, &sig)))
    });
    c.bench_function("crypto/login_token_hash", |b| {
        b.iter(|| wxa_shared::store::sessions::token_hash(black_box("d2h5LWFyZS15b3UtcmVhZGluZy10aGlzLWJlbmNobWFyaw")))
    });
    c.bench_function("crypto/session_signature_hmac_sha256", |b| {
        b.iter(|| wxa_shared::wechat::session_signature(black_box(&doc_key)))
    });
    c.bench_function("crypto/card_signature_sha1", |b| {
        b.iter(|| {
            wxa_shared::card::card_ext(
                &doc_key,
                black_box("pFS7Fjg8kV1IdDz01r4SQwMkuCKc"),
                None,
                Some(OPENID),
                1_795_608_000,
                "Yd3nLo9dK3hB",
            )
        })
    });

    let sim = wxa_shared_root().join("tools/wechat-sim/src");
    let private = std::fs::read_to_string(sim.join("platform_key.pem")).unwrap();
    let public = std::fs::read_to_string(sim.join("platform_public.pem")).unwrap();
    let signing = SigningKey::from_pem(&private).unwrap();
    let verifying = VerifyingKey::from_pem(&public).unwrap();
    let package = "prepay_id=wx201410272009395522657a690389285100";
    c.bench_function("crypto/pay_v3_paysign_rsa2048", |b| {
        b.iter(|| {
            pay::v3::pay_sign(
                &signing,
                APP_ID,
                "1795608000",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                black_box(package),
            )
        })
    });
    let apiv3_key = "0123456789abcdef0123456789abcdef";
    let resource = br#"{"mchid":"1230000109","appid":"wx4f4bc4dec97d474b","out_trade_no":"T20261125000001","transaction_id":"4200000000202611250000000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"ok","bank_type":"OTHERS","success_time":"2026-11-25T12:00:00+08:00","payer":{"openid":"o_bench_user"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;
    let ciphertext = pay::v3::encrypt_resource(apiv3_key, "fdasflkja484", "transaction", resource).unwrap();
    let body = json!({"id": "EV-2018022511223320873", "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource",
        "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext, "nonce": "fdasflkja484", "associated_data": "transaction"}})
    .to_string();
    let timestamp = now_unix().to_string();
    let signature = signing.sign(format!("{timestamp}\nnonce-bench\n{body}\n").as_bytes());
    let headers = pay::v3::SignedHeaders {
        timestamp: Some(&timestamp),
        nonce: Some("nonce-bench"),
        signature: Some(&signature),
        serial: Some("PUB_KEY_ID_BENCH"),
    };
    let apiv3 = Secret::new(apiv3_key);
    c.bench_function("crypto/pay_v3_notify_verify_and_decrypt", |b| {
        b.iter(|| {
            pay::v3::verify_signed(
                &headers,
                black_box(body.as_bytes()),
                [("PUB_KEY_ID_BENCH", &verifying)],
                now_unix(),
            )
            .unwrap();
            pay::v3::decrypt_resource(&apiv3, "fdasflkja484", "transaction", &ciphertext).unwrap()
        })
    });
    let fields: BTreeMap<String, String> = [
        ("appid", APP_ID),
        ("mch_id", "1230000109"),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("body", "wxa-serverless order"),
        ("out_trade_no", "T20261125000001"),
        ("total_fee", "100"),
        ("spbill_create_ip", "203.0.113.7"),
        ("notify_url", "https://example.com/pay/notify"),
        ("trade_type", "JSAPI"),
        ("openid", OPENID),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let v2_key = Secret::new("192006250b4c09247ec02edce69f6a2d");
    for sign_type in [pay::v2::SignType::Md5, pay::v2::SignType::HmacSha256] {
        c.bench_function(&format!("crypto/pay_v2_sign_{}", sign_type.as_str()), |b| {
            b.iter(|| pay::v2::sign(black_box(&fields), &v2_key, sign_type))
        });
    }
}

fn opendata_signature(raw: &str, key: &Secret) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(format!("{raw}{}", key.expose()).as_bytes()))
}

criterion_group!(benches, handlers, crypto);
criterion_main!(benches);
