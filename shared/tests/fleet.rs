//! A fleet of containers sharing one access token and one card ticket, against moto and the
//! simulator: `FLEET_INSTANCES` application states (200 here by default, 1,000 in `make bench`),
//! each with its own AWS and WeChat clients as separate containers have, all calling WeChat at
//! once: cold, after WeChat invalidated the token, across a token expiry the simulator forces,
//! and after the container refreshing the token was killed mid-refresh.
//!
//! Asserted: WeChat hands out one token per lifetime (a killed lease holder costs at most a
//! couple more), one card ticket, every call succeeds, and the table alone yields no token.
//! Reported (`FLEET_REPORT=path.json`, for BENCHMARKS.md): DynamoDB calls per instance and the
//! latency a cold instance pays for its token, against fetching its own as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::StalledStreamProtectionConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use serde_json::{Value, json};
use testkit::{APP_ID, AwsCalls, Stack};
use wxa_shared::config::{Config, Parts};
use wxa_shared::state::AppState;
use wxa_shared::store::tokens::attr;
use wxa_shared::token::ACCESS_TOKEN;

const PARTS: Parts = Parts {
    wechat: true,
    access_token: true,
    ..Parts::NONE
};

const OPENID: &str = "o_fleet";

fn fleet_size() -> usize {
    std::env::var("FLEET_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}

/// One container: its state, and the DynamoDB calls its clients made.
struct Container {
    state: AppState,
    calls: AwsCalls,
}

async fn container(stack: &Stack, lease: Option<Duration>) -> Container {
    container_with(stack, lease, &[]).await
}

async fn container_with(stack: &Stack, lease: Option<Duration>, overrides: &[(&str, &str)]) -> Container {
    let sdk = testkit::sdk_config(&testkit::moto().endpoint).await;
    let calls = AwsCalls::default();
    // moto is one Python process that serves the whole fleet's calls one after another: a
    // thousand cold containers queue there for seconds, which DynamoDB and Secrets Manager would
    // not make them do. So the clients wait for moto as long as it takes (no stalled-stream cut
    // either); the stores follow their clients' timeout.
    let patient = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(30))
        .operation_attempt_timeout(Duration::from_secs(120))
        .operation_timeout(Duration::from_secs(120))
        .build();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .timeout_config(patient.clone())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .interceptor(calls.clone())
            .build(),
    );
    let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .timeout_config(patient)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build(),
    );
    let lookup = |name: &str| {
        overrides
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| stack.env.get(name).cloned())
    };
    let mut config = Config::from_lookup(PARTS, lookup).expect("valid");
    if let Some(lease) = lease {
        config.token_lease = lease;
    }
    Container {
        state: AppState::from_clients(config, dynamodb, secretsmanager, &testkit::test_tls()),
        calls,
    }
}

async fn containers(stack: &Stack, n: usize) -> Vec<Arc<Container>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(Arc::new(container(stack, None).await));
    }
    all
}

/// A token-protected WeChat call (the user's risk rank).
async fn call_wechat(state: &AppState) -> Result<Value, String> {
    let body = json!({"appid": APP_ID, "openid": OPENID, "scene": 0, "client_ip": "203.0.113.7"});
    state
        .wechat()
        .map_err(|e| e.to_string())?
        .call("/wxa/getuserriskrank", &body)
        .await
        .map_err(|e| e.to_string())
}

/// Runs `work` on every container at once; the time each took.
async fn all_at_once<F, Fut>(fleet: &[Arc<Container>], work: F) -> Vec<Duration>
where
    F: Fn(Arc<Container>) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(fleet.len()));
    let tasks: Vec<_> = fleet
        .iter()
        .map(|c| {
            let job = work(c.clone());
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let began = Instant::now();
                job.await.map(|()| began.elapsed())
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.expect("no panic").expect("every call succeeds"));
    }
    times
}

/// DynamoDB calls each container made since the last count: (mean, max).
fn dynamodb_calls(fleet: &[Arc<Container>]) -> (f64, usize) {
    let counts: Vec<usize> = fleet
        .iter()
        .map(|c| c.calls.take().iter().filter(|op| op.starts_with("DynamoDB.")).count())
        .collect();
    let total: usize = counts.iter().sum();
    (
        total as f64 / counts.len() as f64,
        counts.into_iter().max().unwrap_or(0),
    )
}

fn percentile(times: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() - 1) as f64 * p).round() as usize]
}

struct Phase {
    name: &'static str,
    stable_token: u64,
    getticket: u64,
    dynamodb: (f64, usize),
    times: Vec<Duration>,
}

impl Phase {
    fn json(&self) -> Value {
        json!({
            "phase": self.name,
            "stable_token_calls": self.stable_token,
            "getticket_calls": self.getticket,
            "dynamodb_calls_per_instance_mean": (self.dynamodb.0 * 100.0).round() / 100.0,
            "dynamodb_calls_per_instance_max": self.dynamodb.1,
            "p50_ms": percentile(&self.times, 0.5),
            "p99_ms": percentile(&self.times, 0.99),
        })
    }
}

struct Counts<'a> {
    stack: &'a Stack,
    stable_token: u64,
    getticket: u64,
}

impl<'a> Counts<'a> {
    async fn start(stack: &'a Stack) -> Self {
        Self {
            stack,
            stable_token: stack.sim_calls("stable_token").await,
            getticket: stack.sim_calls("getticket").await,
        }
    }

    /// The phase's WeChat and DynamoDB counts since the last phase.
    async fn phase(&mut self, name: &'static str, fleet: &[Arc<Container>], times: Vec<Duration>) -> Phase {
        let stable_token = self.stack.sim_calls("stable_token").await;
        let getticket = self.stack.sim_calls("getticket").await;
        let phase = Phase {
            name,
            stable_token: stable_token - self.stable_token,
            getticket: getticket - self.getticket,
            dynamodb: dynamodb_calls(fleet),
            times,
        };
        (self.stable_token, self.getticket) = (stable_token, getticket);
        eprintln!("{}", phase.json());
        phase
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_one_token_and_one_ticket() {
    let n = fleet_size();
    let stack = Stack::start().await;
    stack.mint_code(OPENID).await;
    let tokens_table = stack.env["TOKENS_TABLE"].clone();

    // What a cold container paid for its token before the table: the app secret, then its own
    // stable_token call (fresh containers, all at once).
    let baseline_fleet = containers(&stack, n).await;
    let baseline = all_at_once(&baseline_fleet, |c| async move {
        let wechat = c.state.wechat().map_err(|e| e.to_string())?;
        let secrets = wechat.secrets.get().await.map_err(|e| e.to_string())?;
        wechat
            .client
            .stable_token(&secrets.app_secret)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await;
    drop(baseline_fleet);
    eprintln!(
        "{}",
        json!({"phase": "before: each container its own token", "stable_token_calls": n,
               "p50_ms": percentile(&baseline, 0.5), "p99_ms": percentile(&baseline, 0.99)})
    );
    let mut counts = Counts::start(&stack).await;
    let mut report = vec![];

    let fleet = containers(&stack, n).await;

    // Cold: every container needs the token (timed alone), then the ticket and a WeChat call.
    let cold = all_at_once(&fleet, |c| async move {
        c.state
            .wechat()
            .unwrap()
            .tokens()
            .unwrap()
            .get()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await;
    let phase = counts.phase("cold: the token", &fleet, cold).await;
    assert_eq!(phase.stable_token, 1, "one token for {n} cold containers");
    report.push(phase);
    let tickets = all_at_once(&fleet, |c| async move {
        let tokens = c.state.wechat().unwrap().tokens().unwrap();
        tokens.card_api_ticket().await.map_err(|e| e.to_string())?;
        call_wechat(&c.state).await?;
        Ok(())
    })
    .await;
    let phase = counts.phase("cold: the card ticket and a call", &fleet, tickets).await;
    assert_eq!(
        (phase.stable_token, phase.getticket),
        (0, 1),
        "one ticket, the token reused"
    );
    report.push(phase);

    // Warm: memory only, no DynamoDB call.
    let warm = all_at_once(&fleet, |c| async move { call_wechat(&c.state).await.map(drop) }).await;
    let phase = counts.phase("warm: a call", &fleet, warm).await;
    assert_eq!(phase.stable_token, 0);
    assert_eq!(phase.dynamodb.1, 0, "a warm call reads nothing from DynamoDB");
    report.push(phase);

    // One cold container at a time (no queue at moto): what its token costs now that the item
    // is there, against fetching its own as before.
    let (mut shared_alone, mut own_alone) = (vec![], vec![]);
    for _ in 0..20 {
        let fresh = container(&stack, None).await;
        let began = Instant::now();
        fresh.state.wechat().unwrap().tokens().unwrap().get().await.unwrap();
        shared_alone.push(began.elapsed());
        let fresh = container(&stack, None).await;
        let began = Instant::now();
        let wechat = fresh.state.wechat().unwrap();
        let secrets = wechat.secrets.get().await.unwrap();
        wechat.client.stable_token(&secrets.app_secret).await.unwrap();
        own_alone.push(began.elapsed());
    }
    counts.stable_token += 20;
    let alone = json!({
        "shared_item_p50_ms": percentile(&shared_alone, 0.5), "shared_item_p99_ms": percentile(&shared_alone, 0.99),
        "own_token_p50_ms": percentile(&own_alone, 0.5), "own_token_p99_ms": percentile(&own_alone, 0.99),
    });
    eprintln!("one cold container alone: {alone}");

    // A table read alone yields no usable token: the item holds neither it nor anything WeChat takes.
    let token = fleet[0].state.wechat().unwrap().tokens().unwrap().get().await.unwrap();
    let item = stack
        .dynamodb()
        .get_item()
        .table_name(&tokens_table)
        .key(
            attr::NAME,
            aws_sdk_dynamodb::types::AttributeValue::S(ACCESS_TOKEN.into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("the shared token item");
    let stored = format!("{item:?}");
    assert!(!stored.contains(token.expose()), "the token is sealed in the table");

    // WeChat invalidates the token (40001): the fleet replaces it once.
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    let invalidated = all_at_once(&fleet, |c| async move { call_wechat(&c.state).await.map(drop) }).await;
    let phase = counts.phase("token invalidated by WeChat", &fleet, invalidated).await;
    assert_eq!(phase.stable_token, 1, "one replacement, not one per container");
    report.push(phase);

    // The simulator's clock passes the token's expiry (42001): again one replacement.
    stack.sim_post("/__sim/time", json!({"advance_secs": 7200})).await;
    stack.mint_code(OPENID).await;
    let expired = all_at_once(&fleet, |c| async move { call_wechat(&c.state).await.map(drop) }).await;
    let phase = counts.phase("token expired", &fleet, expired).await;
    assert_eq!(phase.stable_token, 1, "one replacement after the expiry");
    report.push(phase);

    // The container refreshing the token dies mid-refresh (its stable_token call hangs, its task
    // is killed while it holds a 2 s lease): the fleet waits at most the lease, then one takes over.
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    stack
        .sim_post("/__sim/faults", json!({"api": "stable_token", "delay_ms": 30_000}))
        .await;
    let doomed = Arc::new(container(&stack, Some(Duration::from_secs(2))).await);
    let holder = tokio::spawn({
        let doomed = doomed.clone();
        async move { call_wechat(&doomed.state).await }
    });
    let dynamodb = stack.dynamodb();
    let owner_of = |item: &Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>| {
        item.as_ref()
            .and_then(|i| i.get(attr::LEASE_OWNER))
            .and_then(|v| v.as_s().ok())
            .cloned()
    };
    let mut waited = 0;
    loop {
        let item = dynamodb
            .get_item()
            .table_name(&tokens_table)
            .key(
                attr::NAME,
                aws_sdk_dynamodb::types::AttributeValue::S(ACCESS_TOKEN.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item;
        if owner_of(&item).is_some() {
            break;
        }
        waited += 1;
        assert!(waited < 500, "the doomed container never took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    stack
        .http
        .delete(format!("{}/__sim/faults", stack.sim.base_url()))
        .send()
        .await
        .unwrap();
    let after_kill = all_at_once(&fleet, |c| async move { call_wechat(&c.state).await.map(drop) }).await;
    let phase = counts
        .phase("lease holder killed mid-refresh", &fleet, after_kill)
        .await;
    assert!(
        (1..=3).contains(&phase.stable_token),
        "the killed holder's call, then one or two more: {}",
        phase.stable_token
    );
    report.push(phase);

    if let Ok(path) = std::env::var("FLEET_REPORT") {
        let document = json!({
            "instances": n,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "baseline_own_token": {
                "p50_ms": percentile(&baseline, 0.5),
                "p99_ms": percentile(&baseline, 0.99),
                "stable_token_calls": n,
            },
            "phases": report.iter().map(Phase::json).collect::<Vec<_>>(),
            "one_cold_container_alone": alone,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    }
}

#[tokio::test]
async fn without_its_table_a_container_fetches_its_own_token() {
    let stack = Stack::start().await;
    stack.mint_code(OPENID).await;
    let lost = container_with(&stack, None, &[("TOKENS_TABLE", "no-such-table")]).await;
    call_wechat(&lost.state)
        .await
        .expect("the call succeeds without the shared item");
    call_wechat(&lost.state).await.expect("and again, from memory");
    assert_eq!(stack.sim_calls("stable_token").await, 1);
}
