//! The simulator behaves as the reference describes the real WeChat servers.

use std::net::SocketAddr;

use serde_json::{Value, json};
use wechat_sim::{SimConfig, SimServer};

const APP_ID: &str = "wx4f4bc4dec97d474b";
const SECRET: &str = "sim-secret";

struct Sim {
    server: SimServer,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Self {
        let config = SimConfig {
            app_id: APP_ID.into(),
            app_secret: SECRET.into(),
        };
        let server = SimServer::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        Self {
            server,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.server.base_url());
        self.http
            .get(url)
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.server.base_url());
        let response = self.http.post(url).json(&body).send().await.unwrap();
        if response.status() == 204 {
            Value::Null
        } else {
            response.json().await.unwrap()
        }
    }

    async fn exchange(&self, code: &str) -> Value {
        self.get(
            "/sns/jscode2session",
            &[
                ("appid", APP_ID),
                ("secret", SECRET),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await
    }

    async fn code(&self, openid: &str) -> String {
        self.post("/__sim/login", json!({"openid": openid})).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn stable(&self, force: bool) -> Value {
        self.post(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": APP_ID, "secret": SECRET, "force_refresh": force}),
        )
        .await
    }

    async fn checksession_errcode(&self, token: &str) -> i64 {
        let body = self
            .get("/wxa/checksession", &[("access_token", token), ("openid", "nobody")])
            .await;
        body["errcode"].as_i64().unwrap()
    }
}

#[tokio::test]
async fn codes_are_single_use_and_expire_after_five_minutes() {
    let sim = Sim::start().await;
    let code = sim.code("o1").await;
    let first = sim.exchange(&code).await;
    assert_eq!(first["openid"], "o1");
    assert_eq!(first["session_key"].as_str().unwrap().len(), 24, "base64 of 16 bytes");
    assert_eq!(sim.exchange(&code).await["errcode"], 40163);
    assert!(sim.exchange(&code).await["errmsg"].as_str().unwrap().contains("rid: "));
    assert_eq!(sim.exchange("nope").await["errcode"], 40029);

    let late = sim.code("o1").await;
    sim.post("/__sim/time", json!({"advance_secs": 299})).await;
    let on_time = sim.code("o1").await;
    sim.post("/__sim/time", json!({"advance_secs": 2})).await;
    assert_eq!(sim.exchange(&late).await["errcode"], 40029);
    assert_eq!(sim.exchange(&on_time).await["openid"], "o1");
}

#[tokio::test]
async fn each_code_rotates_the_session_key_and_credentials_are_checked_first() {
    let sim = Sim::start().await;
    let a = sim.code("o1").await;
    let key_a = sim.exchange(&a).await["session_key"].clone();
    let b = sim.code("o1").await;
    let key_b = sim.exchange(&b).await["session_key"].clone();
    assert_ne!(key_a, key_b);

    let c = sim.code("o1").await;
    let wrong = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", APP_ID),
                ("secret", "x"),
                ("js_code", &c),
                ("grant_type", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(wrong["errcode"], 40125);
    let wrong_app = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", "wx0000000000000000"),
                ("secret", SECRET),
                ("js_code", &c),
                ("grant_type", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(wrong_app["errcode"], 40013);
    assert_eq!(
        sim.exchange(&c).await["openid"],
        "o1",
        "a credential error does not consume the code"
    );
}

#[tokio::test]
async fn stable_token_is_shared_and_rotates_near_expiry_with_overlap() {
    let sim = Sim::start().await;
    let first = sim.stable(false).await;
    let t1 = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first["expires_in"], 7200);
    assert_eq!(
        sim.stable(false).await["access_token"],
        t1.as_str(),
        "normal mode shares the token"
    );
    sim.post("/__sim/time", json!({"advance_secs": 7000})).await;
    let rotated = sim.stable(false).await;
    let t2 = rotated["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    // Both work during the overlap (87009/40003 means the token passed).
    assert_eq!(sim.checksession_errcode(&t1).await, 87009);
    assert_eq!(sim.checksession_errcode(&t2).await, 87009);
    sim.post("/__sim/time", json!({"advance_secs": 300})).await;
    assert_eq!(sim.checksession_errcode(&t1).await, 42001);

    let forced = sim.stable(true).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        sim.checksession_errcode(&t2).await,
        40001,
        "force_refresh invalidates the previous token"
    );
    assert_eq!(sim.checksession_errcode(&forced).await, 87009);
}

#[tokio::test]
async fn cgi_token_invalidates_its_predecessor() {
    let sim = Sim::start().await;
    let q = [
        ("grant_type", "client_credential"),
        ("appid", APP_ID),
        ("secret", SECRET),
    ];
    let a = sim.get("/cgi-bin/token", &q).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = sim.get("/cgi-bin/token", &q).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.checksession_errcode(&a).await, 40001);
    assert_eq!(sim.checksession_errcode(&b).await, 87009);
}

#[tokio::test]
async fn faults_apply_to_the_next_calls_and_requests_are_counted() {
    let sim = Sim::start().await;
    sim.post(
        "/__sim/faults",
        json!({"api": "jscode2session", "errcode": -1, "count": 2}),
    )
    .await;
    let code = sim.code("o1").await;
    assert_eq!(sim.exchange(&code).await["errcode"], -1);
    assert_eq!(sim.exchange(&code).await["errcode"], -1);
    assert_eq!(sim.exchange(&code).await["openid"], "o1");
    sim.post("/__sim/faults", json!({"api": "jscode2session", "http_status": 503}))
        .await;
    let url = format!("{}/sns/jscode2session", sim.server.base_url());
    assert_eq!(sim.http.get(url).send().await.unwrap().status(), 503);
    let log = sim.get("/__sim/requests", &[]).await;
    assert_eq!(log["counts"]["jscode2session"], 4);
}

#[tokio::test]
async fn encrypt_adds_a_watermark_under_the_current_key() {
    use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    use base64::{Engine, engine::general_purpose::STANDARD};

    let sim = Sim::start().await;
    let key = "tiihtNczf5v6AKRyjwEUhQ==";
    sim.post("/__sim/login", json!({"openid": "o1", "session_key": key}))
        .await;
    let sealed = sim
        .post("/__sim/encrypt", json!({"openid": "o1", "data": {"openGId": "g1"}}))
        .await;
    let key = STANDARD.decode(key).unwrap();
    let iv = STANDARD.decode(sealed["iv"].as_str().unwrap()).unwrap();
    let data = STANDARD.decode(sealed["encryptedData"].as_str().unwrap()).unwrap();
    let plain = cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
        .unwrap()
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .unwrap();
    let json: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(json["openGId"], "g1");
    assert_eq!(json["watermark"]["appid"], APP_ID);
    assert!(json["watermark"]["timestamp"].as_i64().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn phone_codes_need_a_valid_token_and_work_once() {
    let sim = Sim::start().await;
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    let code = sim
        .post(
            "/__sim/phone-code",
            json!({"openid": "o1", "phoneNumber": "13800138000"}),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/wxa/business/getuserphonenumber", sim.server.base_url());
    let exchange = |token: String, code: String| {
        let (http, url) = (sim.http.clone(), url.clone());
        async move {
            let response = http
                .post(url)
                .query(&[("access_token", token)])
                .json(&json!({"code": code}))
                .send();
            response.await.unwrap().json::<Value>().await.unwrap()
        }
    };
    assert_eq!(exchange("stale".into(), code.clone()).await["errcode"], 40001);
    let answer = exchange(token.clone(), code.clone()).await;
    assert_eq!(answer["errcode"], 0);
    assert_eq!(answer["phone_info"]["purePhoneNumber"], "13800138000");
    assert_eq!(answer["phone_info"]["countryCode"], "86");
    assert_eq!(answer["phone_info"]["watermark"]["appid"], APP_ID);
    assert_eq!(exchange(token.clone(), code).await["errcode"], 40029, "single use");

    let late = sim
        .post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post("/__sim/time", json!({"advance_secs": 301})).await;
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(exchange(token, late).await["errcode"], 40029, "expired after 5 minutes");
}
