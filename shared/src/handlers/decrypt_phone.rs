//! `POST /phone`: the user's phone number from a `getPhoneNumber` button event, either
//! `{"code"}` (current button: `wxa/business/getuserphonenumber`) or `{"encryptedData", "iv"}`
//! (legacy button: decrypted with the session key) → `{"phoneNumber", "purePhoneNumber", "countryCode"}`.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;

use super::open_sealed;
use crate::api::request::{one_time_code, parse_json_body, present};
use crate::api::response::json_response;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::store::sessions::Session;
use crate::token::TokenError;
use crate::wechat::{PhoneInfo, WechatError};
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "decrypt-phone",
    // A phone number by code is billed to the app by WeChat: each user gets a budget.
    parts: Parts {
        budget: true,
        ..super::OPEN_DATA
    },
    // The current button's `{code}` needs the access token and WeChat (the legacy
    // `{encryptedData, iv}` only the session).
    at_init: AtInit {
        dynamodb: true,
        access_token: true,
        wechat: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[Route::post("/phone", authed!(phone))]),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneRequest {
    #[serde(default, deserialize_with = "present")]
    code: Option<String>,
    #[serde(rename = "encryptedData", default, deserialize_with = "present")]
    encrypted_data: Option<String>,
    #[serde(default, deserialize_with = "present")]
    iv: Option<String>,
}

pub async fn phone(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: PhoneRequest = parse_json_body(req)?;
    let phone = match (body.code, body.encrypted_data, body.iv) {
        (Some(code), None, None) => {
            let code = one_time_code(&code, "the getPhoneNumber event")?;
            state.spend_budget("phone", &session.openid).await?;
            by_code(state, code).await?
        }
        (None, Some(encrypted_data), Some(iv)) => {
            open_sealed::<PhoneInfo>(state, session, &encrypted_data, &iv).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "send either {\"code\"} from the getPhoneNumber event, or {\"encryptedData\", \"iv\"}",
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &phone))
}

async fn by_code(state: &AppState, code: &str) -> Result<PhoneInfo, ApiError> {
    let result = state.wechat()?.phone_number(code).await;
    result.map_err(|e| match e {
        TokenError::Wechat(WechatError::InvalidCode | WechatError::CodeUsed) => ApiError::bad_request(
            "invalid_phone_code",
            "WeChat rejected the phone code (invalid, expired or already used): ask the user to tap the button again",
        ),
        other => other.into(),
    })
}
