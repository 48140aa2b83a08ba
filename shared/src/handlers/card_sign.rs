//! `POST /card/sign {"card_id", "code"?, "bind_openid"?}` → `{"cardId", "cardExt"}`, ready for
//! `wx.addCard({cardList: [{cardId, cardExt}]})`. `cardExt` is signed with the card `api_ticket`
//! (cached until shortly before it expires) and, with `bind_openid`, bound to the caller.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;

use crate::api::request::{parse_json_body, present};
use crate::api::response::json_response;
use crate::card::card_ext;
use crate::clock::now_unix;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::random::nonce;
use crate::store::sessions::Session;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "card-sign",
    parts: Parts {
        sessions: true,
        wechat: true,
        access_token: true,
        ..Parts::NONE
    },
    // The card ticket comes from the tokens table, not from WeChat.
    at_init: AtInit {
        dynamodb: true,
        access_token: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[Route::post("/card/sign", authed!(sign))]),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardSignRequest {
    card_id: String,
    #[serde(default, deserialize_with = "present")]
    code: Option<String>,
    #[serde(default)]
    bind_openid: bool,
}

fn is_token_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn sign(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: CardSignRequest = parse_json_body(req)?;
    if !is_token_text(&body.card_id, 64) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "card_id must be a card id ([A-Za-z0-9_-], at most 64)",
        ));
    }
    // Taken as sent, like card_id: empty is no code.
    let code = body.code.as_deref().filter(|c| !c.is_empty());
    if code.is_some_and(|c| !is_token_text(c, 64)) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "code must be a card code ([A-Za-z0-9_-], at most 64)",
        ));
    }
    let ticket = state.wechat()?.tokens()?.card_api_ticket().await?;
    let openid = body.bind_openid.then_some(session.openid.as_str());
    let ext = card_ext(&ticket, &body.card_id, code, openid, now_unix(), &nonce());
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "cardId": body.card_id, "cardExt": ext }),
    ))
}
