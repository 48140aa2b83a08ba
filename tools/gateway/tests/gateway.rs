//! The gateway, with the routes of the real `template.yaml`, against a stand-in for `cargo lambda
//! watch`'s Lambda Invoke endpoint that records each invocation and answers a canned payload.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wxa_gateway::routes::Routes;
use wxa_gateway::{Gateway, serve};

fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(testkit::template)
}

struct Invoked {
    function: String,
    headers: HeaderMap,
    payload: Bytes,
}

type Received = Arc<Mutex<Vec<Invoked>>>;

/// The stand-in's invocations so far, and its URL.
struct Lambda {
    url: String,
    received: Received,
}

impl Lambda {
    /// Answers every invocation with `status` and `answer`, after `delay`.
    async fn start(status: u16, answer: Value, delay: Duration) -> Lambda {
        let received = Received::default();
        let invoke = move |Path(function): Path<String>, State(received): State<Received>, headers, payload| async move {
            received.lock().unwrap().push(Invoked {
                function,
                headers,
                payload,
            });
            tokio::time::sleep(delay).await;
            (StatusCode::from_u16(status).unwrap(), answer.to_string())
        };
        let app = Router::new()
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .with_state(received.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Lambda { url, received }
    }

    fn events(&self) -> Vec<(String, Value)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|i| (i.function.clone(), serde_json::from_slice(&i.payload).unwrap()))
            .collect()
    }
}

/// A gateway in front of `lambda_url`; its base URL.
async fn gateway(lambda_url: &str, invoke_timeout: Duration) -> String {
    let routes = Routes::from_template(template()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gateway = Gateway {
        routes,
        lambda_url: lambda_url.to_owned(),
        invoke_timeout,
    };
    tokio::spawn(serve(listener, gateway));
    url
}

/// POST `path` without a body through a gateway in front of `lambda_url`.
async fn post_through(lambda_url: &str, invoke_timeout: Duration, path: &str) -> reqwest::Response {
    let api = gateway(lambda_url, invoke_timeout).await;
    reqwest::Client::new()
        .post(format!("{api}{path}"))
        .send()
        .await
        .unwrap()
}

/// The canned payload 2.0 answer: every field the gateway maps.
fn answer() -> Value {
    json!({
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-one": "1", "content-length": "999"},
        "multiValueHeaders": {"x-many": ["a", "b"]},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": B64.encode(b"\x00\x9f\x92\x96\xff"),
        "isBase64Encoded": true
    })
}

const TIMEOUT: Duration = Duration::from_secs(10);

async fn error_of(response: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn every_http_api_event_of_the_template_is_a_route() {
    let mut in_template = BTreeSet::new();
    for resource in template()["Resources"].as_object().unwrap().values() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let function = resource["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
        for event in resource["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flat_map(|e| e.values())
        {
            if event["Type"] == "HttpApi" {
                let key = format!(
                    "{} {}",
                    event["Properties"]["Method"].as_str().unwrap(),
                    event["Properties"]["Path"].as_str().unwrap()
                );
                in_template.insert((key, function.to_owned()));
            }
        }
    }
    let routes = Routes::from_template(template()).unwrap();
    assert!(in_template.len() >= 12, "{in_template:?}");
    assert_eq!(routes.len(), in_template.len());
    let gateway: BTreeSet<(String, String)> = routes.iter().map(|r| (r.key(), r.function.clone())).collect();
    assert_eq!(gateway, in_template);
}

#[tokio::test]
async fn a_request_becomes_the_payload_2_event_api_gateway_sends() {
    let lambda = Lambda::start(200, answer(), Duration::ZERO).await;
    let api = gateway(&lambda.url, TIMEOUT).await;
    let client = reqwest::Client::new();
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();

    let response = client
        .post(format!("{api}/pay/sign?b=2&a=1&a=3&q=x%20y"))
        .header("Content-Type", "application/json")
        .header("X-Custom", "one")
        .header("X-Custom", "two")
        .header("Cookie", "a=1; b=2")
        .header("User-Agent", "demo/1")
        .body(&b"\xff\xfe"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let api_request_id = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();

    let events = lambda.events();
    let (function, event) = &events[0];
    assert_eq!(function, "pay-sign");
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /pay/sign");
    assert_eq!(event["rawPath"], "/pay/sign");
    assert_eq!(event["rawQueryString"], "b=2&a=1&a=3&q=x%20y");
    assert_eq!(
        event["queryStringParameters"],
        json!({"a": "1,3", "b": "2", "q": "x y"})
    );
    let headers = event["headers"].as_object().unwrap();
    assert!(headers.keys().all(|k| *k == k.to_lowercase()), "{headers:?}");
    assert_eq!(headers["x-custom"], "one,two");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(!headers.contains_key("cookie"), "cookies move to their own field");
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], "//4=");
    assert_eq!(B64.decode(event["body"].as_str().unwrap()).unwrap(), b"\xff\xfe");
    assert!(event.get("pathParameters").is_none());

    let context = &event["requestContext"];
    assert_eq!(context["http"]["method"], "POST");
    assert_eq!(context["http"]["path"], "/pay/sign");
    assert_eq!(context["http"]["protocol"], "HTTP/1.1");
    assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["http"]["userAgent"], "demo/1");
    assert_eq!(context["routeKey"], "POST /pay/sign");
    assert_eq!(context["stage"], "$default");
    assert_eq!(context["requestId"], api_request_id.as_str());
    assert_eq!(context["domainName"], "127.0.0.1");
    for field in ["accountId", "apiId", "domainPrefix"] {
        assert!(!context[field].as_str().unwrap().is_empty(), "{field}");
    }
    let epoch = u128::from(context["timeEpoch"].as_u64().unwrap());
    assert!(epoch >= before && epoch < before + 60_000, "{epoch}");
    let time = context["time"].as_str().unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    let lambda_id = lambda.received.lock().unwrap()[0].headers["lambda-runtime-aws-request-id"].clone();
    assert_eq!(lambda_id.len(), 36, "a UUID: {lambda_id:?}");

    // Text stays text; no body, no query and no cookies leave their fields out; ids differ.
    client
        .post(format!("{api}/login"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"code":"é"}"#)
        .send()
        .await
        .unwrap();
    client.get(format!("{api}/session")).send().await.unwrap();
    let events = lambda.events();
    let (function, login) = &events[1];
    assert_eq!(
        (function.as_str(), &login["routeKey"]),
        ("login", &json!("POST /login"))
    );
    assert_eq!(login["body"], r#"{"code":"é"}"#);
    assert_eq!(login["isBase64Encoded"], false);
    let (function, session) = &events[2];
    assert_eq!(
        (function.as_str(), &session["routeKey"]),
        ("session", &json!("GET /session"))
    );
    assert_eq!(session["rawQueryString"], "");
    for absent in ["body", "queryStringParameters", "cookies"] {
        assert!(session.get(absent).is_none(), "{absent}: {session}");
    }
    assert_eq!(session["isBase64Encoded"], false);
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|(_, e)| e["requestContext"]["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "one request id per request");
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let lambda = Lambda::start(200, answer(), Duration::ZERO).await;
    let api = gateway(&lambda.url, TIMEOUT).await;
    let client = reqwest::Client::new();

    let (status, headers, body) = error_of(client.get(format!("{api}/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("/nope"));
    assert_eq!(
        body["error"]["request_id"],
        headers["apigw-requestid"].to_str().unwrap()
    );

    let (status, _, _) = error_of(client.post(format!("{api}/login/")).send().await.unwrap()).await;
    assert_eq!(status, 404, "a trailing slash is another path");

    let (status, headers, body) = error_of(client.get(format!("{api}/login")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(!body["error"]["request_id"].as_str().unwrap().is_empty());

    let (status, headers, _) = error_of(client.delete(format!("{api}/session")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET");

    assert!(lambda.events().is_empty(), "no function was invoked");
}

#[tokio::test]
async fn the_functions_answer_becomes_the_response() {
    let lambda = Lambda::start(200, answer(), Duration::ZERO).await;
    let response = post_through(&lambda.url, TIMEOUT, "/qrcode").await;
    assert_eq!(response.status(), 201);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["x-one"], "1");
    let many: Vec<&str> = headers.get_all("x-many").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(many, ["a", "b"]);
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
    assert_eq!(
        headers["content-length"], "5",
        "the decoded body's length, not the function's"
    );
    assert_eq!(&response.bytes().await.unwrap()[..], b"\x00\x9f\x92\x96\xff");

    // API Gateway's format 2.0 inference: JSON without statusCode is the body of a 200.
    let lambda = Lambda::start(200, json!({"hello": "world"}), Duration::ZERO).await;
    let response = post_through(&lambda.url, TIMEOUT, "/login").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"hello": "world"}));
}

/// POST /login through a gateway in front of `lambda_url`: the JSON error it answers.
async fn login_through(lambda_url: &str, invoke_timeout: Duration) -> (u16, HeaderMap, Value) {
    error_of(post_through(lambda_url, invoke_timeout, "/login").await).await
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap()
}

#[tokio::test]
async fn a_failed_unreachable_or_slow_invocation_is_a_json_error_not_a_hang() {
    let bad_gateway = json!("bad_gateway");

    // The function crashed: cargo-lambda answers 500 with Lambda's error document.
    let crash = json!({"errorType": "Runtime.ExitError", "errorMessage": "exit status 101"});
    let lambda = Lambda::start(500, crash.clone(), Duration::ZERO).await;
    let (status, headers, body) = login_through(&lambda.url, TIMEOUT).await;
    assert_eq!((status, &body["error"]["code"]), (502, &bad_gateway));
    assert!(message(&body).contains("login failed: Runtime.ExitError"), "{body}");
    assert_eq!(
        body["error"]["request_id"],
        headers["apigw-requestid"].to_str().unwrap()
    );

    // Its init failed: cargo-lambda answers that error document with a 200.
    let lambda = Lambda::start(200, crash, Duration::ZERO).await;
    let (status, _, body) = login_through(&lambda.url, TIMEOUT).await;
    assert_eq!((status, &body["error"]["code"]), (502, &bad_gateway));

    // Not a payload 2.0 answer.
    let lambda = Lambda::start(200, json!({"statusCode": "soon"}), Duration::ZERO).await;
    let (status, _, body) = login_through(&lambda.url, TIMEOUT).await;
    assert_eq!(status, 502);
    assert!(message(&body).contains("statusCode"), "{body}");

    // Nothing listens where the invoke endpoint should be: on a route, and on the invoke API.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let started = Instant::now();
    let (status, _, body) = login_through(&down, TIMEOUT).await;
    assert_eq!((status, &body["error"]["code"]), (502, &bad_gateway));
    assert!(message(&body).contains("cargo lambda watch"), "{body}");
    let invoke = post_through(&down, TIMEOUT, "/2015-03-31/functions/merchant/invocations").await;
    let (status, _, body) = error_of(invoke).await;
    assert_eq!((status, &body["error"]["code"]), (502, &bad_gateway));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A function that never answers (cargo-lambda waits for ever on one that died mid-invocation).
    let lambda = Lambda::start(200, answer(), Duration::from_secs(30)).await;
    let started = Instant::now();
    let (status, _, body) = login_through(&lambda.url, Duration::from_millis(300)).await;
    assert_eq!((status, &body["error"]["code"]), (504, &json!("gateway_timeout")));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_invoke_api_passes_through_unchanged() {
    let lambda = Lambda::start(200, answer(), Duration::ZERO).await;
    let api = gateway(&lambda.url, TIMEOUT).await;
    let payload = r#"{"action":"refund","out_trade_no":"T1"}"#;
    let response = reqwest::Client::new()
        .post(format!("{api}/2015-03-31/functions/merchant/invocations"))
        .header("x-amz-client-context", "e30=")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("apigw-requestid").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        answer(),
        "the function's answer as it is"
    );

    let received = lambda.received.lock().unwrap();
    let invoked = &received[0];
    assert_eq!(invoked.function, "merchant");
    assert_eq!(&invoked.payload[..], payload.as_bytes());
    assert_eq!(invoked.headers["x-amz-client-context"], "e30=");
    assert!(invoked.headers.get("lambda-runtime-aws-request-id").is_none());
}
