//! Everything the wxa-serverless Lambda functions share. Each function's `main.rs` builds an
//! [`AppState`] once per container and hands each request to a handler in [`handlers`].

pub mod aws;
pub mod cache;
pub mod card;
pub mod config;
pub mod error;
pub mod handlers;
pub mod http;
pub mod net;
pub mod opendata;
pub mod pay;
pub mod runtime;
pub mod secret;
pub mod secrets;
pub mod session;
pub mod state;
pub mod token;
pub mod wechat;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;
