//! `wechat-sim`: serves the simulator on 127.0.0.1.
//!
//! Settings: `SIM_PORT` (9100), `SIM_HOST` (127.0.0.1), `APP_ID` and `APP_SECRET` (the app the
//! simulator accepts; defaults match `make dev`).

use std::net::{IpAddr, SocketAddr};

use wechat_sim::{SimConfig, SimServer};

const DEFAULT_APP_ID: &str = "wx0123456789abcdef";
const DEFAULT_APP_SECRET: &str = "local-dev-app-secret";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "wechat-sim: a local WeChat server API simulator\n\nEnvironment: SIM_PORT (9100), SIM_HOST (127.0.0.1), APP_ID, APP_SECRET"
        );
        return Ok(());
    }
    let env = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let host: IpAddr = env("SIM_HOST", "127.0.0.1")
        .parse()
        .map_err(|e| format!("SIM_HOST: {e}"))?;
    let port: u16 = env("SIM_PORT", "9100").parse().map_err(|e| format!("SIM_PORT: {e}"))?;
    let config = SimConfig {
        app_id: env("APP_ID", DEFAULT_APP_ID),
        app_secret: env("APP_SECRET", DEFAULT_APP_SECRET),
    };
    let app_id = config.app_id.clone();
    let server = SimServer::start(config, SocketAddr::new(host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
    println!("wechat-sim listening on {} for app {app_id}", server.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
