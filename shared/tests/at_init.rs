//! Init prepares what every request of the function needs — connections opened (TCP + TLS) and
//! credentials read, in parallel — and the first request uses them: it opens no connection and
//! makes no remote call that a container without this preparation would not make. Nothing but
//! handshakes reaches a service at init, and an unreachable service neither fails nor stalls it.
//!
//! Every destination is behind its own `LatencyProxy` (with no added delay), which counts the
//! connections made to it: DynamoDB and Secrets Manager on endpoints of their own (moto behind a
//! TLS proxy), WeChat (the simulator on HTTPS).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::keep_alive::KeepAliveFront;
use testkit::latency::LatencyProxy;
use testkit::tls::{TestPki, TlsProxy};
use testkit::{APP_ID, APP_SECRET, authed_event, event_with_body, moto, read, setup_local_aws, unique};
use wxa_shared::at_init::{self, Outcome};
use wxa_shared::function::Function;
use wxa_shared::handlers::{decrypt_phone, login, pay_sign, werun};
use wxa_shared::{AppState, Config};

struct World {
    _aws_tls: TlsProxy,
    _front: KeepAliveFront,
    sim: wechat_sim::SimServer,
    dynamodb: LatencyProxy,
    secrets_manager: LatencyProxy,
    wechat: LatencyProxy,
    tls: rustls::ClientConfig,
    admin: reqwest::Client,
    env: Vec<(&'static str, String)>,
}

impl World {
    async fn start() -> Self {
        let pki = TestPki::new();
        // DynamoDB and Secrets Manager keep connections open; moto alone would close each one.
        let front = KeepAliveFront::start(&moto().endpoint).await;
        let aws_tls = TlsProxy::start(front.addr, &pki.localhost).await;
        let sim = wechat_sim::SimServer::start_tls(
            wechat_sim::SimConfig {
                app_id: APP_ID.into(),
                app_secret: APP_SECRET.into(),
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &pki.localhost.chain_pem,
            &pki.localhost.key_pem,
        )
        .await
        .unwrap();
        let sim_port: u16 = sim.base_url().rsplit(':').next().unwrap().parse().unwrap();
        let (table, orders, secret_id) = (unique("sessions"), unique("orders"), unique("wxa/app"));
        setup_local_aws(&moto().endpoint, &table, &orders, &secret_id, APP_SECRET);
        let wechat = LatencyProxy::start(SocketAddr::from(([127, 0, 0, 1], sim_port)), Duration::ZERO);
        // The functions' TLS configuration, trusting only the test CA.
        let tls = wxa_shared::net::tls_config_trusting(pki.ca.roots());
        let admin = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .build()
            .unwrap();
        let env = vec![
            ("APP_ID", APP_ID.to_owned()),
            ("ORDERS_TABLE", orders.clone()),
            ("PAY_NOTIFY_URL", "https://pay.example/pay/notify".to_owned()),
            ("WECHATPAY_API_BASE", wechat.https_endpoint()),
            ("SESSIONS_TABLE", table),
            ("TOKENS_TABLE", format!("{orders}-tokens")),
            ("TRANSFERS_TABLE", format!("{orders}-transfers")),
            ("APP_SECRET_ID", secret_id),
            ("WECHAT_API_BASE", wechat.https_endpoint()),
        ];
        Self {
            dynamodb: LatencyProxy::start(aws_tls.addr, Duration::ZERO),
            secrets_manager: LatencyProxy::start(aws_tls.addr, Duration::ZERO),
            wechat,
            _aws_tls: aws_tls,
            _front: front,
            sim,
            tls,
            admin,
            env,
        }
    }

    /// The state a container of `function` builds (per-service endpoints, as in a region),
    /// with `overrides` of its settings.
    async fn state(&self, function: &Function, overrides: &[(&str, String)]) -> &'static AppState {
        let lookup = |name: &str| {
            overrides
                .iter()
                .chain(self.env.iter())
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let config = Config::from_lookup(function.parts, lookup).unwrap();
        let dynamodb_endpoint = lookup("DYNAMODB").unwrap_or_else(|| self.dynamodb.https_endpoint());
        let secrets_endpoint = lookup("SECRETS_MANAGER").unwrap_or_else(|| self.secrets_manager.https_endpoint());
        let dynamodb = testkit::sdk_config_over(&dynamodb_endpoint, &self.tls).await;
        let secrets = testkit::sdk_config_over(&secrets_endpoint, &self.tls).await;
        Box::leak(Box::new(AppState::from_clients(
            config,
            aws_sdk_dynamodb::Client::new(&dynamodb),
            aws_sdk_secretsmanager::Client::new(&secrets),
            &self.tls,
        )))
    }

    /// Connections made so far: DynamoDB, Secrets Manager, WeChat.
    fn connections(&self) -> [usize; 3] {
        [
            self.dynamodb.connections(),
            self.secrets_manager.connections(),
            self.wechat.connections(),
        ]
    }

    async fn sim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.admin.request(method, format!("{}{path}", self.sim.base_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap_or(Value::Null)
    }

    /// The WeChat API calls the simulator served since the last look.
    async fn wechat_calls(&self) -> Value {
        let counts = self.sim(reqwest::Method::GET, "/__sim/requests", None).await["counts"].clone();
        self.sim(reqwest::Method::DELETE, "/__sim/requests", None).await;
        counts
    }

    async fn login(&self, state: &AppState, openid: &str) -> (u16, Value) {
        let code = self
            .sim(reqwest::Method::POST, "/__sim/login", Some(json!({ "openid": openid })))
            .await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let event = event_with_body("login.json", &json!({ "code": code }).to_string());
        read(&login::FUNCTION.handle(state, event).await)
    }
}

fn done(names: &[&'static str]) -> Vec<(&'static str, Outcome)> {
    names.iter().map(|n| (*n, Outcome::Done)).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn login_opens_its_three_connections_at_init_and_its_first_request_opens_none() {
    let world = World::start().await;
    let state = world.state(&login::FUNCTION, &[]).await;
    let outcomes = at_init::prepare(state, login::FUNCTION.at_init, at_init::BUDGET).await;
    assert_eq!(outcomes, done(&["app_secret", "dynamodb", "wechat"]));
    assert_eq!(
        world.connections(),
        [1, 1, 1],
        "one connection per service, opened at init"
    );
    assert_eq!(
        world.wechat_calls().await,
        json!({}),
        "init sent WeChat nothing but a handshake"
    );

    let (status, body) = world.login(state, "o_init_login").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        world.connections(),
        [1, 1, 1],
        "the first login used the connections of init"
    );
    assert_eq!(world.wechat_calls().await, json!({ "jscode2session": 1 }));
    let (status, _) = world.login(state, "o_init_login").await;
    assert_eq!((status, world.connections()), (200, [1, 1, 1]), "and the next one too");
}

#[tokio::test(flavor = "current_thread")]
async fn without_preparation_the_first_login_opens_the_same_connections_itself() {
    let world = World::start().await;
    let state = world.state(&login::FUNCTION, &[]).await;
    let (status, body) = world.login(state, "o_init_lazy").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.connections(), [1, 1, 1]);
    assert_eq!(world.wechat_calls().await, json!({ "jscode2session": 1 }));
}

#[tokio::test(flavor = "current_thread")]
async fn the_phone_function_reads_the_fleet_token_at_init_and_its_first_call_goes_straight_to_wechat() {
    let world = World::start().await;
    // A fleet already running: the token is in the tokens table.
    let earlier = world.state(&decrypt_phone::FUNCTION, &[]).await;
    earlier.wechat().unwrap().tokens().unwrap().get().await.unwrap();
    let (status, body) = world.login(earlier, "o_init_phone").await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    world.wechat_calls().await;

    let state = world.state(&decrypt_phone::FUNCTION, &[]).await;
    let before = world.connections();
    let outcomes = at_init::prepare(state, decrypt_phone::FUNCTION.at_init, at_init::BUDGET).await;
    assert_eq!(outcomes, done(&["access_token", "wechat"]));
    let opened = |now: [usize; 3]| [now[0] - before[0], now[1] - before[1], now[2] - before[2]];
    assert_eq!(opened(world.connections()), [1, 1, 1]);
    assert_eq!(
        world.wechat_calls().await,
        json!({}),
        "the token came from the table, not from WeChat"
    );

    let phone_code = world
        .sim(
            reqwest::Method::POST,
            "/__sim/phone-code",
            Some(json!({ "phoneNumber": "13800138000" })),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = authed_event("decrypt-phone.json", &token, Some(&json!({ "code": phone_code })));
    let (status, body) = read(&decrypt_phone::FUNCTION.handle(state, event).await);
    assert_eq!(
        (status, body["purePhoneNumber"].as_str()),
        (200, Some("13800138000")),
        "{body}"
    );
    assert_eq!(
        opened(world.connections()),
        [1, 1, 1],
        "no connection opened by the request"
    );
    assert_eq!(world.wechat_calls().await, json!({ "getuserphonenumber": 1 }));
}

#[tokio::test(flavor = "current_thread")]
async fn werun_prepares_dynamodb_alone() {
    let world = World::start().await;
    let state = world.state(&werun::FUNCTION, &[]).await;
    let outcomes = at_init::prepare(state, werun::FUNCTION.at_init, at_init::BUDGET).await;
    assert_eq!(outcomes, done(&["dynamodb"]));
    assert_eq!(
        world.connections(),
        [1, 0, 0],
        "no secret and no WeChat connection it would not use"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_service_neither_fails_nor_stalls_init() {
    let world = World::start().await;
    // Nothing listens on these ports: connections are refused.
    let closed = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://localhost:{}", listener.local_addr().unwrap().port())
    };
    let state = world
        .state(
            &login::FUNCTION,
            &[("WECHAT_API_BASE", closed()), ("SECRETS_MANAGER", closed())],
        )
        .await;
    let budget = Duration::from_millis(300);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        at_init::prepare(state, login::FUNCTION.at_init, budget),
    )
    .await
    .expect("init is bounded");
    let outcome = |name| outcomes.iter().find(|(n, _)| *n == name).map(|(_, o)| *o);
    assert_eq!(outcome("wechat"), Some(Outcome::Failed));
    assert_eq!(outcome("dynamodb"), Some(Outcome::Done));
    // The SDK retries a refused connection with backoff: failed, or still trying when init went on.
    assert!(
        matches!(outcome("app_secret"), Some(Outcome::Failed | Outcome::InFlight)),
        "{outcomes:?}"
    );
    // The first request meets the outage and answers it clearly.
    let (status, body) = world.login(state, "o_init_down").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("secrets_unavailable")),
        "{body}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_later_connection_to_a_host_resumes_the_tls_session() {
    let world = World::start().await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(world.tls.clone()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(world.wechat.addr()).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        // TLS 1.3 sends its session tickets after the handshake: read until the server has spoken.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /__sim/requests HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let (_, session) = tls.get_ref();
        kinds.push((session.protocol_version(), session.handshake_kind()));
    }
    use rustls::{HandshakeKind, ProtocolVersion};
    assert_eq!(
        kinds,
        [
            (Some(ProtocolVersion::TLSv1_3), Some(HandshakeKind::Full)),
            (Some(ProtocolVersion::TLSv1_3), Some(HandshakeKind::Resumed)),
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_paying_function_reads_the_merchant_keys_and_connects_to_wechat_pay_at_init() {
    let world = World::start().await;
    let pay_secret = unique("wxa/pay");
    let secrets = aws_sdk_secretsmanager::Client::new(&testkit::sdk_config(&moto().endpoint).await);
    testkit::enable_pay_on(&world.admin, &world.sim.base_url(), &secrets, &pay_secret).await;
    let state = world.state(&pay_sign::FUNCTION, &[("PAY_SECRET_ID", pay_secret)]).await;
    world.wechat_calls().await;
    let outcomes = at_init::prepare(state, pay_sign::FUNCTION.at_init, at_init::BUDGET).await;
    assert_eq!(outcomes, done(&["dynamodb", "merchant_keys", "wechat_pay"]));
    // WeChat Pay is behind the same proxy as WeChat here: one connection, and no call.
    assert_eq!(world.connections(), [1, 1, 1]);
    assert_eq!(world.wechat_calls().await, json!({}));
}
