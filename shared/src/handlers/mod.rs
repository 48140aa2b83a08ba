//! One module per Lambda function: its [`Function`](crate::function::Function) (name, parts,
//! routes) and the work of each route. Routing, authentication, deadlines and error answers are
//! [`Function::handle`](crate::function::Function::handle)'s.

pub mod card_sign;
pub mod content;
pub mod decrypt_phone;
pub mod login;
pub mod merchant;
pub mod pay_notify;
pub mod pay_sign;
pub mod qrcode;
pub mod reconciler;
pub mod session;
pub mod share_info;
pub mod user_info;
pub mod wechat_push;
pub mod werun;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::error::{invalid_open_data, session_key_expired};
use crate::clock::now_unix;
use crate::config::Parts;
use crate::opendata::{self, FailureClass};
use crate::store::sessions::Session;
use crate::{ApiError, AppState};

/// What the four open-data functions use: the session (its key, its failure budget), WeChat (to
/// tell a rotated key from bad data) and the watermark's age limit.
pub const OPEN_DATA: Parts = Parts {
    sessions: true,
    wechat: true,
    access_token: true,
    open_data: true,
    ..Parts::NONE
};

/// The body of getWeRunData / getShareInfo results and of the legacy phone button.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sealed {
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    pub iv: String,
}

/// Decrypts open data for `session` and checks its watermark. Malformed input (bad base64, an iv
/// that is not 16 bytes, a ragged ciphertext) is said as such; a stale watermark on data that
/// opened asks for the data again; every other failure is [`reject_open_data`]'s one answer.
pub(crate) async fn open_sealed<T: DeserializeOwned>(
    state: &AppState,
    session: &Session,
    encrypted_data: &str,
    iv: &str,
) -> Result<T, ApiError> {
    let opened = opendata::open(
        &session.session_key,
        encrypted_data,
        iv,
        &state.config.app_id,
        state.config.watermark_max_age_secs,
        now_unix(),
    );
    let e = match opened {
        Ok(data) => return Ok(data),
        Err(e) => e,
    };
    match e.class() {
        FailureClass::Rejected => Err(reject_open_data(state, session, &e).await),
        FailureClass::Stale => Err(ApiError::bad_request(
            "watermark_expired",
            "the data is older than this server accepts: ask the user for it again",
        )
        .with_detail(e)),
        FailureClass::StoredKey => {
            // The stored key is not a key: the session is unusable.
            state.sessions()?.revoke_stale(session).await?;
            Err(session_key_expired().with_detail(e))
        }
        FailureClass::Malformed => Err(ApiError::bad_request(
            "malformed_encrypted_data",
            format!("{e}: send encryptedData and iv exactly as WeChat gave them"),
        )),
    }
}

/// The one answer to open data or a `rawData` signature that does not check out under the
/// session's key, whatever failed, with the same remote calls whatever failed: one
/// `checksession`, then one write to the session. A rotated key (the user ran `wx.login`
/// elsewhere) revokes the session: "log in again". A current key means the data is bad or
/// forged: the failure is counted, and the session is revoked at its failure budget
/// ([`FAILURE_BUDGET`](crate::store::sessions::FAILURE_BUDGET)), so probing costs the session.
pub(crate) async fn reject_open_data(
    state: &AppState,
    session: &Session,
    why: &(dyn std::fmt::Display + Sync),
) -> ApiError {
    let answer = async {
        let sessions = state.sessions()?;
        match key_still_current(state, session).await {
            Some(false) => {
                sessions.revoke_stale(session).await?;
                Ok(session_key_expired())
            }
            current => {
                sessions.record_failure(session).await?;
                // When WeChat cannot say, a rotated key is by far the likeliest cause.
                Ok(if current == Some(true) {
                    crate::metrics::count(crate::metrics::Metric::OpenDataFailures);
                    invalid_open_data()
                } else {
                    session_key_expired()
                })
            }
        }
    };
    match answer.await {
        Ok(answer) => answer.with_detail(format_args!("open data rejected: {why}")),
        Err(failed) => {
            tracing::info!(reason = %why, "open data rejected");
            failed
        }
    }
}

/// Whether the session's key is still the one WeChat holds (`wxa/checksession`), asked only
/// after a decryption or signature failure; `None` when WeChat cannot tell.
async fn key_still_current(state: &AppState, session: &Session) -> Option<bool> {
    state
        .wechat()
        .ok()?
        .check_session(session)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "checksession failed while explaining an open-data failure"))
        .ok()
}
