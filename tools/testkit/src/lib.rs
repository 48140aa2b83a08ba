//! End-to-end test support. Each test binary shares one moto server (the real AWS wire protocol
//! on 127.0.0.1); each test gets its own simulator, sessions table and secret, so tests run in
//! parallel without seeing each other's state.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use wechat_sim::{SimConfig, SimServer};
use wxa_shared::{AppState, Config};

pub const APP_ID: &str = "wx4f4bc4dec97d474b";
pub const APP_SECRET: &str = "test-app-secret-0123456789abcdef";

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

fn venv_bin(name: &str) -> PathBuf {
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
    _child: Child,
    _watchdog: Child,
}

/// The moto server of this test binary, started on first use on a free port. A watchdog stops
/// it when the test process exits.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let watchdog = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill {moto} 2>/dev/null",
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
            _child: child,
            _watchdog: watchdog,
        }
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// SDK config pointed at `endpoint` with moto's dummy credentials, through the same timeout
/// and retry settings as production.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::from_keys("test", "test", None));
    wxa_shared::aws::load_sdk_config(loader).await
}

/// Creates the sessions table from `template.yaml` and the app secret, with the same script
/// `make dev` uses.
pub fn setup_local_aws(endpoint: &str, table: &str, secret_id: &str, app_secret: &str) {
    let output = Command::new(venv_bin("python"))
        .arg(workspace_root().join("scripts/local_aws.py"))
        .args([
            "--endpoint",
            endpoint,
            "setup",
            "--sessions-table",
            table,
            "--secret-id",
            secret_id,
        ])
        .args(["--app-secret", app_secret])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "local_aws.py setup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A unique name for this test's table and secret.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's world: a simulator, a table and a secret on the shared moto, and the AppState a
/// function would build from them.
pub struct Stack {
    pub sim: SimServer,
    pub state: AppState,
    pub sdk: SdkConfig,
    pub table: String,
    pub secret_id: String,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack; `tune` may change the config before the state is built.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let sim = SimServer::start(
            SimConfig {
                app_id: APP_ID.into(),
                app_secret: APP_SECRET.into(),
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("simulator starts");
        let endpoint = moto().endpoint.clone();
        let table = unique("sessions");
        let secret_id = unique("wxa/app");
        setup_local_aws(&endpoint, &table, &secret_id, APP_SECRET);
        let mut config = Config::from_lookup(|name| match name {
            "APP_ID" => Some(APP_ID.into()),
            "SESSIONS_TABLE" => Some(table.clone()),
            "SECRET_ID" => Some(secret_id.clone()),
            "WECHAT_API_BASE" => Some(sim.base_url()),
            _ => None,
        })
        .expect("test config is valid");
        tune(&mut config);
        let sdk = sdk_config(&endpoint).await;
        let state = AppState::new(config, &sdk);
        Self {
            sim,
            state,
            sdk,
            table,
            secret_id,
            http: reqwest::Client::new(),
        }
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
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
