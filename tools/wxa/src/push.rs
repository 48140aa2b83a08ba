//! `wxa push-decrypt`: what a safe-mode message push carried, from the body and query a receiver
//! logged.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use wxa_shared::push::PushKeys;

use crate::read_file;
use crate::secret_arg::{PushAesKey, PushToken, SecretArg};

/// Decrypt a safe-mode message push (an XML or JSON body) and print the message as it was sent.
///
/// msg_signature is checked first, then the padding, the length field and the appid. The
/// timestamp's age is not: a logged push is usually old.
#[derive(Args)]
pub struct PushDecrypt {
    #[command(flatten)]
    token: SecretArg<PushToken>,
    #[command(flatten)]
    aes_key: SecretArg<PushAesKey>,
    /// the mini-program's appid, which the message must name
    #[arg(long, value_name = "A")]
    appid: String,
    /// the query's timestamp, as sent
    #[arg(long, value_name = "TS")]
    timestamp: String,
    /// the query's nonce
    #[arg(long, value_name = "N")]
    nonce: String,
    /// the query's msg_signature
    #[arg(long, value_name = "SIG")]
    msg_signature: String,
    /// the raw request body (file)
    #[arg(long, value_name = "FILE")]
    body: PathBuf,
}

impl PushDecrypt {
    /// The message as a JSON string, which `main` prints as is.
    pub fn run(&self) -> Result<Value, String> {
        let keys =
            PushKeys::new(self.token.resolve()?, &self.aes_key.resolve()?, &self.appid).map_err(|e| e.to_string())?;
        let body = read_file(&self.body)?;
        keys.open(&self.timestamp, &self.nonce, &self.msg_signature, &body)
            .map(Value::String)
            .map_err(|e| e.to_string())
    }
}
