//! What the simulator's test files share: a simulator on a free port and calls to it.
// Each test file uses a part of this.
#![allow(dead_code)]

pub mod shop;

use std::net::SocketAddr;

use serde_json::{Value, json};
use wechat_sim::{SimConfig, SimServer};

pub const APP_ID: &str = "wx4f4bc4dec97d474b";
pub const SECRET: &str = "sim-secret";

pub struct Sim {
    pub server: SimServer,
    pub http: reqwest::Client,
}

impl Sim {
    pub async fn start() -> Self {
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

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.server.base_url());
        let response = self.http.get(url).query(query).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.post_status(path, body).await.1
    }

    pub async fn post_status(&self, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.server.base_url());
        let response = self.http.post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        if status == 204 {
            (status, Value::Null)
        } else {
            (status, response.json().await.unwrap())
        }
    }

    pub async fn code(&self, openid: &str) -> String {
        self.post("/__sim/login", json!({"openid": openid})).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn stable(&self, force: bool) -> Value {
        self.post(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": APP_ID, "secret": SECRET, "force_refresh": force}),
        )
        .await
    }

    /// A POST of `body` to a token-protected API with a valid stable token.
    pub async fn call(&self, path: &str, body: Value) -> Value {
        let token = self.stable(false).await["access_token"].as_str().unwrap().to_owned();
        let url = format!("{}{path}", self.server.base_url());
        let response = self.http.post(url).query(&[("access_token", token)]).json(&body).send();
        response.await.unwrap().json().await.unwrap()
    }
}
