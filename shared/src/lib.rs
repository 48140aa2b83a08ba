//! Everything the wxa-serverless Lambda functions share. Each function's `main.rs` hands its
//! [`function::Function`] (in [`handlers`]) to [`runtime::run`], which builds an [`AppState`] of
//! the parts it declares once per container and routes each request to it.

pub mod aws;
pub mod cache;
pub mod card;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod error;
pub mod function;
pub mod handlers;
pub mod http;
pub mod net;
pub mod opendata;
pub mod pay;
pub mod random;
pub mod runtime;
pub mod secret;
pub mod secrets;
pub mod state;
pub mod store;
pub mod token;
pub mod wechat;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;
