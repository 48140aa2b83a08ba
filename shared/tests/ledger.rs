//! The ledger's proof (issue 22): random schedules of a shop's operations — orders created,
//! placed, paid and closed; partial and full refunds applied for, retried, asked about and
//! settled; merchant transfers created, confirmed by their user, cancelled, failed and asked
//! about; the reconciler — run against the simulator while a fault is injected at WeChat Pay
//! calls (the request lost before it landed, a timeout before it landed, the answer lost after
//! it landed, a timeout after it landed, 429, 500, business refusals, an answer whose signature
//! does not verify), the
//! function crashes between two of its DynamoDB writes, and WeChat Pay's notifications are
//! dropped, duplicated, delayed and reordered. After each schedule the faults stop, the
//! reconciler runs twice and the notifications drain; then our ledger must equal WeChat Pay's
//! own (`/__sim/pay/ledger`):
//! - every order's state is WeChat Pay's (paid ⇔ paid there, with its transaction; closed there
//!   ⇒ closed here);
//! - every refund WeChat Pay has is here in the same state, and one it does not have is FAILED;
//!   no refund WeChat Pay paid is FAILED or CLOSED here;
//! - an order's `refunded_total` is the sum of its refunds that are not CLOSED at WeChat Pay;
//! - every merchant transfer (商家转账) WeChat Pay has is here in the same state and amount, and
//!   one it does not have is FAIL;
//! - nothing is pending, and nothing is flagged for attention.
//!
//! Seeded and reproducible: `LEDGER_SCHEDULES` (2,000 by default; `make bench` runs 50,000),
//! `LEDGER_WORKERS` (schedules run side by side on stacks of their own, 6), `LEDGER_SEED` (the
//! first seed; a failure prints the seed that replays it alone with `LEDGER_SCHEDULES=1`),
//! `LEDGER_MOTOS` (moto servers the workers share, 1), `LEDGER_ROTATE` (schedules per world before
//! it gets fresh tables, 250), `LEDGER_REPORT` (a JSON file for the figures).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::StalledStreamProtectionConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use testkit::{CRASH, Crash, Stack, authed_event, event, read};
use wxa_shared::clock::now_unix;
use wxa_shared::config::Parts;
use wxa_shared::handlers::{merchant, pay_notify, pay_sign, reconciler};
use wxa_shared::{AppState, Config};

/// SplitMix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What the simulator can do to one WeChat Pay call.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The request never reaches WeChat Pay.
    CutBefore,
    /// The request hangs until the client gives up, and never reaches WeChat Pay.
    TimeoutBefore,
    /// WeChat Pay carries the request out; its answer is lost.
    CutAfter,
    /// WeChat Pay carries it out and answers after the client gave up.
    TimeoutAfter,
    TooManyRequests,
    SystemError,
    NotEnough,
    InvalidRequest,
    ParamError,
    /// An answer whose signature does not verify (carried out).
    BadSignature,
}

const FAULTS: [Fault; 10] = [
    Fault::CutBefore,
    Fault::TimeoutBefore,
    Fault::CutAfter,
    Fault::TimeoutAfter,
    Fault::TooManyRequests,
    Fault::SystemError,
    Fault::NotEnough,
    Fault::InvalidRequest,
    Fault::ParamError,
    Fault::BadSignature,
];

/// The client's timeout for a WeChat Pay call in these schedules, and the late answer's delay.
const PAY_TIMEOUT: Duration = Duration::from_millis(300);
const LATE_ANSWER_MS: u64 = 450;

impl Fault {
    fn json(self, api: &str) -> Value {
        let error = |status: u16, code: &str| json!({"api": api, "pay_error": {"status": status, "code": code, "message": "injected"}});
        match self {
            Self::CutBefore => json!({"api": api, "cut": "before"}),
            Self::TimeoutBefore => json!({"api": api, "delay_ms": LATE_ANSWER_MS, "cut": "before"}),
            Self::CutAfter => json!({"api": api, "cut": "after"}),
            Self::TimeoutAfter => json!({"api": api, "delay_after_ms": LATE_ANSWER_MS}),
            Self::TooManyRequests => error(429, "FREQUENCY_LIMITED"),
            Self::SystemError => error(500, "SYSTEM_ERROR"),
            Self::NotEnough => error(403, "NOT_ENOUGH"),
            Self::InvalidRequest => error(400, "INVALID_REQUEST"),
            Self::ParamError => error(400, "PARAM_ERROR"),
            Self::BadSignature => json!({"api": api, "bad_signature": true}),
        }
    }
}

/// How WeChat Pay ends a refund, as often as it does in these schedules.
const OUTCOMES: [&str; 5] = ["SUCCESS", "SUCCESS", "SUCCESS", "CLOSED", "ABNORMAL"];

/// The buyers (and payees) of every schedule.
const USERS: [&str; 2] = ["o_ledger_a", "o_ledger_b"];

/// One schedule's operations.
#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Sign(usize),
    Pay(usize),
    Close(usize),
    GetOrder(usize),
    Refund {
        order: usize,
        refund: usize,
    },
    GetRefund(usize),
    SettleRefund {
        refund: usize,
        outcome: &'static str,
    },
    CreateTransfer(usize),
    /// The user taps through `wx.requestMerchantTransfer` with the package the confirm route gave.
    ConfirmTransfer(usize),
    CancelTransfer(usize),
    GetTransfer(usize),
    /// WeChat Pay fails the transfer (the user's wallet cannot take it).
    FailTransfer(usize),
    Deliver,
    Reconcile,
}

impl Op {
    /// The WeChat Pay APIs the operation may call (faults go there).
    fn apis(&self) -> &'static [&'static str] {
        match self {
            Self::Sign(_) => &["pay_jsapi"],
            Self::Close(_) => &["pay_close", "pay_query"],
            Self::GetOrder(_) => &["pay_query"],
            Self::Refund { .. } | Self::GetRefund(_) => &["refund", "refund_query"],
            Self::CreateTransfer(_) | Self::GetTransfer(_) | Self::ConfirmTransfer(_) => {
                &["transfer_create", "transfer_query"]
            }
            Self::CancelTransfer(_) => &["transfer_cancel", "transfer_query", "transfer_create"],
            Self::Reconcile => &[
                "pay_query",
                "pay_close",
                "refund",
                "refund_query",
                "transfer_create",
                "transfer_query",
            ],
            _ => &[],
        }
    }
}

struct ModelOrder {
    out_trade_no: String,
    user: usize,
    amount: u64,
    prepay_id: Option<String>,
    /// What the schedule tried already (its outcome is the ledger's to know).
    created: bool,
    paid: bool,
}

struct ModelTransfer {
    out_bill_no: String,
    user: usize,
    amount: u64,
    created: bool,
}

struct ModelRefund {
    out_refund_no: String,
    order: usize,
    amount: u64,
}

/// A notification WeChat Pay sent (held by the simulator, delivered by the schedule).
#[derive(Clone)]
struct Notification {
    label: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// One worker's world: a stack of its own, the functions' state with crashes and a short pay
/// timeout, two logged-in users.
struct World {
    stack: Stack,
    /// The functions' state once the faults stop: WeChat Pay's usual timeout, so that a machine
    /// slowed down by the other workers is not taken for a fault.
    calm: Arc<AppState>,
    /// The test's own reads of the tables.
    reader: aws_sdk_dynamodb::Client,
    state: Arc<AppState>,
    crash: Crash,
    /// Crashes that happened (an armed crash is reached only by an operation with that many writes).
    crashes: std::sync::atomic::AtomicU64,
    tokens: [String; 2],
}

impl World {
    async fn new(moto: &str) -> Self {
        let stack = Stack::start_on(moto, |_| {}).await;
        stack.enable_pay().await;
        let crash = Crash::default();
        // moto is one Python process serving every worker on 2 cores: the clients wait for it
        // as long as it takes, so that a slow moto is never mistaken for a fault of the ledger
        // (the faults are WeChat Pay's and the crashes, injected on purpose).
        let patient = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(30))
            .operation_attempt_timeout(Duration::from_secs(120))
            .operation_timeout(Duration::from_secs(120))
            .build();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
                .timeout_config(patient.clone())
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                .interceptor(crash.clone())
                .build(),
        );
        let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&stack.sdk)
                .timeout_config(patient.clone())
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                .build(),
        );
        let reader = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
                .timeout_config(patient)
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                .build(),
        );
        let config =
            || Config::from_lookup(Parts::ALL, |name| stack.env.get(name).cloned()).expect("the test config is valid");
        let mut hurried = config();
        hurried.wechat_timeout = PAY_TIMEOUT;
        let state = Arc::new(AppState::from_clients(
            hurried,
            dynamodb.clone(),
            secretsmanager.clone(),
            &testkit::test_tls(),
        ));
        let calm = Arc::new(AppState::from_clients(
            config(),
            dynamodb,
            secretsmanager,
            &testkit::test_tls(),
        ));
        stack
            .sim_post("/__sim/pay/notifications/hold", json!({"hold": true}))
            .await;
        let tokens = [stack.log_in(USERS[0]).await, stack.log_in(USERS[1]).await];
        Self {
            stack,
            calm,
            reader,
            state,
            crash,
            crashes: Default::default(),
            tokens,
        }
    }

    /// Whether a task ended in a simulated crash (counted), rather than another panic.
    fn crashed(&self, e: tokio::task::JoinError) -> bool {
        let crashed = e.try_into_panic().ok().is_some_and(|payload| {
            payload.downcast_ref::<&str>() == Some(&CRASH)
                || payload.downcast_ref::<String>().is_some_and(|s| s == CRASH)
        });
        if crashed {
            self.crashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        crashed
    }

    async fn sim_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.stack.sim.base_url());
        self.stack.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Posts to the simulator's admin API, whatever it answers (a refused payment is a 409).
    async fn sim_try(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .stack
            .http
            .post(format!("{}{path}", self.stack.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn clear_faults(&self) {
        let url = format!("{}/__sim/faults", self.stack.sim.base_url());
        self.stack.http.delete(url).send().await.unwrap();
    }

    /// The notifications the simulator holds, taken from it.
    async fn take_notifications(&self) -> Vec<Notification> {
        let (_, taken) = self.sim_try("/__sim/pay/notifications/take", json!({})).await;
        taken["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| Notification {
                label: format!("{} {} {}", n["kind"], n["key"], n["state"]),
                headers: n["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                body: n["body"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Delivers a notification to pay-notify as API Gateway would; whether it was acknowledged
    /// (WeChat Pay sends it again otherwise).
    async fn deliver(&self, notification: &Notification) -> Result<bool, String> {
        let mut request = event("pay-notify.json");
        let headers = request.headers_mut();
        for name in [
            "wechatpay-timestamp",
            "wechatpay-nonce",
            "wechatpay-signature",
            "wechatpay-serial",
        ] {
            headers.remove(name);
        }
        for (k, v) in &notification.headers {
            headers.insert(
                lambda_http::http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                v.parse().expect("a header value"),
            );
        }
        *request.body_mut() = lambda_http::Body::Text(notification.body.clone());
        let state = self.state.clone();
        let answer = tokio::spawn(async move { pay_notify::FUNCTION.handle(&state, request).await }).await;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                if status >= 500 && status != 503 {
                    return Err(format!("pay-notify answered {status} to {}", notification.label));
                }
                Ok((200..300).contains(&status))
            }
            Err(e) => match self.crashed(e) {
                true => Ok(false),
                false => Err(format!("pay-notify panicked on {}", notification.label)),
            },
        }
    }

    /// `POST /transfers/{out_bill_no}/confirm` by the bill's user: the package for
    /// `wx.requestMerchantTransfer`, or why not.
    async fn confirm_route(&self, transfer: &ModelTransfer) -> Result<(u16, Value), String> {
        self.confirm_route_with(self.state.clone(), transfer).await
    }

    /// [`World::confirm_route`] answered by `state` (the calm one once the faults stop).
    async fn confirm_route_with(&self, state: Arc<AppState>, transfer: &ModelTransfer) -> Result<(u16, Value), String> {
        let text = std::fs::read_to_string(testkit::workspace_root().join("events/transfer-confirm.json"))
            .expect("the event file is there");
        let mut request = lambda_http::request::from_str(&text.replace("B20261126000001", &transfer.out_bill_no))
            .expect("the event parses");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.tokens[transfer.user])
                .parse()
                .expect("a header value"),
        );
        match tokio::spawn(async move { pay_sign::FUNCTION.handle(&state, request).await }).await {
            Ok(response) => {
                let (status, params) = read(&response);
                if trace() {
                    eprintln!("    confirm: {status} {params}");
                }
                check_error(&params["error"])?;
                Ok((status, params))
            }
            Err(e) => match self.crashed(e) {
                true => Ok((0, Value::Null)),
                false => Err("the confirm route panicked".into()),
            },
        }
    }

    async fn merchant(&self, command: Value) -> Result<Value, String> {
        let state = self.state.clone();
        let answer = tokio::spawn(async move {
            merchant::FUNCTION
                .invoke(&state, command, &lambda_http::Context::default())
                .await
        })
        .await;
        match answer {
            Ok(answer) => {
                if trace() {
                    eprintln!("    merchant: {answer}");
                }
                check_error(&answer["error"]).map(|()| answer)
            }
            Err(e) => match self.crashed(e) {
                true => Ok(Value::Null),
                false => Err("the merchant function panicked".into()),
            },
        }
    }

    async fn item(&self, table: &str, key: &str, value: &str) -> Option<HashMap<String, AttributeValue>> {
        self.reader
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("the table is there")
            .item
    }

    async fn order_item(&self, out_trade_no: &str) -> Option<HashMap<String, AttributeValue>> {
        self.reader
            .get_item()
            .table_name(&self.stack.orders_table)
            .key("out_trade_no", AttributeValue::S(out_trade_no.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("orders table")
            .item
    }

    async fn refund_item(&self, out_refund_no: &str) -> Option<HashMap<String, AttributeValue>> {
        self.reader
            .get_item()
            .table_name(format!("{}-refunds", self.stack.orders_table))
            .key("out_refund_no", AttributeValue::S(out_refund_no.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("refunds table")
            .item
    }

    /// Items still in a table's pending index.
    async fn pending(&self, table: &str, kind: &str) -> Vec<String> {
        let answer = self
            .reader
            .query()
            .table_name(table)
            .index_name("PendingIndex")
            .key_condition_expression("#p = :kind")
            .expression_attribute_names("#p", "pending")
            .expression_attribute_values(":kind", AttributeValue::S(kind.into()))
            .send()
            .await
            .expect("pending index");
        answer.items().iter().map(|item| format!("{item:?}")).collect()
    }
}

/// A refusal is expected under faults; a server error of ours is not.
fn check_error(error: &Value) -> Result<(), String> {
    match error["code"].as_str() {
        Some("server_misconfigured" | "internal_error") => Err(format!("an error of ours: {error}")),
        _ => Ok(()),
    }
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What a schedule did, for the report.
#[derive(Default)]
struct Tally {
    ops: u64,
    /// Operations by kind.
    by_kind: BTreeMap<String, u64>,
    faults: u64,
    notifications_delivered: u64,
    notifications_dropped: u64,
}

/// Runs the schedule of `seed` on `world` and checks the invariants. The error names what broke.
async fn schedule(world: &World, seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut rng = Rng(seed);
    let orders: Vec<ModelOrder> = (0..1 + rng.below(2))
        .map(|i| ModelOrder {
            out_trade_no: format!("L{seed:016x}O{i}"),
            user: rng.below(2) as usize,
            amount: 1 + rng.below(5000),
            prepay_id: None,
            created: false,
            paid: false,
        })
        .collect();
    let mut orders = orders;
    let mut transfers: Vec<ModelTransfer> = (0..rng.below(3))
        .map(|i| ModelTransfer {
            out_bill_no: format!("B{seed:016x}T{i}"),
            user: rng.below(2) as usize,
            amount: 10 + rng.below(5000),
            created: false,
        })
        .collect();
    let mut refunds: Vec<ModelRefund> = Vec::new();
    let mut pool: Vec<Notification> = Vec::new();
    let steps = 4 + rng.below(9);
    for _ in 0..steps {
        // A quarter of the steps are about the transfers, the rest about orders and refunds.
        let op = if !transfers.is_empty() && rng.chance(25) {
            let i = rng.below(transfers.len() as u64) as usize;
            match rng.below(10) {
                _ if !transfers[i].created => Op::CreateTransfer(i),
                0..=1 => Op::CreateTransfer(i),
                2..=5 => Op::ConfirmTransfer(i),
                6 => Op::CancelTransfer(i),
                7 => Op::GetTransfer(i),
                _ => Op::FailTransfer(i),
            }
        } else {
            order_op(&mut rng, seed, &orders, &mut refunds)
        };
        tally.ops += 1;
        let kind = format!("{op:?}");
        let kind = kind.split([' ', '(']).next().unwrap_or_default().to_owned();
        *tally.by_kind.entry(kind).or_default() += 1;
        // Faults at the WeChat Pay calls this operation makes.
        let apis = op.apis();
        if !apis.is_empty() && rng.chance(70) {
            for _ in 0..1 + rng.below(3) {
                let api = *rng.pick(apis);
                let fault = rng.pick(&FAULTS).json(api);
                world.stack.sim_post("/__sim/faults", fault).await;
                tally.faults += 1;
            }
        }
        if rng.chance(15) {
            world.crash.arm(1 + rng.below(2) as u32);
        }
        if trace() {
            eprintln!("[{seed}] {op:?}");
        }
        run(
            world,
            &op,
            &mut orders,
            &refunds,
            &mut transfers,
            &mut pool,
            &mut rng,
            tally,
        )
        .await?;
        // A crash armed and not reached ends with the operation.
        world.crash.disarm();
        world.clear_faults().await;
        for notification in world.take_notifications().await {
            // A notification WeChat Pay gave up on (or never sent): the reconciler must do.
            if rng.chance(15) {
                tally.notifications_dropped += 1;
            } else {
                pool.push(notification);
            }
        }
    }

    // The faults stop: the reconciler runs twice, WeChat Pay settles what it holds, and every
    // notification still owed arrives (some twice, in any order).
    let later = now_unix() + 3 * 3600;
    for _ in 0..2 {
        let report = reconciler::reconcile_at(&world.calm, later)
            .await
            .map_err(|e| format!("the reconciler failed: {e:?}"))?;
        if report["errors"].as_u64() != Some(0) {
            return Err(format!("the reconciler met errors without faults: {report}"));
        }
        // WeChat Pay finishes the refunds it still processes.
        let ledger = world.sim_get("/__sim/pay/ledger").await;
        for refund in &refunds {
            let processing = ledger["refunds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["out_refund_no"] == refund.out_refund_no.as_str() && r["status"] == "PROCESSING");
            if processing {
                let body = json!({"out_refund_no": refund.out_refund_no, "status": "SUCCESS"});
                world.sim_try("/__sim/pay/refund/settle", body).await;
            }
        }
        // Bills waiting at WeChat Pay: their user confirms them now, with the package our route
        // hands out. A bill our ledger will not hand out stays waiting, and the check says so.
        for transfer in &transfers {
            let waiting = ledger["transfers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["out_bill_no"] == transfer.out_bill_no.as_str() && b["state"] == "WAIT_USER_CONFIRM");
            if waiting {
                let (status, params) = world.confirm_route_with(world.calm.clone(), transfer).await?;
                if status == 200 {
                    let body = json!({"package": params["package"], "openid": USERS[transfer.user]});
                    world.sim_try("/__sim/pay/transfer/confirm", body).await;
                }
            }
        }
        pool.extend(world.take_notifications().await);
        drain(world, &mut pool, &mut rng, tally).await?;
    }
    check(world, &orders, &refunds, &transfers).await
}

/// An operation on the schedule's orders and refunds: mostly an order's next step in a shop's
/// life, else anything at all.
fn order_op(rng: &mut Rng, seed: u64, orders: &[ModelOrder], refunds: &mut Vec<ModelRefund>) -> Op {
    let order = rng.below(orders.len() as u64) as usize;
    let natural = rng.chance(55);
    match rng.below(100) {
        _ if natural && !orders[order].created => Op::Create(order),
        _ if natural && orders[order].prepay_id.is_none() => Op::Sign(order),
        _ if natural && !orders[order].paid => Op::Pay(order),
        0..12 => Op::Create(order),
        12..24 => Op::Sign(order),
        24..38 => Op::Pay(order),
        38..44 => Op::Close(order),
        44..50 => Op::GetOrder(order),
        50..70 => {
            // A new refund, or a retry of one (same number, same amount).
            let retry = !refunds.is_empty() && rng.chance(30);
            let refund = if retry {
                rng.below(refunds.len() as u64) as usize
            } else {
                let amount = 1 + rng.below(orders[order].amount);
                refunds.push(ModelRefund {
                    out_refund_no: format!("R{seed:016x}N{}", refunds.len()),
                    order,
                    amount,
                });
                refunds.len() - 1
            };
            Op::Refund {
                order: refunds[refund].order,
                refund,
            }
        }
        70..76 if !refunds.is_empty() => Op::GetRefund(rng.below(refunds.len() as u64) as usize),
        76..84 if !refunds.is_empty() => Op::SettleRefund {
            refund: rng.below(refunds.len() as u64) as usize,
            outcome: OUTCOMES[rng.below(OUTCOMES.len() as u64) as usize],
        },
        84..92 => Op::Deliver,
        _ => Op::Reconcile,
    }
}

/// Delivers every notification of the pool, shuffled, some twice, until each is acknowledged.
async fn drain(world: &World, pool: &mut Vec<Notification>, rng: &mut Rng, tally: &mut Tally) -> Result<(), String> {
    for _ in 0..5 {
        if pool.is_empty() {
            return Ok(());
        }
        shuffle(pool, rng);
        let mut unacknowledged = Vec::new();
        for notification in pool.drain(..) {
            let copies = 1 + u64::from(rng.chance(25));
            let mut acknowledged = false;
            for _ in 0..copies {
                acknowledged |= world.deliver(&notification).await?;
                tally.notifications_delivered += 1;
            }
            if !acknowledged {
                unacknowledged.push(notification);
            }
        }
        *pool = unacknowledged;
    }
    Err(format!(
        "{} notifications were never acknowledged: {}",
        pool.len(),
        pool.iter().map(|n| n.label.as_str()).collect::<Vec<_>>().join(", ")
    ))
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    world: &World,
    op: &Op,
    orders: &mut [ModelOrder],
    refunds: &[ModelRefund],
    transfers: &mut [ModelTransfer],
    pool: &mut Vec<Notification>,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<(), String> {
    match *op {
        Op::Create(o) => {
            orders[o].created = true;
            let order = &orders[o];
            let openid = USERS[order.user];
            world
                .merchant(
                    json!({"op": "create_order", "out_trade_no": order.out_trade_no, "openid": openid,
                                 "description": "A pot of tea", "amount_total": order.amount}),
                )
                .await?;
        }
        Op::Sign(o) => {
            let body = json!({ "out_trade_no": orders[o].out_trade_no });
            let request = authed_event("pay-sign.json", &world.tokens[orders[o].user], Some(&body));
            let state = world.state.clone();
            let answer = tokio::spawn(async move { pay_sign::FUNCTION.handle(&state, request).await }).await;
            match answer {
                Ok(response) => {
                    let (status, params) = read(&response);
                    if trace() {
                        eprintln!("    pay-sign: {status} {params}");
                    }
                    check_error(&params["error"])?;
                    if status == 200 {
                        let package = params["package"].as_str().unwrap_or_default();
                        orders[o].prepay_id = Some(package.trim_start_matches("prepay_id=").to_owned());
                    }
                }
                Err(e) => {
                    if !world.crashed(e) {
                        return Err("pay-sign panicked".into());
                    }
                }
            }
        }
        Op::Pay(o) => {
            // The user pays in the WeChat client (a closed order cannot be paid: 409).
            if let Some(prepay_id) = &orders[o].prepay_id {
                orders[o].paid = true;
                let paid = world
                    .sim_try("/__sim/pay/complete", json!({ "prepay_id": prepay_id }))
                    .await;
                if trace() {
                    eprintln!("    paid: {paid:?}");
                }
            }
        }
        Op::Close(o) => {
            world
                .merchant(json!({"op": "close_order", "out_trade_no": orders[o].out_trade_no}))
                .await?;
        }
        Op::GetOrder(o) => {
            world
                .merchant(json!({"op": "get_order", "out_trade_no": orders[o].out_trade_no}))
                .await?;
        }
        Op::Refund { order, refund } => {
            let refund = &refunds[refund];
            world
                .merchant(json!({"op": "refund", "out_trade_no": orders[order].out_trade_no,
                                 "out_refund_no": refund.out_refund_no, "amount": refund.amount}))
                .await?;
        }
        Op::GetRefund(r) => {
            world
                .merchant(json!({"op": "get_refund", "out_refund_no": refunds[r].out_refund_no}))
                .await?;
        }
        Op::SettleRefund { refund, outcome } => {
            let body = json!({"out_refund_no": refunds[refund].out_refund_no, "status": outcome});
            world.sim_try("/__sim/pay/refund/settle", body).await;
        }
        Op::CreateTransfer(i) => {
            transfers[i].created = true;
            let transfer = &transfers[i];
            world
                .merchant(json!({"op": "create_transfer", "out_bill_no": transfer.out_bill_no,
                                 "openid": USERS[transfer.user], "amount": transfer.amount,
                                 "scene_id": "1000", "remark": "新会员开通有礼",
                                 "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"},
                                                  {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}]}))
                .await?;
        }
        Op::ConfirmTransfer(i) => {
            let transfer = &transfers[i];
            let (status, params) = world.confirm_route(transfer).await?;
            if status == 200 {
                let body = json!({"package": params["package"], "openid": USERS[transfer.user]});
                let confirmed = world.sim_try("/__sim/pay/transfer/confirm", body).await;
                if trace() {
                    eprintln!("    confirmed: {confirmed:?}");
                }
            }
        }
        Op::CancelTransfer(i) => {
            world
                .merchant(json!({"op": "cancel_transfer", "out_bill_no": transfers[i].out_bill_no}))
                .await?;
        }
        Op::GetTransfer(i) => {
            world
                .merchant(json!({"op": "get_transfer", "out_bill_no": transfers[i].out_bill_no}))
                .await?;
        }
        Op::FailTransfer(i) => {
            let body = json!({"out_bill_no": transfers[i].out_bill_no, "reason": "PAYEE_ACCOUNT_ABNORMAL"});
            world.sim_try("/__sim/pay/transfer/fail", body).await;
        }
        Op::Deliver => {
            // Some of what is owed arrives now, in any order, some twice; the rest later.
            shuffle(pool, rng);
            let now: Vec<Notification> = std::mem::take(pool);
            for notification in now {
                if rng.chance(40) {
                    pool.push(notification);
                    continue;
                }
                let mut acknowledged = false;
                for _ in 0..1 + u64::from(rng.chance(25)) {
                    acknowledged |= world.deliver(&notification).await?;
                    tally.notifications_delivered += 1;
                }
                if !acknowledged {
                    pool.push(notification);
                }
            }
        }
        Op::Reconcile => {
            let state = world.state.clone();
            let later = now_unix() + reconciler::GRACE_SECS + 1;
            match tokio::spawn(async move { reconciler::reconcile_at(&state, later).await }).await {
                Ok(_) => {}
                Err(e) => {
                    if !world.crashed(e) {
                        return Err("the reconciler panicked".into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// The invariants: our ledger equals WeChat Pay's.
async fn check(
    world: &World,
    orders: &[ModelOrder],
    refunds: &[ModelRefund],
    transfers: &[ModelTransfer],
) -> Result<(), String> {
    let ledger = world.sim_get("/__sim/pay/ledger").await;
    let find = |list: &str, key: &str, value: &str| {
        ledger[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| item[key] == value)
            .cloned()
    };
    let mut problems = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let no = &order.out_trade_no;
        let local = world.order_item(no).await;
        let wechat = find("orders", "out_trade_no", no);
        let local_status = local.as_ref().and_then(|item| text(item, "status"));
        let wechat_state = wechat
            .as_ref()
            .and_then(|w| w["trade_state"].as_str().map(str::to_owned));
        match (local_status.as_deref(), wechat_state.as_deref()) {
            (Some("PAID"), Some("SUCCESS" | "REFUND")) => {
                let local_tx = local.as_ref().and_then(|item| text(item, "transaction_id"));
                let wechat_tx = wechat
                    .as_ref()
                    .and_then(|w| w["transaction_id"].as_str().map(str::to_owned));
                if local_tx != wechat_tx {
                    problems.push(format!(
                        "{no}: transaction {local_tx:?} here, {wechat_tx:?} at WeChat Pay"
                    ));
                }
            }
            // Never placed: unknown to WeChat Pay. (An order placed there is pending here from
            // the first attempt on, so the last reconciler runs close it on both sides.)
            (Some("CLOSED"), Some("CLOSED") | None) | (Some("UNPAID"), None) | (None, None) => {}
            (local, wechat) => problems.push(format!("{no}: {local:?} here, {wechat:?} at WeChat Pay")),
        }
        if let Some(item) = &local {
            if item.get("needs_attention").and_then(|v| v.as_bool().ok()) == Some(&true) {
                problems.push(format!(
                    "{no}: flagged for attention: {:?}",
                    text(item, "attention_reason")
                ));
            }
            // What the order reserves for refunds: its refunds that are not closed at WeChat Pay.
            let owed: u64 = refunds
                .iter()
                .filter(|r| r.order == i)
                .filter_map(|r| find("refunds", "out_refund_no", &r.out_refund_no))
                .filter(|w| w["status"] != "CLOSED")
                .map(|w| w["refund"].as_u64().unwrap_or(0))
                .sum();
            let refunded_total = number(item, "refunded_total");
            if refunded_total != owed {
                problems.push(format!(
                    "{no}: refunded_total {refunded_total} here, WeChat Pay's open and paid refunds {owed}"
                ));
            }
        }
    }
    for refund in refunds {
        let no = &refund.out_refund_no;
        let local = world.refund_item(no).await;
        let wechat = find("refunds", "out_refund_no", no);
        let local_status = local.as_ref().and_then(|item| text(item, "status"));
        let wechat_status = wechat.as_ref().and_then(|w| w["status"].as_str().map(str::to_owned));
        match (local_status.as_deref(), wechat_status.as_deref()) {
            (None, None) | (Some("FAILED"), None) => {}
            (Some(here), Some(there)) if here == there => {}
            (here, there) => problems.push(format!("refund {no}: {here:?} here, {there:?} at WeChat Pay")),
        }
        if let Some(item) = &local
            && item.get("needs_attention").and_then(|v| v.as_bool().ok()) == Some(&true)
        {
            problems.push(format!("refund {no}: flagged for attention"));
        }
    }
    for transfer in transfers {
        let no = &transfer.out_bill_no;
        let local = world
            .item(&format!("{}-transfers", world.stack.orders_table), "out_bill_no", no)
            .await;
        let wechat = find("transfers", "out_bill_no", no);
        let local_state = local.as_ref().and_then(|item| text(item, "state"));
        let wechat_state = wechat.as_ref().and_then(|w| w["state"].as_str().map(str::to_owned));
        match (local_state.as_deref(), wechat_state.as_deref()) {
            // FAIL without a bill at WeChat Pay: refused, and asked about (404).
            (None, None) | (Some("FAIL"), None) => {}
            (Some(here), Some(there)) if here == there => {
                let amount = wechat.as_ref().and_then(|w| w["transfer_amount"].as_u64());
                if amount != Some(transfer.amount) {
                    problems.push(format!(
                        "transfer {no}: {amount:?} fen at WeChat Pay, {} ordered",
                        transfer.amount
                    ));
                }
            }
            (here, there) => problems.push(format!("transfer {no}: {here:?} here, {there:?} at WeChat Pay")),
        }
    }
    let orders_table = world.stack.orders_table.clone();
    let pending_orders = world.pending(&orders_table, "order").await;
    let pending_refunds = world.pending(&format!("{orders_table}-refunds"), "refund").await;
    let pending_transfers = world.pending(&format!("{orders_table}-transfers"), "transfer").await;
    if !pending_orders.is_empty() || !pending_refunds.is_empty() || !pending_transfers.is_empty() {
        problems.push(format!(
            "pending after two reconciler runs: orders {pending_orders:?}, refunds {pending_refunds:?}, transfers {pending_transfers:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

/// `LEDGER_TRACE=1`: each operation and answer on stderr (for replaying a seed).
fn trace() -> bool {
    std::env::var_os("LEDGER_TRACE").is_some()
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_agrees_with_wechat_pay_under_every_fault() {
    Crash::quiet_panics();
    let schedules = setting("LEDGER_SCHEDULES", 2000);
    let workers = setting("LEDGER_WORKERS", 6).clamp(1, 32);
    let first = setting("LEDGER_SEED", 1);
    let started = Instant::now();
    // moto serves one DynamoDB request at a time (scripts/moto_server.py locks its backend):
    // `LEDGER_MOTOS` servers share the workers; 1 (the test binary's own) by default.
    let motos: Vec<testkit::Moto> = (1..setting("LEDGER_MOTOS", 1))
        .map(|_| testkit::Moto::start())
        .collect();
    let endpoints: Vec<String> = std::iter::once(testkit::moto().endpoint.clone())
        .chain(motos.iter().map(|m| m.endpoint.clone()))
        .collect();
    // moto answers a query by reading every item of the table: a world gets fresh tables every
    // `LEDGER_ROTATE` schedules, so that the rate stays the same over 50,000.
    let rotate = setting("LEDGER_ROTATE", 250).max(1);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let broken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let next = next.clone();
        let broken = broken.clone();
        let endpoint = endpoints[w as usize % endpoints.len()].clone();
        tasks.spawn(async move {
            let mut world = World::new(&endpoint).await;
            let mut ran_here = 0;
            let mut tally = Tally::default();
            let mut failures = BTreeMap::new();
            let mut crashes = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= schedules {
                    break;
                }
                let seed = first + i;
                ran_here += 1;
                // Progress on long runs (`make soak`): every 1,000th schedule started, and each
                // broken seed as soon as it is found.
                if i > 0 && i.is_multiple_of(1000) {
                    let so_far = broken.load(std::sync::atomic::Ordering::Relaxed);
                    eprintln!(
                        "ledger model: {i} of {schedules} schedules started in {:.0} s, {so_far} broken",
                        started.elapsed().as_secs_f64()
                    );
                }
                let failed = match schedule(&world, seed, &mut tally).await {
                    Err(problem) => {
                        broken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("ledger model: schedule {seed} broke the ledger: {problem}");
                        failures.insert(seed, problem).is_none()
                    }
                    Ok(()) => false,
                };
                // A fresh world after a failure (the next schedules must not inherit its
                // leftovers), and every `rotate` schedules.
                if failed || ran_here % rotate == 0 {
                    crashes += world.crashes.load(std::sync::atomic::Ordering::Relaxed);
                    world = World::new(&endpoint).await;
                }
            }
            crashes += world.crashes.load(std::sync::atomic::Ordering::Relaxed);
            (tally, crashes, failures)
        });
    }
    let mut tally = Tally::default();
    let mut crashes = 0;
    let mut failures = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (t, c, f) = done.expect("a worker ran");
        crashes += c;
        tally.ops += t.ops;
        for (kind, n) in t.by_kind {
            *tally.by_kind.entry(kind).or_default() += n;
        }
        tally.faults += t.faults;
        tally.notifications_delivered += t.notifications_delivered;
        tally.notifications_dropped += t.notifications_dropped;
        failures.extend(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ran = next.load(std::sync::atomic::Ordering::SeqCst).min(schedules);
    let report = json!({
        "schedules": ran, "workers": workers, "moto_servers": endpoints.len(), "seconds": elapsed, "schedules_per_second": ran as f64 / elapsed,
        "operations": tally.ops, "operations_by_kind": tally.by_kind, "faults_injected": tally.faults, "crashes": crashes,
        "notifications_delivered": tally.notifications_delivered, "notifications_dropped": tally.notifications_dropped,
    });
    println!("ledger model: {report}");
    if let Ok(path) = std::env::var("LEDGER_REPORT") {
        std::fs::write(path, report.to_string()).expect("the report is written");
    }
    for (seed, problem) in failures.iter().take(10) {
        eprintln!("schedule {seed}:\n  {problem}");
    }
    if let Some((seed, _)) = failures.iter().next() {
        panic!(
            "{} of {ran} schedules broke the ledger, seeds {:?}; replay one alone with LEDGER_SEED={seed} LEDGER_SCHEDULES=1 LEDGER_WORKERS=1 LEDGER_TRACE=1 cargo test -p wxa-shared --test ledger",
            failures.len(),
            failures.keys().take(50).collect::<Vec<_>>()
        );
    }
}
