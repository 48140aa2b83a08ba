//! End-to-end test support. Each test binary shares one moto server (the real AWS wire protocol
//! on 127.0.0.1); each test gets its own simulator, sessions table and secret, so tests run in
//! parallel without seeing each other's state.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use wechat_sim::{SimConfig, SimServer};
use wxa_shared::config::Parts;
use wxa_shared::function::Function;
use wxa_shared::{AppState, Config};

pub mod invoke;
pub mod keep_alive;
pub mod latency;
pub mod logs;
pub mod tls;

pub const APP_ID: &str = "wx4f4bc4dec97d474b";
pub const APP_SECRET: &str = "test-app-secret-0123456789abcdef";
/// The message push's Token and EncodingAESKey in every test's app secret (and the events').
pub const PUSH_TOKEN: &str = "wxaPushToken2026";
pub const PUSH_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tools/testkit is two levels down")
        .to_path_buf()
}

/// The project venv (`make test` creates it), or `WXA_VENV`.
fn venv() -> PathBuf {
    std::env::var_os("WXA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

/// A program of the project venv; says how to install it when it is missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test` (or scripts/venv.sh) to install the local AWS tools",
        path.display()
    );
    path
}

pub struct Moto {
    pub endpoint: String,
    child: Child,
    _watchdog: Child,
}

impl Moto {
    /// Starts a moto server on a free port. A watchdog stops it when the test process exits.
    pub fn start() -> Self {
        let port = free_port();
        // scripts/moto_server.py: moto with DynamoDB's atomic conditional writes.
        let mut child = Command::new(venv_bin("python"))
            .arg(workspace_root().join("scripts/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let watchdog = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -CONT {moto} 2>/dev/null; kill {moto} 2>/dev/null",
            parent = std::process::id(),
            moto = child.id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .spawn()
            .expect("sh runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            _watchdog: watchdog,
        }
    }

    /// Freezes the server (SIGSTOP): connections hang, as with an unreachable endpoint; state is kept.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto server this test binary shares, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The TLS configuration of tests (everything local is plain HTTP; the bundled roots cost nothing).
pub fn test_tls() -> rustls::ClientConfig {
    wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::Bundled)
}

/// SDK config pointed at `endpoint` with moto's dummy credentials, through the same timeout
/// and retry settings as production.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    sdk_config_over(endpoint, &test_tls()).await
}

/// [`sdk_config`] with its HTTP client on `tls` (for an `https://` endpoint).
pub async fn sdk_config_over(endpoint: &str, tls: &rustls::ClientConfig) -> SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::from_keys("test", "test", None));
    wxa_shared::net::aws::load_sdk_config(loader, tls).await
}

/// The simulator's app: the test app id and secret.
fn sim_config() -> SimConfig {
    SimConfig {
        app_id: APP_ID.into(),
        app_secret: APP_SECRET.into(),
    }
}

/// Creates the sessions and orders tables from `template.yaml` and the app secret, with the same
/// script `make dev` uses. The pay secret is made by [`enable_pay_on`].
pub fn setup_local_aws(endpoint: &str, table: &str, orders_table: &str, secret_id: &str, app_secret: &str) {
    let output = Command::new(venv_bin("python"))
        .arg(workspace_root().join("scripts/local_aws.py"))
        .args([
            "--endpoint",
            endpoint,
            "setup",
            "--sessions-table",
            table,
            "--app-secret-id",
            secret_id,
        ])
        .args(["--orders-table", orders_table, "--app-secret", app_secret])
        .args(["--push-secret-id", &format!("{secret_id}-push")])
        .args(["--push-token", PUSH_TOKEN, "--push-aes-key", PUSH_AES_KEY])
        .args(["--refunds-table", &format!("{orders_table}-refunds")])
        .args(["--transfers-table", &format!("{orders_table}-transfers")])
        .args(["--messages-table", &format!("{orders_table}-messages")])
        .args(["--tokens-table", &format!("{orders_table}-tokens")])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "local_aws.py setup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The key and user of the open-data sample in WeChat's docs, which the event files use.
pub const DOC_SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
pub const DOC_OPENID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";

/// A unique name for this test's table and secret.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Counts the AWS API calls made through the clients it is installed on, as `Service.Operation`,
/// and the ones that succeeded.
#[derive(Debug, Clone, Default)]
pub struct AwsCalls(Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>);

impl AwsCalls {
    /// The calls made since the last `take`.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// How many calls of `operation` (`DynamoDB.UpdateItem`) succeeded so far.
    pub fn succeeded(&self, operation: &str) -> usize {
        self.1.lock().unwrap().iter().filter(|op| *op == operation).count()
    }
}

impl Intercept for AwsCalls {
    fn name(&self) -> &'static str {
        "AwsCalls"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(operation_name(cfg));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if matches!(context.output_or_error(), Some(Ok(_))) {
            self.1.lock().unwrap().push(operation_name(cfg));
        }
        Ok(())
    }
}

/// Answers the next N DynamoDB attempts with `400 ThrottlingException` in place of moto's answer:
/// the request still goes to moto, the SDK's retry policy sees real throttling.
#[derive(Debug, Clone, Default)]
pub struct Throttle(Arc<std::sync::atomic::AtomicU32>);

impl Throttle {
    pub fn next(&self, attempts: u32) {
        self.0.store(attempts, Ordering::SeqCst);
    }
}

impl Intercept for Throttle {
    fn name(&self) -> &'static str {
        "Throttle"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let throttled = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
            let mut response = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).expect("valid status"),
                aws_smithy_types::body::SdkBody::from(body),
            );
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.0");
            *context.response_mut() = response;
        }
        Ok(())
    }
}

/// A crash of the function between two of its writes: armed with `k`, the `k`-th DynamoDB write
/// that succeeds from then on panics with [`CRASH`] once its answer is in (the write landed,
/// nothing after it runs). The test runs the function in a task of its own and sees the panic
/// as the crash; disarmed, it does nothing.
#[derive(Debug, Clone, Default)]
pub struct Crash(Arc<std::sync::atomic::AtomicI64>);

/// The panic message of a simulated crash.
pub const CRASH: &str = "simulated crash of the function";

impl Crash {
    pub fn arm(&self, after_writes: u32) {
        self.0.store(i64::from(after_writes), Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// Keeps the panics of simulated crashes out of the test's output (others still print).
    pub fn quiet_panics() {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
            if message != Some(CRASH) {
                default(info);
            }
        }));
    }
}

impl Intercept for Crash {
    fn name(&self) -> &'static str {
        "Crash"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let write = matches!(
            cfg.load::<Metadata>().map(|m| m.name()),
            Some("PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems")
        );
        if write
            && matches!(context.output_or_error(), Some(Ok(_)))
            && self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > 0).then(|| n - 1))
                == Ok(1)
        {
            std::panic::panic_any(CRASH);
        }
        Ok(())
    }
}

fn operation_name(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map(|m| format!("{}.{}", m.service(), m.name()))
        .unwrap_or_default()
}

/// One test's world: a simulator, tables and secrets on the shared moto, and the AppState the
/// functions would build from them.
pub struct Stack {
    pub sim: SimServer,
    /// Every part, so that one state serves every function; shared with the HTTP server that
    /// serves `pay-notify` at the configured `PAY_NOTIFY_URL`. A handler run through
    /// `Function::handle` / `invoke` may still use only the parts its function declares
    /// (`wxa_shared::state::as_declared`), as in production. [`Stack::state_for`] builds a
    /// function's own.
    pub state: Arc<AppState>,
    pub orders_table: String,
    notify_server: tokio::task::JoinHandle<()>,
    /// The `wechat-push` servers [`Stack::enable_push`] started.
    push_servers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub sdk: SdkConfig,
    pub table: String,
    /// The app secret's id.
    pub secret_id: String,
    pub pay_secret_id: String,
    /// The environment the functions are configured with.
    pub env: std::collections::HashMap<&'static str, String>,
    dynamodb: aws_sdk_dynamodb::Client,
    secretsmanager: aws_sdk_secretsmanager::Client,
    pub http: reqwest::Client,
    /// The AWS calls the state's clients made (not the test's own).
    pub aws_calls: AwsCalls,
    /// Throttles the state's DynamoDB client.
    pub throttle: Throttle,
    /// The TLS configuration of the state's clients ([`test_tls`], or `TLS_ROOTS=system` under
    /// [`Stack::start_tls`]).
    pub tls: rustls::ClientConfig,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack; `tune` may change the config before the state is built.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(&moto().endpoint, tune).await
    }

    /// Starts a stack on the moto server at `endpoint` (a private one, for fault tests).
    pub async fn start_on(endpoint: &str, tune: impl FnOnce(&mut Config)) -> Self {
        let sim = SimServer::start(sim_config(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("simulator starts");
        Self::start_around(sim, endpoint, None, tune).await
    }

    /// A stack whose every remote call goes over TLS, as in production: the simulator serves
    /// HTTPS with `sim_leaf` at `https://localhost:PORT`, the AWS SDK talks to `aws_endpoint`
    /// (a [`tls::TlsProxy`] in front of the shared moto server), and the functions run with
    /// `TLS_ROOTS=system`, so the roots are the CA bundle `SSL_CERT_FILE` names (the caller sets
    /// it first). The state's TLS configuration is built from that setting, and the SDK's and the
    /// test's own HTTP client on it, as `AppState::from_env` does. Tables and secrets are set up
    /// over moto's plain endpoint.
    pub async fn start_tls(aws_endpoint: &str, sim_leaf: &tls::Leaf) -> Self {
        let sim = SimServer::start_tls(
            sim_config(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &sim_leaf.chain_pem,
            &sim_leaf.key_pem,
        )
        .await
        .expect("simulator starts");
        Self::start_around(sim, &moto().endpoint, Some(aws_endpoint), |_| {}).await
    }

    /// A stack around `sim`, its tables and secrets made on the moto server at `endpoint`; the
    /// state reaches AWS at `tls_endpoint` over TLS with `TLS_ROOTS=system` when given, else at
    /// `endpoint` with [`test_tls`].
    async fn start_around(
        sim: SimServer,
        endpoint: &str,
        tls_endpoint: Option<&str>,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let endpoint = endpoint.to_owned();
        let table = unique("sessions");
        let orders_table = unique("orders");
        let secret_id = unique("wxa/app");
        let pay_secret_id = unique("wxa/pay");
        setup_local_aws(&endpoint, &table, &orders_table, &secret_id, APP_SECRET);
        // WeChat Pay notifies over HTTP: serve pay-notify on a port of its own, as API Gateway would.
        let notify_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let notify_url = format!("http://{}/pay/notify", notify_listener.local_addr().expect("bound"));
        let env: std::collections::HashMap<&'static str, String> = [
            ("APP_ID", APP_ID.to_owned()),
            ("SESSIONS_TABLE", table.clone()),
            ("ORDERS_TABLE", orders_table.clone()),
            ("REFUNDS_TABLE", format!("{orders_table}-refunds")),
            ("TRANSFERS_TABLE", format!("{orders_table}-transfers")),
            ("MESSAGES_TABLE", format!("{orders_table}-messages")),
            ("TOKENS_TABLE", format!("{orders_table}-tokens")),
            ("APP_SECRET_ID", secret_id.clone()),
            ("PUSH_SECRET_ID", format!("{secret_id}-push")),
            ("PAY_SECRET_ID", pay_secret_id.clone()),
            ("WECHAT_API_BASE", sim.base_url()),
            ("WECHATPAY_API_BASE", sim.base_url()),
            ("PAY_NOTIFY_URL", notify_url.clone()),
            ("MEDIA_URL_HOSTS", "cdn.example.com".to_owned()),
            // Budgets out of the way of tests that call a route often for one user; the budget
            // tests set their own.
            ("CALLER_BUDGET_PER_MINUTE", "60000".to_owned()),
            ("CALLER_BUDGET_BURST", "10000".to_owned()),
        ]
        .into_iter()
        .chain(tls_endpoint.map(|_| ("TLS_ROOTS", "system".to_owned())))
        .collect();
        let mut config = Config::from_lookup(Parts::ALL, |name| env.get(name).cloned()).expect("test config is valid");
        tune(&mut config);
        let (tls, sdk) = match tls_endpoint {
            Some(tls_endpoint) => {
                let tls = wxa_shared::net::tls_config(config.tls_roots);
                let sdk = sdk_config_over(tls_endpoint, &tls).await;
                (tls, sdk)
            }
            None => (test_tls(), sdk_config(&endpoint).await),
        };
        let http = match tls_endpoint {
            Some(_) => wxa_shared::net::http_client(&tls, Duration::from_secs(2), Some(Duration::from_secs(10))),
            None => reqwest::Client::new(),
        };
        let aws_calls = AwsCalls::default();
        let throttle = Throttle::default();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(aws_calls.clone())
                .interceptor(throttle.clone())
                .build(),
        );
        let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&sdk)
                .interceptor(aws_calls.clone())
                .build(),
        );
        let state = Arc::new(AppState::from_clients(
            config,
            dynamodb.clone(),
            secretsmanager.clone(),
            &tls,
        ));
        let notify_server = tokio::spawn(serve_function(
            notify_listener,
            state.clone(),
            &wxa_shared::handlers::pay_notify::FUNCTION,
        ));
        Self {
            sim,
            state,
            orders_table,
            notify_server,
            push_servers: Mutex::default(),
            sdk,
            table,
            secret_id,
            pay_secret_id,
            env,
            dynamodb,
            secretsmanager,
            http,
            aws_calls,
            throttle,
            tls,
        }
    }

    /// The state `function` builds in its own container: only the settings and clients of the
    /// parts it declares (with the stack's call counting).
    pub fn state_for(&self, function: &Function) -> AppState {
        self.state_with(function, &[])
    }

    /// [`Stack::state_for`] with some settings changed (a table or secret that does not exist).
    pub fn state_with(&self, function: &Function, overrides: &[(&str, &str)]) -> AppState {
        let lookup = |name: &str| {
            overrides
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| self.env.get(name).cloned())
        };
        let config = Config::from_lookup(function.parts, lookup).unwrap_or_else(|e| panic!("{}: {e}", function.name));
        AppState::from_clients(config, self.dynamodb.clone(), self.secretsmanager.clone(), &self.tls)
    }

    /// The test's own DynamoDB client (set-up, reading back): see [`Stack::patient`].
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.patient())
    }

    /// The test's own Secrets Manager client (set-up, reading back): see [`Stack::patient`].
    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.patient())
    }

    /// The SDK config of the test's own clients: a loaded moto is slow, not faulty, and a test's
    /// set-up is not what it tests (a 50,000-schedule soak once died on a 5 s timeout writing a
    /// secret while a build ran beside it). The state's clients keep production's timeouts.
    fn patient(&self) -> SdkConfig {
        let patient = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(60))
            .build();
        self.sdk.to_builder().timeout_config(patient).build()
    }

    /// POSTs JSON to a simulator admin endpoint and returns the JSON answer (or Null).
    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "sim {path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    /// Turns WeChat's API security mode on as an operator would: the simulator plays the console
    /// (new keys, the mode enforced) and the app secret gets its `api_security` document (with
    /// `tune` applied first, to write a wrong or partial one). Call it before the state reads the
    /// app secret (it is cached), or use a function's own state. Returns the console's document.
    pub async fn enable_api_security_with(&self, tune: impl FnOnce(&mut Value)) -> Value {
        let console = self.sim_post("/__sim/api-security", serde_json::json!({})).await;
        let mut document = console.clone();
        tune(&mut document);
        self.write_app_secret(serde_json::json!({"app_secret": APP_SECRET, "api_security": document}))
            .await;
        console
    }

    /// [`Stack::enable_api_security_with`] the console's document as it is.
    pub async fn enable_api_security(&self) -> Value {
        self.enable_api_security_with(|_| {}).await
    }

    /// Writes `secret` as the app secret's new value.
    pub async fn write_app_secret(&self, secret: Value) {
        self.secretsmanager()
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("the app secret is written");
    }

    /// Mints a `wx.login` code for `openid`, rotating its session key.
    pub async fn mint_code(&self, openid: &str) -> String {
        let answer = self
            .sim_post("/__sim/login", serde_json::json!({ "openid": openid }))
            .await;
        answer["code"].as_str().expect("code").to_owned()
    }

    /// The simulator's current session key for `openid`.
    pub async fn sim_session_key(&self, openid: &str) -> String {
        let url = format!("{}/__sim/user?openid={openid}", self.sim.base_url());
        let user: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        user["session_key"].as_str().expect("known user").to_owned()
    }

    /// How many calls of `api` the simulator has received.
    pub async fn sim_calls(&self, api: &str) -> u64 {
        let url = format!("{}/__sim/requests", self.sim.base_url());
        let log: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        log["counts"][api].as_u64().unwrap_or(0)
    }

    /// Every item of the sessions table.
    pub async fn session_items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let scan = self
            .dynamodb()
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan");
        scan.items.unwrap_or_default()
    }
}

impl Stack {
    /// Serves `wechat-push` (with its own state) on a port of its own and points the simulator's
    /// message push at it, in `mode` (`plain`, `compat`, `safe`) and `format` (`xml`, `json`), as
    /// the console would be set. Plain mode reads an app secret without the EncodingAESKey (with
    /// one, the receiver refuses plain pushes). Returns the push URL.
    pub async fn enable_push(&self, mode: &str, format: &str) -> String {
        self.enable_push_with(mode, format, &[]).await
    }

    /// [`Stack::enable_push`] with some of the receiver's settings changed (a table that does not
    /// exist).
    pub async fn enable_push_with(&self, mode: &str, format: &str, overrides: &[(&str, &str)]) -> String {
        let function = &wxa_shared::handlers::wechat_push::FUNCTION;
        let state = if mode == "plain" {
            let secret_id = format!("{}-push-plain", self.secret_id);
            let secret = serde_json::json!({ "push_token": PUSH_TOKEN });
            let created = self
                .secretsmanager()
                .create_secret()
                .name(&secret_id)
                .secret_string(secret.to_string())
                .send()
                .await;
            if created.is_err() {
                self.secretsmanager()
                    .put_secret_value()
                    .secret_id(&secret_id)
                    .secret_string(secret.to_string())
                    .send()
                    .await
                    .expect("plain-mode push secret written");
            }
            let mut overrides = overrides.to_vec();
            overrides.push(("PUSH_SECRET_ID", &secret_id));
            self.state_with(function, &overrides)
        } else {
            self.state_with(function, overrides)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}/wechat/push", listener.local_addr().expect("bound"));
        let server = tokio::spawn(serve_function(listener, Arc::new(state), function));
        self.push_servers.lock().unwrap().push(server);
        let aes_key = if mode == "plain" { "" } else { PUSH_AES_KEY };
        let config = serde_json::json!({
            "url": url, "token": PUSH_TOKEN, "encoding_aes_key": aes_key, "mode": mode, "format": format,
        });
        self.sim_post("/__sim/push/config", config).await;
        url
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.notify_server.abort();
        for server in self.push_servers.lock().unwrap().drain(..) {
            server.abort();
        }
    }
}

/// Serves `function` over HTTP on `listener`, converting requests and responses the way API
/// Gateway does (the raw body as text when it is UTF-8).
pub async fn serve_function(listener: tokio::net::TcpListener, state: Arc<AppState>, function: &'static Function) {
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let state = state.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default().to_vec();
            let body = match String::from_utf8(bytes) {
                Ok(text) if text.is_empty() => Body::Empty,
                Ok(text) => Body::Text(text),
                Err(e) => Body::Binary(e.into_bytes()),
            };
            let response = function.handle(&state, Request::from_parts(parts, body)).await;
            let (parts, body) = response.into_parts();
            let bytes = match body {
                Body::Text(text) => text.into_bytes(),
                Body::Binary(bytes) => bytes,
                _ => Vec::new(),
            };
            axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
        }
    });
    let _ = axum::serve(listener, app).await;
}

/// `template.yaml` as JSON (intrinsics in their long form): the one list of functions and routes
/// that tests hold everything else against.
pub fn template() -> Value {
    yaml_file(&workspace_root().join("template.yaml"))
}

/// A YAML file as JSON (by `scripts/cfn_json.py`, which also reads CloudFormation's `!Ref`...).
pub fn yaml_file(path: &Path) -> Value {
    let output = Command::new(venv_bin("python"))
        .arg(workspace_root().join("scripts/cfn_json.py"))
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "cfn_json.py {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the YAML as JSON")
}

/// `openapi.yaml` as JSON.
pub fn openapi() -> Value {
    yaml_file(&workspace_root().join("openapi.yaml"))
}

/// `node`, or what its `$ref` points to within `document` (followed to the end).
pub fn resolve<'a>(document: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let mut target = document;
            for part in reference.trim_start_matches("#/").split('/') {
                target = &target[part];
            }
            resolve(document, target)
        }
        None => node,
    }
}

/// Every route of `template.yaml`: `(function binary, METHOD, path)`.
pub fn template_routes() -> Vec<(String, String, String)> {
    let template = template();
    let mut routes = Vec::new();
    for resource in template["Resources"].as_object().expect("Resources").values() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let name = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("every function names its Binary");
        for event in resource["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flat_map(|e| e.values())
        {
            if event["Type"] == "HttpApi" {
                let p = &event["Properties"];
                routes.push((
                    name.to_owned(),
                    p["Method"].as_str().expect("Method").to_uppercase(),
                    p["Path"].as_str().expect("Path").to_owned(),
                ));
            }
        }
    }
    routes.sort();
    routes
}

/// The event files of `events/` for `METHOD path` (by their `routeKey`), by file name.
pub fn events_for(method: &str, path: &str) -> Vec<String> {
    let route_key = format!("{method} {path}");
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("events"))
        .expect("events/")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let text = std::fs::read_to_string(workspace_root().join("events").join(&name)).ok()?;
            let event: Value = serde_json::from_str(&text).ok()?;
            (event["routeKey"] == route_key.as_str()).then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Reads an event file of `events/` as API Gateway delivers it to the function.
pub fn event(name: &str) -> Request {
    let text = std::fs::read_to_string(workspace_root().join("events").join(name)).expect("event file exists");
    lambda_http::request::from_str(&text).expect("event parses as an API Gateway request")
}

/// An event from `events/` with its body replaced.
pub fn event_with_body(name: &str, body: &str) -> Request {
    let mut request = event(name);
    *request.body_mut() = Body::Text(body.to_owned());
    request
}

/// `request` as Lambda delivers it inside an invocation: with a context whose deadline is
/// `deadline_in` from now and whose request id is `request_id`.
pub fn in_invocation(request: Request, deadline_in: Duration, request_id: &str) -> Request {
    use lambda_http::RequestExt;
    request.with_lambda_context(invocation_context(deadline_in, request_id))
}

/// The context Lambda gives an invocation: its deadline `deadline_in` from now, its request id.
pub fn invocation_context(deadline_in: Duration, request_id: &str) -> lambda_http::Context {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let mut context = lambda_http::Context::default();
    context.request_id = request_id.to_owned();
    context.deadline = u64::try_from(now_ms + deadline_in.as_millis()).expect("a deadline in range");
    context
}

/// Status and JSON body of a response.
pub fn read(response: &Response<Body>) -> (u16, Value) {
    let body = match response.body() {
        Body::Text(text) => text.as_bytes().to_vec(),
        Body::Binary(bytes) => bytes.clone(),
        _ => Vec::new(),
    };
    let json =
        serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&body)));
    (response.status().as_u16(), json)
}

/// An event from `events/` with the caller's token and, if given, a new body.
pub fn authed_event(name: &str, token: &str, body: Option<&Value>) -> Request {
    let mut request = event(name);
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    if let Some(body) = body {
        *request.body_mut() = Body::Text(body.to_string());
    }
    request
}

impl Stack {
    /// `wx.login` + `POST /login` for `openid`; returns the login token.
    pub async fn log_in(&self, openid: &str) -> String {
        self.log_in_as(serde_json::json!({ "openid": openid })).await
    }

    /// `wx.login` with `/__sim/login` options (`unionid`, a known `session_key`) + `POST /login`.
    pub async fn log_in_as(&self, user: Value) -> String {
        log_in(&self.state, &self.http, &self.sim.base_url(), user)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// What the WeChat client hands the mini-program: `data` with a watermark, encrypted under
    /// the user's current key. Returns `(encryptedData, iv)`.
    pub async fn seal(&self, openid: &str, data: Value) -> (String, String) {
        self.seal_with(serde_json::json!({ "openid": openid, "data": data }))
            .await
    }

    /// `/__sim/encrypt` with extra options (`watermark`, `session_key`).
    pub async fn seal_with(&self, request: Value) -> (String, String) {
        let sealed = self.sim_post("/__sim/encrypt", request).await;
        (
            sealed["encryptedData"].as_str().unwrap().to_owned(),
            sealed["iv"].as_str().unwrap().to_owned(),
        )
    }
}

/// `wx.login` on the simulator at `sim_base` (with `/__sim/login` options) + `POST /login`
/// answered by `state`: the login token, or what went wrong.
pub async fn log_in(state: &AppState, http: &reqwest::Client, sim_base: &str, user: Value) -> Result<String, String> {
    let minted = http
        .post(format!("{sim_base}/__sim/login"))
        .json(&user)
        .send()
        .await
        .map_err(|e| format!("sim /__sim/login: {e}"))?;
    let minted: Value = minted.json().await.map_err(|e| format!("sim /__sim/login: {e}"))?;
    let code = minted["code"]
        .as_str()
        .ok_or_else(|| format!("sim /__sim/login gave no code: {minted}"))?;
    let request = event_with_body("login.json", &serde_json::json!({ "code": code }).to_string());
    let (status, body) = read(&wxa_shared::handlers::login::FUNCTION.handle(state, request).await);
    match body["token"].as_str() {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err(format!("login failed: {status} {body}")),
    }
}

/// Runs the checks every open-data function must pass, whatever its payload: foreign, stale and
/// future watermarks, tampered data, bad padding, bad base64, a short iv, a rotated key, the
/// failure budget, and bad tokens. `payload` is the plaintext the WeChat client would encrypt;
/// `body` turns `(encryptedData, iv, session_key)` into the request body.
pub async fn check_open_data_contract(
    function: &'static Function,
    event_name: &str,
    payload: Value,
    body: impl Fn(&str, &str, &str) -> Value,
) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    let stack = Stack::start().await;
    // The function's own state: only the parts it declares.
    let state = stack.state_for(function);
    let token = stack.log_in("o_alice").await;
    let key = stack.sim_session_key("o_alice").await;
    let call = |request: Request| async { read(&function.handle(&state, request).await) };
    let expect = |got: &(u16, Value), status: u16, code: &str, case: &str| {
        assert_eq!(
            (got.0, got.1["error"]["code"].as_str()),
            (status, Some(code)),
            "{case}: {}",
            got.1
        );
    };
    let now = wxa_shared::clock::now_unix();
    let sealed_with = |watermark: Value| {
        stack.seal_with(serde_json::json!({"openid": "o_alice", "data": payload, "watermark": watermark}))
    };

    // Good data opens.
    let (data, iv) = stack.seal("o_alice", payload.clone()).await;
    let good = call(authed_event(event_name, &token, Some(&body(&data, &iv, &key)))).await;
    assert_eq!(good.0, 200, "good data: {}", good.1);

    // A stale watermark on data that opened: ask again (no WeChat call, no cost to the session).
    let (data, iv) = sealed_with(serde_json::json!({"appid": APP_ID, "timestamp": now - 3600})).await;
    let stale = call(authed_event(event_name, &token, Some(&body(&data, &iv, &key)))).await;
    expect(&stale, 400, "watermark_expired", "stale watermark");

    // Malformed input: said as such; nothing is asked of WeChat.
    let (data, iv) = stack.seal("o_alice", payload.clone()).await;
    let bytes = STANDARD.decode(&data).unwrap();
    for (case, data, iv) in [
        ("bad base64", "%%%not-base64%%%".to_owned(), iv.clone()),
        ("15-byte iv", data.clone(), STANDARD.encode([1u8; 15])),
        ("empty ciphertext", String::new(), iv.clone()),
        (
            "ragged ciphertext",
            STANDARD.encode(&bytes[..bytes.len() - 3]),
            iv.clone(),
        ),
    ] {
        let got = call(authed_event(event_name, &token, Some(&body(&data, &iv, &key)))).await;
        expect(&got, 400, "malformed_encrypted_data", case);
    }
    assert_eq!(stack.sim_calls("checksession").await, 0);

    // Under a key WeChat still holds, every other failure gets one answer, word for word, after
    // one checksession each: another app's watermark, one from the future, tampered data, bad
    // padding. Each costs the session one of its FAILURE_BUDGET failures.
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 17] ^= 0x5a;
    let (foreign, foreign_iv) = sealed_with(serde_json::json!({"appid": "wx0000000000000000", "timestamp": now})).await;
    let (future, future_iv) = sealed_with(serde_json::json!({"appid": APP_ID, "timestamp": now + 3600})).await;
    let cases = [
        ("foreign appid", foreign, foreign_iv),
        ("from the future", future, future_iv),
        ("tampered", STANDARD.encode(&tampered), iv.clone()),
        ("bad padding", STANDARD.encode(&bytes[..n - 16]), iv.clone()),
    ];
    let mut answers = Vec::new();
    for (case, data, iv) in &cases {
        let got = call(authed_event(event_name, &token, Some(&body(data, iv, &key)))).await;
        expect(&got, 400, "invalid_open_data", case);
        answers.push((got.0, got.1["error"]["code"].clone(), got.1["error"]["message"].clone()));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "one answer: {answers:?}");
    assert_eq!(stack.sim_calls("checksession").await, cases.len() as u64);

    // The fifth failure spends the budget: the session is revoked.
    let (data, iv) = (STANDARD.encode(&tampered), iv.clone());
    let last = call(authed_event(event_name, &token, Some(&body(&data, &iv, &key)))).await;
    expect(&last, 400, "invalid_open_data", "fifth failure");
    let after = call(authed_event(
        event_name,
        &token,
        Some(&good_body(&stack, &payload, &body, "o_alice").await),
    ))
    .await;
    expect(&after, 401, "invalid_token", "after the failure budget");

    // The user logs in elsewhere: data sealed under the new key fails here with "log in again",
    // and the stale session is revoked.
    let token = stack.log_in("o_carol").await;
    stack.mint_code("o_carol").await;
    let new_key = stack.sim_session_key("o_carol").await;
    let (data, iv) = stack.seal("o_carol", payload.clone()).await;
    let rotated = call(authed_event(event_name, &token, Some(&body(&data, &iv, &new_key)))).await;
    expect(&rotated, 401, "session_key_expired", "rotated key");
    let (data, iv) = stack.seal("o_carol", payload.clone()).await;
    let after = call(authed_event(event_name, &token, Some(&body(&data, &iv, &new_key)))).await;
    expect(&after, 401, "invalid_token", "after a rotated key");

    // Tokens.
    let good_body = good_body(&stack, &payload, &body, "o_alice").await;
    let mut missing = event(event_name);
    missing.headers_mut().remove("authorization");
    *missing.body_mut() = Body::Text(good_body.to_string());
    expect(&call(missing).await, 401, "missing_token", "missing token");
    expect(
        &call(authed_event(event_name, &"x".repeat(43), Some(&good_body))).await,
        401,
        "invalid_token",
        "unknown token",
    );
    let expired = stack.log_in("o_bob").await;
    stack.expire(&expired).await;
    expect(
        &call(authed_event(event_name, &expired, Some(&good_body))).await,
        401,
        "invalid_token",
        "expired token",
    );
}

/// A body with `payload` sealed under `openid`'s current key.
async fn good_body(stack: &Stack, payload: &Value, body: &impl Fn(&str, &str, &str) -> Value, openid: &str) -> Value {
    let (data, iv) = stack.seal(openid, payload.clone()).await;
    body(&data, &iv, &stack.sim_session_key(openid).await)
}

pub const MCHID: &str = "1900000109";
pub const MERCHANT_SERIAL: &str = "4D3F2A1B0C9E8D7F6A5B4C3D2E1F0A9B8C7D6E5F";
pub const APIV3_KEY: &str = "test-apiv3-key-0123456789abcdefg";
pub const APIV2_KEY: &str = "test-apiv2-key-0123456789abcdefg";

/// The merchant key pair a pay test made: the public half verifies `paySign`.
pub struct MerchantKeys {
    pub public_key_der: Vec<u8>,
}

/// Makes a merchant key pair, registers the merchant with the simulator at `sim_base`, and writes
/// the merchant's keys into the pay secret `secret_id` (created if missing).
pub async fn enable_pay_on(
    http: &reqwest::Client,
    sim_base: &str,
    secretsmanager: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> MerchantKeys {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
    let private: Pkcs8V1Der = pair.as_der().expect("PKCS#8");
    let public: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
    let merchant = serde_json::json!({
        "mchid": MCHID, "serial_no": MERCHANT_SERIAL, "public_key": wechat_sim::pay::to_pem("PUBLIC KEY", public.as_ref()),
        "apiv3_key": APIV3_KEY, "apiv2_key": APIV2_KEY,
    });
    let registered = http
        .post(format!("{sim_base}/__sim/pay/merchant"))
        .json(&merchant)
        .send()
        .await
        .unwrap();
    assert!(
        registered.status().is_success(),
        "sim merchant: {}",
        registered.status()
    );
    let url = format!("{sim_base}/__sim/pay/platform");
    let platform: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    let secret = serde_json::json!({
        "mchid": MCHID,
        "merchant_serial_no": MERCHANT_SERIAL,
        "merchant_private_key": wechat_sim::pay::to_pem("PRIVATE KEY", private.as_ref()),
        "apiv3_key": APIV3_KEY,
        "apiv2_key": APIV2_KEY,
        "platform_keys": [
            {"id": platform["public_key_id"], "public_key": platform["public_key"]},
            {"id": platform["certificate_serial"], "certificate": platform["certificate"]},
        ],
    });
    let created = secretsmanager
        .create_secret()
        .name(secret_id)
        .secret_string(secret.to_string())
        .send()
        .await;
    if created.is_err() {
        secretsmanager
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("pay secret written");
    }
    MerchantKeys {
        public_key_der: public.as_ref().to_vec(),
    }
}

impl Stack {
    /// Makes a merchant key pair, registers the merchant with the simulator, and writes the pay
    /// secret (before anything reads it).
    pub async fn enable_pay(&self) -> MerchantKeys {
        enable_pay_on(
            &self.http,
            &self.sim.base_url(),
            &self.secretsmanager(),
            &self.pay_secret_id,
        )
        .await
    }

    /// Invokes the `merchant` function with a back-office command, as Lambda Invoke would:
    /// returns `Ok(answer["ok"])` or `Err(answer["error"])`.
    pub async fn merchant(&self, command: Value) -> Result<Value, Value> {
        let answer = wxa_shared::handlers::merchant::FUNCTION
            .invoke(&self.state, command, &lambda_http::Context::default())
            .await;
        match (answer.get("ok"), answer.get("error")) {
            (Some(ok), None) => Ok(ok.clone()),
            (None, Some(error)) => Err(error.clone()),
            _ => panic!("neither ok nor error: {answer}"),
        }
    }

    /// A buyer's paid order: created by the back office, placed with WeChat Pay by pay-sign, paid
    /// (the notification delivered unless `drop`). Returns the prepay_id.
    pub async fn paid_order(&self, out_trade_no: &str, openid: &str, amount: u64, drop: bool) -> String {
        let created = self
            .merchant(
                serde_json::json!({"op": "create_order", "out_trade_no": out_trade_no, "openid": openid,
                                         "description": "A cup of tea", "amount_total": amount}),
            )
            .await;
        assert!(created.is_ok(), "{created:?}");
        let token = self.log_in(openid).await;
        let body = serde_json::json!({ "out_trade_no": out_trade_no });
        let signed = wxa_shared::handlers::pay_sign::FUNCTION
            .handle(&self.state, authed_event("pay-sign.json", &token, Some(&body)))
            .await;
        let (status, params) = read(&signed);
        assert_eq!(status, 200, "{params}");
        let prepay_id = params["package"]
            .as_str()
            .unwrap()
            .trim_start_matches("prepay_id=")
            .to_owned();
        let mut complete = serde_json::json!({ "prepay_id": prepay_id });
        if drop {
            complete["mode"] = "drop".into();
        }
        self.sim_post("/__sim/pay/complete", complete).await;
        prepay_id
    }

    /// A paid order of `amount` with a refund of `refund` applied for, settled at WeChat Pay
    /// but its notification lost.
    pub async fn refund_with_lost_notification(
        &self,
        out_trade_no: &str,
        out_refund_no: &str,
        amount: u64,
        refund: u64,
    ) {
        self.paid_order(out_trade_no, "o_alice", amount, false).await;
        let command = serde_json::json!({"op": "refund", "out_trade_no": out_trade_no,
                                         "out_refund_no": out_refund_no, "amount": refund});
        self.merchant(command).await.expect("the refund is applied for");
        let settle = serde_json::json!({"out_refund_no": out_refund_no, "mode": "drop"});
        self.sim_post("/__sim/pay/refund/settle", settle).await;
    }

    /// Moves a session's expiry into the past, as time would; moto (like DynamoDB for a while
    /// after TTL) keeps the item.
    pub async fn expire(&self, token: &str) {
        use aws_sdk_dynamodb::types::AttributeValue::{N, S};
        let past = wxa_shared::clock::now_unix() - 1;
        self.dynamodb()
            .update_item()
            .table_name(&self.table)
            .key("token_hash", S(wxa_shared::store::sessions::token_hash(token)))
            .update_expression("SET expires_at = :past")
            .expression_attribute_values(":past", N(past.to_string()))
            .send()
            .await
            .expect("session expired");
    }

    /// Puts an UNPAID order, as the merchant's own system would.
    pub async fn put_order(&self, out_trade_no: &str, openid: &str, amount_total: u64) {
        use aws_sdk_dynamodb::types::AttributeValue::{N, S};
        self.dynamodb()
            .put_item()
            .table_name(&self.orders_table)
            .item("out_trade_no", S(out_trade_no.into()))
            .item("openid", S(openid.into()))
            .item("description", S("A cup of tea".into()))
            .item("amount_total", N(amount_total.to_string()))
            .item("status", S("UNPAID".into()))
            .send()
            .await
            .expect("order put");
    }

    /// The order item as stored.
    pub async fn order(
        &self,
        out_trade_no: &str,
    ) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
        let output = self
            .dynamodb()
            .get_item()
            .table_name(&self.orders_table)
            .key(
                "out_trade_no",
                aws_sdk_dynamodb::types::AttributeValue::S(out_trade_no.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get order");
        output.item.expect("the order exists")
    }
}

/// One response as `scripts/check_openapi.py` reads it.
pub fn record(path: &str, method: &str, response: &Response<Body>) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match response.body() {
        Body::Text(text) if content_type.starts_with("application/json") => {
            serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
        }
        Body::Text(text) => Value::String(text.clone()),
        _ => Value::Null,
    };
    serde_json::json!({ "path": path, "method": method, "status": response.status().as_u16(), "content_type": content_type, "body": body })
}

/// Checks recorded responses against `openapi.yaml` with `scripts/check_openapi.py`.
pub fn check_openapi(records: &[Value]) {
    let file = std::env::temp_dir().join(format!(
        "wxa-openapi-{}-{}.json",
        std::process::id(),
        unique("r").replace('/', "-")
    ));
    std::fs::write(&file, serde_json::to_vec(records).expect("JSON")).expect("write records");
    let output = Command::new(venv_bin("python"))
        .arg(workspace_root().join("scripts/check_openapi.py"))
        .arg(workspace_root().join("openapi.yaml"))
        .arg(&file)
        .output()
        .expect("python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "responses do not match openapi.yaml:\n{report}"
    );
}
