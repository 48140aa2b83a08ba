//! `POST /card/sign {"card_id", "code"?, "bind_openid"?}` → `{"cardId", "cardExt"}`, ready for
//! `wx.addCard({cardList: [{cardId, cardExt}]})`. `cardExt` is signed with the card `api_ticket`
//! (cached until shortly before it expires) and, with `bind_openid`, bound to the caller.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use crate::card::{card_ext, nonce};
use crate::http::{json_response, parse_json_body, require_method};
use crate::session::now_unix;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardSignRequest {
    card_id: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    bind_openid: bool,
}

fn is_token_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(sign(state, &req).await)
}

async fn sign(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let session = state.authenticate(req).await?;
    let body: CardSignRequest = parse_json_body(req)?;
    if !is_token_text(&body.card_id, 64) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "card_id must be a card id ([A-Za-z0-9_-], at most 64)",
        ));
    }
    let code = body.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if code.is_some_and(|c| !is_token_text(c, 64)) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "code must be a card code ([A-Za-z0-9_-], at most 64)",
        ));
    }
    let ticket = state.tokens.card_api_ticket().await?;
    let openid = body.bind_openid.then_some(session.openid.as_str());
    let ext = card_ext(&ticket, &body.card_id, code, openid, now_unix(), &nonce());
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "cardId": body.card_id, "cardExt": ext }),
    ))
}
