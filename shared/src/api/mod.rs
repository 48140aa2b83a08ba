//! What the functions speak to their callers: requests read, responses and the one error type.

pub mod error;
pub mod request;
pub mod response;

pub use error::ApiError;
