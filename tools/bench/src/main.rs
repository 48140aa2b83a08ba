//! `coldstart`: times Lambda functions the way the Lambda service starts them, on this machine.
//!
//! A minimal Lambda Runtime API on 127.0.0.1 hands events to a process started with
//! `AWS_LAMBDA_RUNTIME_API` set, and measures per run: (a) exec → first `GET /next` (init),
//! (b) first event → response, (c) a warm event → response, (d) peak RSS (VmHWM). The functions
//! talk to a moto server and the WeChat simulator started here, as in `make dev`.
//!
//!     cargo run -p bench --release --bin coldstart -- [--runs N] [--out FILE]
//!     cargo run -p bench --release --bin coldstart -- --throughput N [--out FILE]
//!     cargo run -p bench --release --bin coldstart -- --journey [--runs N] [--out FILE]
//!
//! `--throughput N` instead sends N warm events back to back to one instance of hello, session,
//! werun, decrypt-phone and login (real sessions and payloads), and times the remote calls they
//! make on their own. `--journey` times the first session after idle over TLS under a modelled
//! network (see `journey.rs`).
//!
//! It times `target/release/<function>` (build them with `cargo build --release --bins`), the
//! `hello` floor, and a Python process that imports boto3 and wechatpy (scripts/bench_python_lambda.py).

mod journey;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

#[derive(Default)]
struct Runtime {
    /// Events waiting for the function's next `GET /next`.
    events: Option<mpsc::Receiver<(String, Value)>>,
    /// The moment of the first `GET /next` of the current process.
    first_next: Option<oneshot::Sender<Instant>>,
    /// Where each invocation's answer goes.
    answers: HashMap<String, oneshot::Sender<(Instant, Value)>>,
}

type Shared = Arc<Mutex<Runtime>>;

async fn next(State(state): State<Shared>) -> Response {
    let (receiver, first) = {
        let mut s = state.lock().unwrap();
        (s.events.take(), s.first_next.take())
    };
    if let Some(first) = first {
        let _ = first.send(Instant::now());
    }
    let Some(mut receiver) = receiver else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let event = receiver.recv().await;
    state.lock().unwrap().events = Some(receiver);
    let Some((id, event)) = event else {
        return StatusCode::GONE.into_response();
    };
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".into(),
            ),
            ("content-type", "application/json".into()),
        ],
        event.to_string(),
    )
        .into_response()
}

async fn respond(State(state): State<Shared>, Path(id): Path<String>, _headers: HeaderMap, body: String) -> Response {
    let at = Instant::now();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if let Some(tx) = state.lock().unwrap().answers.remove(&id) {
        let _ = tx.send((at, value));
    }
    StatusCode::ACCEPTED.into_response()
}

async fn init_error(body: String) -> Response {
    eprintln!("init error: {body}");
    StatusCode::ACCEPTED.into_response()
}

struct Run {
    init_ms: f64,
    first_ms: f64,
    warm_ms: f64,
    rss_kb: u64,
}

fn logs() -> bool {
    std::env::var_os("BENCH_LOGS").is_some()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One process of `command` under the local Runtime API: started cold, then sent events one
/// after the other (Lambda sends one at a time).
pub(crate) struct Instance {
    child: tokio::process::Child,
    pid: u32,
    events: mpsc::Sender<(String, Value)>,
    state: Shared,
    started: Instant,
    /// exec → first `GET /next`.
    pub init_ms: f64,
}

impl Instance {
    pub(crate) async fn start(
        state: &Shared,
        api: SocketAddr,
        command: &[String],
        env: &HashMap<String, String>,
    ) -> Result<Self, String> {
        let (event_tx, event_rx) = mpsc::channel(2);
        let (first_tx, first_rx) = oneshot::channel();
        {
            let mut s = state.lock().unwrap();
            s.events = Some(event_rx);
            s.first_next = Some(first_tx);
        }
        let started = Instant::now();
        // Only the variables Lambda would set (and PATH): this machine's own, as SSL_CERT_DIR,
        // would change what the processes do at init.
        let child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            // BENCH_LOGS=1: the processes' log (stdout) and errors on this terminal.
            .stdout(if logs() { Stdio::inherit() } else { Stdio::null() })
            .stderr(if logs() { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", command[0]))?;
        let pid = child.id().unwrap_or(0);
        let first_next = tokio::time::timeout(Duration::from_secs(30), first_rx)
            .await
            .map_err(|_| "no GET /next within 30 s".to_string())?
            .map_err(|_| "runtime dropped".to_string())?;
        Ok(Self {
            child,
            pid,
            events: event_tx,
            state: state.clone(),
            started,
            init_ms: (first_next - started).as_secs_f64() * 1000.0,
        })
    }

    /// Sends `event` and waits for the answer: (event → answer ms, the answer). A 5xx is an error.
    pub(crate) async fn invoke(&mut self, event: Value) -> Result<(f64, Value), String> {
        let id = format!("req-{}", self.started.elapsed().as_nanos());
        let (answer_tx, answer_rx) = oneshot::channel();
        self.state.lock().unwrap().answers.insert(id.clone(), answer_tx);
        let sent = Instant::now();
        self.events.send((id, event)).await.map_err(|_| "event queue closed")?;
        let (at, answer) = tokio::time::timeout(Duration::from_secs(30), answer_rx)
            .await
            .map_err(|_| "no answer within 30 s".to_string())?
            .map_err(|_| "answer dropped".to_string())?;
        if answer["statusCode"].as_u64().is_some_and(|s| s >= 500) {
            return Err(format!("failed: {answer}"));
        }
        Ok(((at - sent).as_secs_f64() * 1000.0, answer))
    }

    /// Stops the process; returns its peak RSS in kB.
    pub(crate) async fn stop(mut self) -> u64 {
        let rss_kb = peak_rss_kb(self.pid);
        let _ = self.child.kill().await;
        rss_kb
    }
}

/// One process of `command`: exec, init, then `events` one after the other. Returns init, each
/// event's round trip, and the peak RSS.
async fn run_events(
    state: &Shared,
    api: SocketAddr,
    command: &[String],
    env: &HashMap<String, String>,
    events: Vec<Value>,
) -> Result<(f64, Vec<f64>, u64), String> {
    let mut instance = Instance::start(state, api, command, env).await?;
    let mut times = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let (ms, _) = instance.invoke(event).await.map_err(|e| format!("event {i} {e}"))?;
        times.push(ms);
    }
    let init_ms = instance.init_ms;
    Ok((init_ms, times, instance.stop().await))
}

/// One cold start: init, a first event, a warm event.
async fn run_once(
    state: &Shared,
    api: SocketAddr,
    command: &[String],
    env: &HashMap<String, String>,
    events: (Value, Value),
) -> Result<Run, String> {
    let (init_ms, times, rss_kb) = run_events(state, api, command, env, vec![events.0, events.1]).await?;
    Ok(Run {
        init_ms,
        first_ms: times[0],
        warm_ms: times[1],
        rss_kb,
    })
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn root() -> PathBuf {
    testkit::workspace_root()
}

fn event_file(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("events").join(name)).unwrap()).unwrap()
}

/// An event file with the caller's token and, if given, a new JSON body.
fn authed(name: &str, token: &str, body: Option<Value>) -> Value {
    let mut event = event_file(name);
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    event
}

async fn sim_post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    http.post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Requests per second of one warm instance per function (events back to back, as Lambda sends
/// them to one instance), and the remote calls those requests make, timed alone from here with
/// the same clients, so that the breakdown is: runtime hop (hello) + remote calls + own CPU.
async fn throughput(
    state: &Shared,
    api: SocketAddr,
    env: &HashMap<String, String>,
    sim_base: &str,
    moto_endpoint: &str,
    n: usize,
) -> Value {
    let http = reqwest::Client::new();
    let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::Bundled);
    let sdk = testkit::sdk_config(moto_endpoint).await;
    let sessions =
        wxa_shared::store::sessions::SessionStore::new(aws_sdk_dynamodb::Client::new(&sdk), "bench-sessions");
    let wechat = wxa_shared::wechat::WechatClient::new(
        sim_base,
        testkit::APP_ID,
        wxa_shared::net::wechat_client(&tls, Duration::from_secs(5)),
    );
    let secret = wxa_shared::redacted::Secret::new(testkit::APP_SECRET);
    let mint = |openid: String| {
        let http = http.clone();
        async move {
            sim_post(&http, sim_base, "/__sim/login", json!({ "openid": openid })).await["code"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    // A logged-in user, as the login function would leave it.
    let code = mint("o_bench".into()).await;
    let session = wechat.jscode2session(&secret, &code).await.unwrap();
    let token = sessions
        .create("o_bench", None, &session.session_key, Duration::from_secs(3600))
        .await
        .unwrap()
        .token;
    let token = token.expose().to_owned();
    let seal = |data: Value| {
        let http = http.clone();
        async move {
            let sealed = sim_post(
                &http,
                sim_base,
                "/__sim/encrypt",
                json!({ "openid": "o_bench", "data": data }),
            )
            .await;
            json!({ "encryptedData": sealed["encryptedData"], "iv": sealed["iv"] })
        }
    };
    let today = wxa_shared::clock::now_unix() / 86_400 * 86_400;
    let steps: Vec<Value> = (0..31)
        .map(|d| json!({"timestamp": today - d * 86_400, "step": 4000 + d}))
        .collect();
    let werun = seal(json!({ "stepInfoList": steps })).await;
    let phone =
        seal(json!({"phoneNumber": "+86 13800138000", "purePhoneNumber": "13800138000", "countryCode": "86"})).await;

    let warmup = 20;
    let release = root().join("target/release");
    let mut rows = Vec::new();
    for subject in ["hello", "session", "werun", "decrypt-phone", "login"] {
        let events: Vec<Value> = match subject {
            "hello" => vec![event_file("session.json"); warmup + n],
            "session" => vec![authed("session.json", &token, None); warmup + n],
            "werun" => vec![authed("werun.json", &token, Some(werun.clone())); warmup + n],
            "decrypt-phone" => vec![authed("decrypt-phone.json", &token, Some(phone.clone())); warmup + n],
            _ => {
                let mut events = Vec::new();
                for i in 0..warmup + n {
                    let mut event = event_file("login.json");
                    event["body"] = json!(json!({ "code": mint(format!("o_tp_{i}")).await }).to_string());
                    events.push(event);
                }
                events
            }
        };
        let command = vec![release.join(subject).display().to_string()];
        let started = Instant::now();
        match run_events(state, api, &command, env, events).await {
            Ok((_, times, rss_kb)) => {
                let warm = &times[warmup..];
                let busy_secs: f64 = warm.iter().sum::<f64>() / 1000.0;
                let row = json!({
                    "subject": subject, "events": warm.len(), "rps": warm.len() as f64 / busy_secs,
                    "p50_ms": percentile(warm, 0.5), "p99_ms": percentile(warm, 0.99),
                    "peak_rss_mb": rss_kb as f64 / 1024.0, "wall_secs": started.elapsed().as_secs_f64(),
                });
                println!("{row}");
                rows.push(row);
            }
            Err(e) => eprintln!("{subject}: {e}"),
        }
    }

    // The remote calls alone, from this process, warm connections: what each request waits on.
    let mut get_item = Vec::new();
    let mut put_item = Vec::new();
    let mut code_session = Vec::new();
    let mut check_session = Vec::new();
    let access_token = wechat.stable_token(&secret).await.unwrap().access_token;
    for i in 0..200 {
        let t = Instant::now();
        assert!(
            wechat
                .check_session(&access_token, "o_bench", &session.session_key)
                .await
                .unwrap()
        );
        check_session.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        sessions.get(&token).await.unwrap().unwrap();
        get_item.push(t.elapsed().as_secs_f64() * 1000.0);
        let code = mint(format!("o_stage_{i}")).await;
        let t = Instant::now();
        let session = wechat.jscode2session(&secret, &code).await.unwrap();
        code_session.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        sessions
            .create(
                &format!("o_stage_{i}"),
                None,
                &session.session_key,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        put_item.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let stages = json!({
        "dynamodb_get_item_ms": median(get_item),
        "dynamodb_put_item_ms": median(put_item),
        "wechat_jscode2session_ms": median(code_session),
        "wechat_checksession_ms": median(check_session),
    });
    println!("{stages}");
    json!({ "instances": rows, "stages": stages })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = flag("--runs").and_then(|n| n.parse().ok()).unwrap_or(20);
    let out = flag("--out").map(PathBuf::from);

    // The Runtime API.
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(respond))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The local stack: moto (tables, secret) and the simulator.
    let moto = testkit::Moto::start();
    let sim = wechat_sim::SimServer::start(
        wechat_sim::SimConfig {
            app_id: testkit::APP_ID.into(),
            app_secret: testkit::APP_SECRET.into(),
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    testkit::setup_local_aws(
        &moto.endpoint,
        "bench-sessions",
        "bench-orders",
        "bench/app",
        testkit::APP_SECRET,
    );
    // WeChat Pay configured, so that pay-notify's first event checks a signature (the event's
    // timestamp is old: 401), as in production.
    let sdk = testkit::sdk_config(&moto.endpoint).await;
    testkit::enable_pay_on(
        &reqwest::Client::new(),
        &sim.base_url(),
        &aws_sdk_secretsmanager::Client::new(&sdk),
        "bench/pay",
    )
    .await;
    let env: HashMap<String, String> = [
        ("APP_ID", testkit::APP_ID.to_owned()),
        ("SESSIONS_TABLE", "bench-sessions".into()),
        ("ORDERS_TABLE", "bench-orders".into()),
        ("REFUNDS_TABLE", "bench-orders-refunds".into()),
        ("TRANSFERS_TABLE", "bench-orders-transfers".into()),
        ("MESSAGES_TABLE", "bench-orders-messages".into()),
        ("TOKENS_TABLE", "bench-orders-tokens".into()),
        ("APP_SECRET_ID", "bench/app".into()),
        ("PUSH_SECRET_ID", "bench/push".into()),
        ("PAY_SECRET_ID", "bench/pay".into()),
        ("WECHAT_API_BASE", sim.base_url()),
        ("WECHATPAY_API_BASE", sim.base_url()),
        ("PAY_NOTIFY_URL", "https://bench.example/pay/notify".into()),
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
        // The bare init: what init prepares (connections, secrets) is timed by --journey, with
        // and without, under a modelled network.
        ("CONNECT_AT_INIT", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if args.iter().any(|a| a == "--journey") {
        let result = journey::run(&state, api, &moto.endpoint, runs).await;
        if let Some(out) = out {
            std::fs::write(out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        }
        return;
    }
    if let Some(n) = flag("--throughput") {
        let n = n.parse().expect("--throughput takes a number of events");
        let result = throughput(&state, api, &env, &sim.base_url(), &moto.endpoint, n).await;
        if let Some(out) = out {
            std::fs::write(out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        }
        return;
    }
    let http = reqwest::Client::new();
    let mint = |http: reqwest::Client, base: String| async move {
        let answer: Value = http
            .post(format!("{base}/__sim/login"))
            .json(&json!({"openid": "o_bench"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["code"].as_str().unwrap().to_owned()
    };

    let release = root().join("target/release");
    let mut subjects: Vec<(String, Vec<String>)> = vec![(
        "hello (floor)".into(),
        vec![release.join("hello").display().to_string()],
    )];
    // Every function (the registry a test holds to template.yaml).
    for f in wxa_shared::function::FUNCTIONS.iter().map(|f| f.name) {
        subjects.push((f.into(), vec![release.join(f).display().to_string()]));
    }
    let python = root().join(".venv-bench/bin/python");
    subjects.push((
        "python boto3+wechatpy".into(),
        vec![
            python.display().to_string(),
            root().join("scripts/bench_python_lambda.py").display().to_string(),
        ],
    ));

    // Interleaved (run 1 of every subject, then run 2, ...): slow drifts of this VM's speed then
    // touch every subject alike.
    let mut results: Vec<Vec<Run>> = subjects.iter().map(|_| Vec::new()).collect();
    let mut failed = vec![false; subjects.len()];
    for _ in 0..runs {
        for (i, (name, command)) in subjects.iter().enumerate() {
            if failed[i] {
                continue;
            }
            // login gets fresh codes: its first event does the real work (secret, jscode2session, PutItem).
            let events = if name == "login" {
                let body = |code: String| {
                    let mut e = event_file("login.json");
                    e["body"] = json!(json!({"code": code}).to_string());
                    e
                };
                (
                    body(mint(http.clone(), sim.base_url()).await),
                    body(mint(http.clone(), sim.base_url()).await),
                )
            } else {
                let event = match name.as_str() {
                    "hello (floor)" | "python boto3+wechatpy" => event_file("session.json"),
                    // The back office's command (an unknown order: the first event reads the pay
                    // secret and the table, as a real first command does).
                    "merchant" => json!({"op": "get_order", "out_trade_no": "BENCH000001"}),
                    // What EventBridge's schedule sends.
                    "reconciler" => json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
                    // A function of several routes: its first route's event.
                    f => {
                        let function = wxa_shared::function::FUNCTIONS.iter().find(|g| g.name == f);
                        let own = root().join("events").join(format!("{f}.json"));
                        match function.and_then(|g| g.routes().first()) {
                            Some(route) if !own.exists() => {
                                let method = route.method.as_str();
                                let names = testkit::events_for(method, route.path);
                                event_file(names.first().expect("every route has an event"))
                            }
                            _ => event_file(&format!("{f}.json")),
                        }
                    }
                };
                (event.clone(), event)
            };
            match run_once(&state, api, command, &env, events).await {
                Ok(run) => results[i].push(run),
                Err(e) => {
                    eprintln!("{name}: {e}");
                    failed[i] = true;
                }
            }
        }
    }
    let mut table = Vec::new();
    for ((name, _), results) in subjects.iter().zip(&results) {
        if results.is_empty() {
            continue;
        }
        let row = json!({
            "subject": name,
            "runs": results.len(),
            "init_ms": median(results.iter().map(|r| r.init_ms).collect()),
            "first_ms": median(results.iter().map(|r| r.first_ms).collect()),
            "warm_ms": median(results.iter().map(|r| r.warm_ms).collect()),
            "peak_rss_mb": median(results.iter().map(|r| r.rss_kb as f64 / 1024.0).collect()),
        });
        println!("{row}");
        table.push(row);
    }
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&table).unwrap()).unwrap();
    }
}
