//! Merchant transfers to a user's wallet (商家转账, with user confirmation): the rules the
//! merchant's back office (`merchant`), the mini-program (`POST /transfers/{out_bill_no}/confirm`
//! in `pay-sign`), WeChat Pay's notifications (`pay-notify`) and the reconciler share.
//!
//! - **Recorded first.** A bill is written here as `CREATING` before WeChat Pay hears of it, so
//!   nothing is lost to a crash or a lost answer ([`crate::store::transfers`]).
//! - **One out_bill_no, ever.** A bill whose create had no certain answer (a timeout, a 429, a
//!   5xx, an unreadable or unverifiable answer) stays `CREATING`; a retry of the same command,
//!   `get_transfer` or the reconciler ([`refresh_transfer`]) first **queries** WeChat Pay by its
//!   out_bill_no, and only when WeChat Pay does not know it sends the create again — the same
//!   out_bill_no with the same fields (the same sealed user_name), which WeChat Pay answers with
//!   the same bill if the first one did land after all.
//! - **An unknown outcome is never a refusal.** A bill ends `FAIL` here without WeChat Pay saying
//!   so only when WeChat Pay *refused* the create (a 4xx other than 429, with its error code) and
//!   a query right after answers 404: the original certainly did not land. Its `fail_reason` is
//!   WeChat Pay's error code (`NOT_ENOUGH`, `PARAM_ERROR`...), and the merchant starts again with
//!   a new out_bill_no.
//! - **The state WeChat Pay reports wins**, recorded with one conditional write on the state's
//!   rank: a state once, never backwards, never out of SUCCESS, FAIL or CANCELLED.

use lambda_http::http::StatusCode;
use serde_json::json;

use crate::ApiError;
use crate::clock::now_unix;
use crate::pay::Merchant;
use crate::pay::client::PayError;
use crate::pay::transfer::TransferBill;
use crate::state::Payments;
use crate::store::transfers::{
    self, CANCELING, CANCELLED, CREATING, Change, Created, NewTransfer, TRANSFERING, Transfer, WAIT_USER_CONFIRM,
};

/// From this amount (2,000 CNY, in fen) WeChat Pay requires the user's real name.
pub const USER_NAME_REQUIRED_FROM: u64 = 200_000;

pub fn transfer_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "transfer_not_found",
        "no transfer has this out_bill_no",
    )
}

/// Records a new bill and sends it to WeChat Pay (see the module's rules). `user_name` is the
/// plaintext name, sealed here and kept only sealed. A retry of the same command answers the same
/// bill; a bill whose first create had no certain answer is asked about, then sent again.
pub async fn create_transfer(
    pay: &Payments,
    app_id: &str,
    mut new: NewTransfer,
    user_name: Option<&str>,
) -> Result<Transfer, ApiError> {
    let transfers = pay.transfers()?;
    let merchant = pay.merchant.get().await?;
    new.user_name = match user_name {
        Some(name) => {
            let sealed = crate::pay::transfer::seal(&merchant, name)?;
            Some((sealed.ciphertext, sealed.key_id))
        }
        None => None,
    };
    match transfers.create(&new, now_unix()).await? {
        Created::New(transfer) => submit(pay, &merchant, app_id, transfer).await,
        // A retry: its first create may never have reached WeChat Pay.
        Created::Existing(transfer) if transfer.state == CREATING => {
            refresh_with(pay, &merchant, app_id, transfer).await
        }
        Created::Existing(transfer) => Ok(transfer),
        Created::Conflict(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "transfer_conflict",
            "this out_bill_no is another transfer's (another openid, amount, scene or remark)",
        )),
    }
}

/// Whether a failed create may have created the bill anyway (or may succeed if sent again):
/// no answer, an answer we cannot trust, 5xx, 429.
fn outcome_unknown(e: &PayError) -> bool {
    match e {
        PayError::Rejected { code, .. } => {
            matches!(code.as_str(), "FREQUENCY_LIMITED" | "SYSTEM_ERROR" | "http_429")
        }
        PayError::NotConfigured(_) => false,
        _ => true,
    }
}

/// The create as WeChat Pay documents it, from the bill as recorded (so every re-send is the
/// same request), and the id of the key its user_name is sealed with.
fn create_request<'t>(app_id: &str, notify_url: &str, transfer: &'t Transfer) -> (serde_json::Value, Option<&'t str>) {
    let mut request = json!({
        "appid": app_id,
        "out_bill_no": transfer.out_bill_no,
        "transfer_scene_id": transfer.scene_id,
        "openid": transfer.openid,
        "transfer_amount": transfer.amount,
        "transfer_remark": transfer.remark,
        "notify_url": notify_url,
        "transfer_scene_report_infos": transfer.report_infos,
    });
    let serial = transfer.user_name.as_ref().map(|(sealed, key_id)| {
        request["user_name"] = json!(sealed);
        key_id.as_str()
    });
    (request, serial)
}

/// Sends a recorded bill's create (again: same out_bill_no, same fields) and records the answer.
/// Refused for certain and unknown to a query: `FAIL` here. No certain answer: an error, and the
/// bill stays `CREATING` for a retry or the reconciler.
async fn submit(pay: &Payments, merchant: &Merchant, app_id: &str, transfer: Transfer) -> Result<Transfer, ApiError> {
    let transfers = pay.transfers()?;
    let (client, settings) = pay.client()?;
    let (request, serial) = create_request(app_id, &settings.notify_url, &transfer);
    let refusal = match client.create_transfer(merchant, &request, serial).await {
        Ok(bill) => {
            record(pay, &transfer, &bill).await?;
            tracing::info!(out_bill_no = %transfer.out_bill_no, state = %bill.state, "transfer created");
            return current(pay, &transfer.out_bill_no).await;
        }
        // Nothing was sent (our configuration): not WeChat Pay's refusal.
        Err(e @ PayError::NotConfigured(_)) => return Err(e.into()),
        Err(e) if outcome_unknown(&e) => {
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %e, "transfer create without a certain answer: kept CREATING, asked about later");
            return Err(e.into());
        }
        Err(e) => e,
    };
    // Refused. Does WeChat Pay have this out_bill_no anyway (another request's)?
    match client.query_transfer(merchant, &transfer.out_bill_no).await {
        Ok(bill) => {
            record(pay, &transfer, &bill).await?;
        }
        Err(PayError::NotFound(_)) => {
            let reason = refusal.metric_code();
            transfers
                .fail_unsent(&transfer.out_bill_no, &reason, now_unix())
                .await?;
            tracing::warn!(out_bill_no = %transfer.out_bill_no, error = %refusal, "transfer refused by WeChat Pay: FAIL");
        }
        Err(e) => return Err(e.into()),
    }
    current(pay, &transfer.out_bill_no).await
}

async fn current(pay: &Payments, out_bill_no: &str) -> Result<Transfer, ApiError> {
    pay.transfers()?.get(out_bill_no).await?.ok_or_else(transfer_not_found)
}

/// Records a state WeChat Pay reported of `transfer` (answer, query or notification), once. A
/// report whose amount or openid is not the bill's is recorded too (WeChat Pay's is what happens)
/// and logged as `TRANSFER NEEDS ATTENTION`.
pub async fn record(pay: &Payments, transfer: &Transfer, bill: &TransferBill) -> Result<Change, ApiError> {
    if transfers::rank(&bill.state).is_none() {
        tracing::warn!(out_bill_no = %bill.out_bill_no, state = %bill.state, "a transfer state WeChat Pay does not document: not recorded");
        return Ok(Change::Unchanged);
    }
    let amount_differs = bill.transfer_amount.is_some_and(|a| a != transfer.amount);
    let openid_differs = bill.openid.as_deref().is_some_and(|o| o != transfer.openid);
    if amount_differs || openid_differs {
        crate::metrics::count(crate::metrics::Metric::PaymentAnomalies);
        tracing::error!(
            out_bill_no = %bill.out_bill_no,
            amount = transfer.amount,
            reported_amount = bill.transfer_amount,
            openid_differs,
            "TRANSFER NEEDS ATTENTION"
        );
    }
    let change = pay.transfers()?.record(bill, now_unix()).await?;
    if change == Change::Changed {
        tracing::info!(out_bill_no = %bill.out_bill_no, state = %bill.state, "transfer state recorded");
        if bill.state == transfers::FAIL {
            tracing::warn!(out_bill_no = %bill.out_bill_no, reason = bill.fail_reason.as_deref().unwrap_or_default(), "transfer failed");
        }
    }
    Ok(change)
}

/// Records a `MCHTRANSFER.BILL.FINISHED` notification's bill (already verified and decrypted):
/// `Ok(false)` for a bill this server did not make (nothing to change; acknowledged).
pub async fn record_notification(pay: &Payments, merchant: &Merchant, bill: &TransferBill) -> Result<bool, Refusal> {
    if bill.mch_id.as_deref().is_some_and(|m| m != merchant.mchid) {
        return Err(Refusal::NotOurs(format!(
            "mch_id {} is not this merchant's",
            bill.mch_id.as_deref().unwrap_or_default()
        )));
    }
    let transfers = pay.transfers().map_err(Refusal::Unavailable)?;
    let Some(transfer) = transfers
        .get(&bill.out_bill_no)
        .await
        .map_err(|e| Refusal::Unavailable(e.into()))?
    else {
        tracing::warn!(out_bill_no = %bill.out_bill_no, "transfer notification for a bill this server did not make");
        return Ok(false);
    };
    match record(pay, &transfer, bill).await.map_err(Refusal::Unavailable)? {
        Change::Changed => {}
        Change::Unchanged => tracing::info!(out_bill_no = %bill.out_bill_no, "repeated transfer notification"),
    }
    Ok(true)
}

/// Why a notification was not recorded.
#[derive(Debug)]
pub enum Refusal {
    /// Another merchant's (a misconfiguration): refused.
    NotOurs(String),
    /// Our side cannot record it now: WeChat Pay retries.
    Unavailable(ApiError),
}

/// The bill as WeChat Pay knows it, when ours is not final: asked about (by out_bill_no) and
/// recorded. One WeChat Pay does not know that is still `CREATING` is sent again (same
/// out_bill_no, same fields). One waiting for the user without a `package_info` (a query does
/// not carry it) gets it by sending the same create again, which answers the same bill.
pub async fn refresh_transfer(pay: &Payments, app_id: &str, transfer: Transfer) -> Result<Transfer, ApiError> {
    if !transfer.is_pending() {
        return Ok(transfer);
    }
    let merchant = pay.merchant.get().await?;
    refresh_with(pay, &merchant, app_id, transfer).await
}

async fn refresh_with(
    pay: &Payments,
    merchant: &Merchant,
    app_id: &str,
    transfer: Transfer,
) -> Result<Transfer, ApiError> {
    let (client, _) = pay.client()?;
    match client.query_transfer(merchant, &transfer.out_bill_no).await {
        Ok(bill) => {
            record(pay, &transfer, &bill).await?;
        }
        Err(PayError::NotFound(_)) if transfer.state == CREATING => {
            return submit(pay, merchant, app_id, transfer).await;
        }
        Err(PayError::NotFound(code)) => {
            // Past WeChat Pay's 30 days of queries, or not its bill: ours stays as it is.
            tracing::warn!(out_bill_no = %transfer.out_bill_no, code, "WeChat Pay no longer knows a pending transfer");
            return Ok(transfer);
        }
        Err(e) => return Err(e.into()),
    }
    let refreshed = current(pay, &transfer.out_bill_no).await?;
    if refreshed.state == WAIT_USER_CONFIRM && refreshed.package_info.is_none() {
        return submit(pay, merchant, app_id, refreshed).await;
    }
    Ok(refreshed)
}

/// Cancels a bill the user has not confirmed: at WeChat Pay (→ `CANCELING`, then `CANCELLED` by
/// notification or query). A bill still `CREATING` is settled first (asked about, sent again if
/// WeChat Pay never had it), so a cancel never leaves a bill WeChat Pay may still create. A
/// cancelled or cancelling bill is answered as it is; one the user confirmed, or final, is a 409.
pub async fn cancel_transfer(pay: &Payments, app_id: &str, transfer: Transfer) -> Result<Transfer, ApiError> {
    let merchant = pay.merchant.get().await?;
    let transfer = if transfer.state == CREATING {
        refresh_with(pay, &merchant, app_id, transfer).await?
    } else {
        transfer
    };
    match transfer.state.as_str() {
        CANCELING | CANCELLED => return Ok(transfer),
        TRANSFERING | transfers::SUCCESS | transfers::FAIL => return Err(not_cancellable(&transfer)),
        _ => {}
    }
    let (client, _) = pay.client()?;
    match client.cancel_transfer(&merchant, &transfer.out_bill_no).await {
        Ok(bill) => {
            record(pay, &transfer, &bill).await?;
            tracing::info!(out_bill_no = %transfer.out_bill_no, state = %bill.state, "transfer cancelled");
        }
        // Refused (the user confirmed meanwhile, say): what is it now?
        Err(PayError::Rejected { .. } | PayError::NotFound(_)) => {
            let now = refresh_with(pay, &merchant, app_id, transfer).await?;
            return match now.state.as_str() {
                CANCELING | CANCELLED => Ok(now),
                _ => Err(not_cancellable(&now)),
            };
        }
        Err(e) => return Err(e.into()),
    }
    current(pay, &transfer.out_bill_no).await
}

fn not_cancellable(transfer: &Transfer) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "transfer_not_cancellable",
        format!(
            "this transfer is {}: only one the user has not confirmed is cancelled",
            transfer.state
        ),
    )
}

/// What `wx.requestMerchantTransfer` takes for the caller's own bill waiting for them: the
/// bill is brought up to date first when it is not (yet) waiting or has no package. Another
/// user's bill is answered as unknown; one in another state is a 409 naming it.
pub async fn confirm_package(
    pay: &Payments,
    app_id: &str,
    openid: &str,
    out_bill_no: &str,
) -> Result<(Transfer, String), ApiError> {
    let transfer = pay
        .transfers()?
        .get(out_bill_no)
        .await?
        .filter(|t| t.openid == openid)
        .ok_or_else(transfer_not_found)?;
    let ready = transfer.state == WAIT_USER_CONFIRM && transfer.package_info.is_some();
    let transfer = if !ready && transfers::rank(&transfer.state) <= transfers::rank(WAIT_USER_CONFIRM) {
        refresh_transfer(pay, app_id, transfer).await?
    } else {
        transfer
    };
    match (&transfer.state, transfer.package_info.clone()) {
        (state, Some(package)) if state == WAIT_USER_CONFIRM => Ok((transfer, package)),
        _ => Err(not_confirmable(&transfer)),
    }
}

fn not_confirmable(transfer: &Transfer) -> ApiError {
    let (code, why) = match transfer.state.as_str() {
        TRANSFERING | transfers::SUCCESS => ("transfer_already_confirmed", "the user has already confirmed it"),
        CANCELING | CANCELLED => ("transfer_cancelled", "the merchant cancelled it (or it expired)"),
        transfers::FAIL => ("transfer_failed", "it failed"),
        _ => (
            "transfer_not_ready",
            "WeChat Pay has not made it ready for the user yet: try again shortly",
        ),
    };
    ApiError::new(
        StatusCode::CONFLICT,
        code,
        format!("this transfer cannot be confirmed: {why} ({})", transfer.state),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_is_a_certain_outcome() {
        let rejected = |code: &str| PayError::Rejected {
            code: code.into(),
            message: String::new(),
        };
        for certain in [
            rejected("PARAM_ERROR"),
            rejected("NOT_ENOUGH"),
            rejected("INVALID_REQUEST"),
        ] {
            assert!(!outcome_unknown(&certain), "{certain}");
        }
        for unknown in [
            rejected("FREQUENCY_LIMITED"),
            rejected("SYSTEM_ERROR"),
            rejected("http_429"),
            PayError::Timeout,
            PayError::HttpStatus(500),
            PayError::Unavailable("reset".into()),
            PayError::BadSignature("x".into()),
            PayError::BadAnswer("x".into()),
            PayError::NotFound("NOT_FOUND".into()),
        ] {
            assert!(outcome_unknown(&unknown), "{unknown}");
        }
    }

    #[test]
    fn every_resend_is_the_same_request() {
        let transfer = Transfer {
            out_bill_no: "B20261126000001".into(),
            openid: "o_alice".into(),
            amount: 300_000,
            scene_id: "1000".into(),
            remark: "新会员开通有礼".into(),
            report_infos: vec![transfers::ReportInfo {
                info_type: "活动名称".into(),
                info_content: "新会员有礼".into(),
            }],
            has_user_name: true,
            user_name: Some(("c2VhbGVk".into(), "PUB_KEY_ID_0114".into())),
            state: CREATING.into(),
            transfer_bill_no: None,
            package_info: None,
            create_time: None,
            update_time: None,
            fail_reason: None,
            created_at: 0,
            reconcile_attempts: 0,
        };
        let (first, serial) = create_request("wx4f4bc4dec97d474b", "https://x.example/pay/notify", &transfer);
        let (again, _) = create_request("wx4f4bc4dec97d474b", "https://x.example/pay/notify", &transfer);
        assert_eq!(first, again);
        assert_eq!(serial, Some("PUB_KEY_ID_0114"));
        assert_eq!(first["user_name"], "c2VhbGVk");
        assert_eq!(first["transfer_amount"], 300_000);
        assert_eq!(first["transfer_scene_report_infos"][0]["info_type"], "活动名称");
        let anonymous = Transfer {
            user_name: None,
            ..transfer
        };
        let (request, serial) = create_request("wx4f4bc4dec97d474b", "https://x.example/pay/notify", &anonymous);
        assert_eq!((request.get("user_name"), serial), (None, None));
    }
}
