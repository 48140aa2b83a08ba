//! Everything the wxa-serverless Lambda functions share. Each function's `main.rs` hands its
//! [`function::Function`] (in [`handlers`]) to [`runtime::run`], which builds an [`AppState`] of
//! the parts it declares once per container and routes each request to it.

pub mod api;
pub mod api_security;
pub mod at_init;
pub mod cache;
pub mod card;
pub mod clock;
pub mod config;
pub mod customer_service;
pub mod deadline;
pub mod flat_xml;
pub mod function;
pub mod handlers;
pub mod metrics;
pub mod net;
pub mod opendata;
pub mod pay;
pub mod push;
pub mod random;
pub mod redacted;
pub mod runtime;
pub mod secret_store;
pub mod shop;
pub mod state;
pub mod store;
pub mod token;
pub mod transfer;
pub mod wechat;

pub use api::ApiError;
pub use config::Config;
pub use state::AppState;
