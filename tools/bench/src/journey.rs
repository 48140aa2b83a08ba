//! `coldstart --journey`: the first session after idle, as a mini-program user meets it.
//!
//! `login` cold → `decrypt-phone` cold (the current button's `{code}`) → `werun` cold, each a
//! fresh process under the local Runtime API, each then sent a second (warm) event. Every remote
//! call goes over TLS (a CA made here; `TLS_ROOTS=system` with `SSL_CERT_FILE`) through a
//! [`LatencyProxy`] per destination: DynamoDB, Secrets Manager (both moto behind a TLS proxy, on
//! their own endpoints as in a region), WeChat and WeChat Pay (the simulator on HTTPS).
//!
//! Subjects, interleaved run by run: our functions with connections opened at init
//! (`CONNECT_AT_INIT=true`, the default), the same without (`false`), and the Python equivalent
//! (boto3 + wechatpy, `scripts/bench_python_journey.py`); `hello` gives the floor of init.
//! Profiles: [`NetworkProfile::ZERO`] (what moto, the simulator, TLS and the proxies cost on this
//! machine) and [`NetworkProfile::HONG_KONG`].
//!
//! The floor of a step = the same subject's step with zero delay + the round trips no
//! implementation avoids: per remote service the step must reach, one TCP handshake, one TLS 1.3
//! handshake and one request (3 round trips) cold, one request warm; services one after the other
//! where data dependencies order them, the slowest of a group that does not depend on each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::keep_alive::KeepAliveFront;
use testkit::latency::{LatencyProxy, NetworkProfile};
use testkit::tls::{TestPki, TlsProxy};

use crate::{Instance, Shared, event_file, median, root};

/// A remote service a step reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    DynamoDb,
    SecretsManager,
    Wechat,
}

impl Service {
    fn one_way(self, profile: &NetworkProfile) -> f64 {
        let d = match self {
            Service::DynamoDb | Service::SecretsManager => profile.aws,
            Service::Wechat => profile.wechat,
        };
        d.as_secs_f64() * 1000.0
    }
}

/// A step of the journey, and what it must reach: groups in the order data dependencies force
/// (services of one group do not depend on each other).
struct Step {
    name: &'static str,
    binary: &'static str,
    cold: &'static [&'static [Service]],
    warm: &'static [&'static [Service]],
}

const STEPS: [Step; 3] = [
    // The code is exchanged with the app secret; the session stored holds what WeChat answered.
    Step {
        name: "login",
        binary: "login",
        cold: &[&[Service::SecretsManager], &[Service::Wechat], &[Service::DynamoDb]],
        warm: &[&[Service::Wechat], &[Service::DynamoDb]],
    },
    // The session (DynamoDB) and the access token (the app secret that opens it) do not depend
    // on each other; getuserphonenumber needs both.
    Step {
        name: "phone",
        binary: "decrypt-phone",
        cold: &[&[Service::DynamoDb, Service::SecretsManager], &[Service::Wechat]],
        warm: &[&[Service::DynamoDb], &[Service::Wechat]],
    },
    // The session key is in the session; the decryption is local.
    Step {
        name: "werun",
        binary: "werun",
        cold: &[&[Service::DynamoDb]],
        warm: &[&[Service::DynamoDb]],
    },
];

/// The network time no implementation avoids: per group the slowest service, `round_trips` each.
fn unavoidable_ms(groups: &[&[Service]], round_trips: f64, profile: &NetworkProfile) -> f64 {
    groups
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|s| 2.0 * s.one_way(profile) * round_trips)
                .fold(0.0, f64::max)
        })
        .sum()
}

/// The network time of what `CONNECT_AT_INIT` prepares at init for `step` (`AtInit` of its
/// function), all started at once: the slowest chain. A connection opened ahead costs a TCP and a
/// TLS handshake (2 round trips); a credential read, those and its request (3).
fn at_init_network_ms(step: &Step, profile: &NetworkProfile) -> f64 {
    let rtt = |s: Service| 2.0 * s.one_way(profile);
    match step.name {
        // The app secret, and connections to DynamoDB and WeChat.
        "login" => (3.0 * rtt(Service::SecretsManager))
            .max(2.0 * rtt(Service::DynamoDb))
            .max(2.0 * rtt(Service::Wechat)),
        // The access token (the app secret, then the tokens table), and a connection to WeChat.
        "phone" => (3.0 * rtt(Service::SecretsManager) + 3.0 * rtt(Service::DynamoDb)).max(2.0 * rtt(Service::Wechat)),
        // A connection to DynamoDB.
        _ => 2.0 * rtt(Service::DynamoDb),
    }
}

/// The latency proxies, one per destination.
struct Network {
    dynamodb: LatencyProxy,
    secrets_manager: LatencyProxy,
    wechat: LatencyProxy,
    wechat_pay: LatencyProxy,
}

impl Network {
    fn set(&self, profile: &NetworkProfile) {
        self.dynamodb.set_one_way(profile.aws);
        self.secrets_manager.set_one_way(profile.aws);
        self.wechat.set_one_way(profile.wechat);
        self.wechat_pay.set_one_way(profile.wechat_pay);
    }

    /// Connections accepted so far: DynamoDB, Secrets Manager, WeChat, WeChat Pay.
    fn connections(&self) -> [usize; 4] {
        [
            self.dynamodb.connections(),
            self.secrets_manager.connections(),
            self.wechat.connections(),
            self.wechat_pay.connections(),
        ]
    }
}

fn opened_since(before: [usize; 4], after: [usize; 4]) -> Value {
    json!({
        "dynamodb": after[0] - before[0],
        "secretsmanager": after[1] - before[1],
        "wechat": after[2] - before[2],
        "wechatpay": after[3] - before[3],
    })
}

/// A subject: how each step's process is started, and its own settings.
struct Subject {
    name: &'static str,
    /// One program serving every step; `None`: each step's own function (`target/release/<binary>`).
    program: Option<Vec<String>>,
    env: Vec<(&'static str, &'static str)>,
}

impl Subject {
    fn command(&self, step: &Step) -> Vec<String> {
        self.program
            .clone()
            .unwrap_or_else(|| vec![root().join("target/release").join(step.binary).display().to_string()])
    }
}

/// One step's figures in one run.
#[derive(Default, Clone)]
struct Sample {
    init_ms: f64,
    first_ms: f64,
    warm_ms: f64,
    cold_connections: Value,
    warm_connections: Value,
    cold_wechat_calls: Value,
    warm_wechat_calls: Value,
}

struct World {
    state: Shared,
    api: SocketAddr,
    env: HashMap<String, String>,
    net: Network,
    /// The simulator's admin endpoints, reached directly (no added delay).
    admin: reqwest::Client,
    sim_base: String,
}

impl World {
    async fn sim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.admin.request(method, format!("{}{path}", self.sim_base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the simulator answers");
        answer.json().await.unwrap_or(Value::Null)
    }

    async fn wechat_calls(&self) -> Value {
        let calls = self.sim(reqwest::Method::GET, "/__sim/requests", None).await["counts"].clone();
        self.sim(reqwest::Method::DELETE, "/__sim/requests", None).await;
        calls
    }

    async fn login_code(&self, openid: &str) -> String {
        let answer = self
            .sim(reqwest::Method::POST, "/__sim/login", Some(json!({ "openid": openid })))
            .await;
        answer["code"].as_str().expect("a code").to_owned()
    }

    async fn phone_code(&self) -> String {
        let answer = self
            .sim(
                reqwest::Method::POST,
                "/__sim/phone-code",
                Some(json!({ "phoneNumber": "13800138000", "countryCode": "86" })),
            )
            .await;
        answer["code"].as_str().expect("a phone code").to_owned()
    }

    async fn werun_data(&self, openid: &str) -> Value {
        let today = wxa_shared::clock::now_unix() / 86_400 * 86_400;
        let steps: Vec<Value> = (0..31)
            .map(|d| json!({"timestamp": today - d * 86_400, "step": 4000 + d}))
            .collect();
        let sealed = self
            .sim(
                reqwest::Method::POST,
                "/__sim/encrypt",
                Some(json!({ "openid": openid, "data": { "stepInfoList": steps } })),
            )
            .await;
        json!({ "encryptedData": sealed["encryptedData"], "iv": sealed["iv"] })
    }

    /// The event a step's process gets: a fresh code, phone code, or sealed data each time.
    async fn event(&self, step: &Step, openid: &str, token: &str) -> Value {
        let (file, body) = match step.name {
            "login" => ("login.json", json!({ "code": self.login_code(openid).await })),
            "phone" => ("decrypt-phone.json", json!({ "code": self.phone_code().await })),
            _ => ("werun.json", self.werun_data(openid).await),
        };
        let mut event = event_file(file);
        if step.name != "login" {
            event["headers"]["authorization"] = json!(format!("Bearer {token}"));
        }
        event["body"] = json!(body.to_string());
        event
    }

    /// One journey of `subject`: each step cold (init + first event) then warm (a second event).
    async fn journey(&self, subject: &Subject, openid: &str) -> Result<Vec<Sample>, String> {
        let mut token = String::new();
        let mut samples = Vec::new();
        for step in &STEPS {
            let mut env = self.env.clone();
            env.extend(subject.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            // Made before the clock starts: what the phone would send.
            let first = self.event(step, openid, &token).await;
            self.wechat_calls().await;
            let before = self.net.connections();
            let mut instance = Instance::start(&self.state, self.api, &subject.command(step), &env).await?;
            let (first_ms, answer) = instance
                .invoke(first)
                .await
                .map_err(|e| format!("{}: {e}", step.name))?;
            check(step, &answer)?;
            let cold_connections = opened_since(before, self.net.connections());
            let cold_wechat_calls = self.wechat_calls().await;

            let second = self.event(step, openid, &token).await;
            self.wechat_calls().await;
            let before = self.net.connections();
            let (warm_ms, answer) = instance
                .invoke(second)
                .await
                .map_err(|e| format!("{}: {e}", step.name))?;
            check(step, &answer)?;
            let warm_connections = opened_since(before, self.net.connections());
            let warm_wechat_calls = self.wechat_calls().await;
            if step.name == "login" {
                // The second login's session holds the key the phone now seals with.
                let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("{}")).unwrap_or_default();
                token = body["token"].as_str().ok_or("login answered no token")?.to_owned();
            }
            let init_ms = instance.init_ms;
            instance.stop().await;
            if std::env::var_os("JOURNEY_TRACE").is_some() {
                eprintln!(
                    "{} {} init {init_ms:.2} first {first_ms:.2} warm {warm_ms:.2}",
                    subject.name, step.name
                );
            }
            samples.push(Sample {
                init_ms,
                first_ms,
                warm_ms,
                cold_connections,
                warm_connections,
                cold_wechat_calls,
                warm_wechat_calls,
            });
        }
        Ok(samples)
    }
}

fn check(step: &Step, answer: &Value) -> Result<(), String> {
    match answer["statusCode"].as_u64() {
        Some(200) => Ok(()),
        _ => Err(format!("{} answered {answer}", step.name)),
    }
}

fn p50(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// Runs the journey `runs` times per subject and profile, interleaved, and returns the table.
pub async fn run(state: &Shared, api: SocketAddr, moto_endpoint: &str, runs: usize) -> Value {
    let pki = TestPki::new();
    let bench_dir = root().join("target/bench");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let ca_file = bench_dir.join("journey-ca.pem");
    std::fs::write(&ca_file, pki.ca.pem()).unwrap();

    // DynamoDB and Secrets Manager keep connections open; moto alone closes each one.
    let front = KeepAliveFront::start(moto_endpoint).await;
    let aws_tls = TlsProxy::start(front.addr, &pki.localhost).await;
    let sim = wechat_sim::SimServer::start_tls(
        wechat_sim::SimConfig {
            app_id: testkit::APP_ID.into(),
            app_secret: testkit::APP_SECRET.into(),
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &pki.localhost.chain_pem,
        &pki.localhost.key_pem,
    )
    .await
    .unwrap();
    let sim_addr: SocketAddr = sim
        .base_url()
        .trim_start_matches("https://localhost:")
        .parse::<u16>()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("https://localhost:PORT");
    let net = Network {
        dynamodb: LatencyProxy::start(aws_tls.addr, Duration::ZERO),
        secrets_manager: LatencyProxy::start(aws_tls.addr, Duration::ZERO),
        wechat: LatencyProxy::start(sim_addr, Duration::ZERO),
        wechat_pay: LatencyProxy::start(sim_addr, Duration::ZERO),
    };
    testkit::setup_local_aws(
        moto_endpoint,
        "journey-sessions",
        "journey-orders",
        "journey/app",
        testkit::APP_SECRET,
    );
    let ca = ca_file.display().to_string();
    let env: HashMap<String, String> = [
        ("APP_ID", testkit::APP_ID.to_owned()),
        ("SESSIONS_TABLE", "journey-sessions".into()),
        ("TOKENS_TABLE", "journey-orders-tokens".into()),
        ("APP_SECRET_ID", "journey/app".into()),
        ("PUSH_SECRET_ID", "journey/push".into()),
        ("WECHAT_API_BASE", net.wechat.https_endpoint()),
        ("WECHATPAY_API_BASE", net.wechat_pay.https_endpoint()),
        ("AWS_ENDPOINT_URL_DYNAMODB", net.dynamodb.https_endpoint()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", net.secrets_manager.https_endpoint()),
        ("TLS_ROOTS", "system".into()),
        ("SSL_CERT_FILE", ca.clone()),
        // The Python subject's CA settings (botocore, requests).
        ("AWS_CA_BUNDLE", ca.clone()),
        ("REQUESTS_CA_BUNDLE", ca.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_LAMBDA_FUNCTION_NAME", "journey".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let world = World {
        state: state.clone(),
        api,
        env,
        net,
        admin: reqwest::Client::builder()
            .tls_backend_preconfigured(wxa_shared::net::tls_config_trusting(pki.ca.roots()))
            .build()
            .unwrap(),
        sim_base: sim.base_url(),
    };

    let python = root().join(".venv-bench/bin/python").display().to_string();
    let python_journey = root().join("scripts/bench_python_journey.py").display().to_string();
    let subjects = [
        Subject {
            name: "rust, connections opened at init",
            program: None,
            env: vec![("CONNECT_AT_INIT", "true")],
        },
        Subject {
            name: "rust, connections opened by the first request",
            program: None,
            env: vec![("CONNECT_AT_INIT", "false")],
        },
        Subject {
            name: "python boto3+wechatpy",
            program: Some(vec![python, python_journey]),
            env: vec![],
        },
    ];
    let profiles = [NetworkProfile::ZERO, NetworkProfile::HONG_KONG];

    // Untimed: the shared access token is in the tokens table (as in a running fleet), binaries
    // and Python's modules are in the page cache.
    for subject in &subjects {
        world.net.set(&NetworkProfile::ZERO);
        if let Err(e) = world.journey(subject, "o_journey_warmup").await {
            panic!("{}: {e}", subject.name);
        }
    }

    let hello = vec![root().join("target/release/hello").display().to_string()];
    let mut samples: HashMap<(usize, usize), Vec<Vec<Sample>>> = HashMap::new();
    let mut hello_init: HashMap<usize, Vec<f64>> = HashMap::new();
    for run in 0..runs {
        // Alternate the order of profiles so that a drift of this VM touches both alike.
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for &p in &order {
            world.net.set(&profiles[p]);
            let instance = Instance::start(state, api, &hello, &world.env)
                .await
                .expect("hello starts");
            hello_init.entry(p).or_default().push(instance.init_ms);
            instance.stop().await;
            for (s, subject) in subjects.iter().enumerate() {
                let openid = format!("o_journey_{run}_{p}_{s}");
                match world.journey(subject, &openid).await {
                    Ok(journey) => samples.entry((s, p)).or_default().push(journey),
                    Err(e) => panic!("{} under {}: {e}", subject.name, profiles[p].name),
                }
            }
        }
    }

    let mut rows = Vec::new();
    for (s, subject) in subjects.iter().enumerate() {
        for (p, profile) in profiles.iter().enumerate() {
            let journeys = &samples[&(s, p)];
            let zero = &samples[&(s, 0)];
            let mut total = json!({"cold_ms": 0.0, "cold_floor_ms": 0.0, "warm_ms": 0.0, "warm_floor_ms": 0.0});
            for (i, step) in STEPS.iter().enumerate() {
                let these: Vec<Sample> = journeys.iter().map(|j| j[i].clone()).collect();
                let zeros: Vec<Sample> = zero.iter().map(|j| j[i].clone()).collect();
                let cold = p50(&these, |x| x.init_ms + x.first_ms);
                let warm = p50(&these, |x| x.warm_ms);
                let cold_floor = p50(&zeros, |x| x.init_ms + x.first_ms) + unavoidable_ms(step.cold, 3.0, profile);
                let warm_floor = p50(&zeros, |x| x.warm_ms) + unavoidable_ms(step.warm, 1.0, profile);
                for (key, value) in [
                    ("cold_ms", cold),
                    ("cold_floor_ms", cold_floor),
                    ("warm_ms", warm),
                    ("warm_floor_ms", warm_floor),
                ] {
                    total[key] = json!(total[key].as_f64().unwrap() + value);
                }
                let last = these.last().cloned().unwrap_or_default();
                let row = json!({
                    "subject": subject.name,
                    "profile": profile.name,
                    "step": step.name,
                    "runs": these.len(),
                    "init_ms": p50(&these, |x| x.init_ms),
                    "first_ms": p50(&these, |x| x.first_ms),
                    "cold_ms": cold,
                    "cold_floor_ms": cold_floor,
                    "cold_ratio": cold / cold_floor,
                    "warm_ms": warm,
                    "warm_floor_ms": warm_floor,
                    "warm_ratio": warm / warm_floor,
                    "at_init_network_ms": at_init_network_ms(step, profile),
                    "cold_connections": last.cold_connections,
                    "warm_connections": last.warm_connections,
                    "cold_wechat_calls": last.cold_wechat_calls,
                    "warm_wechat_calls": last.warm_wechat_calls,
                });
                println!("{row}");
                rows.push(row);
            }
            let row = json!({
                "subject": subject.name, "profile": profile.name, "step": "journey",
                "cold_ms": total["cold_ms"], "cold_floor_ms": total["cold_floor_ms"],
                "cold_ratio": total["cold_ms"].as_f64().unwrap() / total["cold_floor_ms"].as_f64().unwrap(),
                "warm_ms": total["warm_ms"], "warm_floor_ms": total["warm_floor_ms"],
                "warm_ratio": total["warm_ms"].as_f64().unwrap() / total["warm_floor_ms"].as_f64().unwrap(),
            });
            println!("{row}");
            rows.push(row);
        }
    }
    let hello: Value = profiles
        .iter()
        .enumerate()
        .map(|(p, profile)| (profile.name.to_owned(), json!(median(hello_init[&p].clone()))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({
        "runs": runs,
        "profiles": profiles.iter().map(|p| json!({
            "name": p.name,
            "aws_ms": p.aws.as_secs_f64() * 1000.0,
            "wechat_ms": p.wechat.as_secs_f64() * 1000.0,
            "wechat_pay_ms": p.wechat_pay.as_secs_f64() * 1000.0,
        })).collect::<Vec<_>>(),
        "hello_init_ms": hello,
        "rows": rows,
    })
}
