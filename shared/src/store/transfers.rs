//! Merchant transfers in DynamoDB, one item per `out_bill_no` (the merchant's id of a bill,
//! which WeChat Pay also keys on: the same out_bill_no with the same fields is the same bill).
//!
//! A bill is recorded here **before** WeChat Pay is asked to create it (`CREATING`), so a crash
//! or an answer that never came loses nothing: a retry, `get_transfer` or the reconciler asks
//! WeChat Pay about that same out_bill_no and re-sends it with the same fields — never another
//! out_bill_no. Then it takes the states WeChat Pay reports (ACCEPTED, PROCESSING,
//! WAIT_USER_CONFIRM, TRANSFERING, CANCELING; finally SUCCESS, FAIL or CANCELLED), each with a
//! conditional write on the state's rank ([`rank`]): a state is recorded once, an older report
//! arriving late never moves a bill back, and nothing leaves a final state. A bill not yet final
//! is *pending* (the sparse `PendingIndex` the reconciler reads).
//!
//! The user's real name (`user_name`, required from 2,000 CNY) is kept only sealed for WeChat
//! Pay (RSA-OAEP under its public key), with the id of that key: a re-send sends the same bytes.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::orders;
use super::{StoreError, Table, applied, n, s, send, store_error};
use crate::pay::transfer::TransferBill;

pub mod attr {
    pub const OUT_BILL_NO: &str = "out_bill_no";
    pub const OPENID: &str = "openid";
    pub const AMOUNT: &str = "amount";
    pub const SCENE_ID: &str = "scene_id";
    pub const REMARK: &str = "remark";
    /// `transfer_scene_report_infos`, as JSON text.
    pub const REPORT_INFOS: &str = "report_infos";
    /// The user's name sealed for WeChat Pay (never the name itself).
    pub const USER_NAME_SEALED: &str = "user_name_sealed";
    /// The id of the WeChat Pay key `user_name_sealed` is sealed with.
    pub const USER_NAME_KEY_ID: &str = "user_name_key_id";
    pub const STATE: &str = "state";
    /// [`super::rank`] of `state`: the condition of every change.
    pub const RANK: &str = "rank";
    pub const TRANSFER_BILL_NO: &str = "transfer_bill_no";
    pub const PACKAGE_INFO: &str = "package_info";
    pub const CREATE_TIME: &str = "create_time";
    pub const UPDATE_TIME: &str = "update_time";
    pub const FAIL_REASON: &str = "fail_reason";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
}

/// Recorded here, not yet known to have reached WeChat Pay.
pub const CREATING: &str = "CREATING";
pub const ACCEPTED: &str = "ACCEPTED";
pub const PROCESSING: &str = "PROCESSING";
/// The user has to confirm in the mini-program (`POST /transfers/{out_bill_no}/confirm`).
pub const WAIT_USER_CONFIRM: &str = "WAIT_USER_CONFIRM";
pub const TRANSFERING: &str = "TRANSFERING";
pub const CANCELING: &str = "CANCELING";
pub const SUCCESS: &str = "SUCCESS";
pub const FAIL: &str = "FAIL";
pub const CANCELLED: &str = "CANCELLED";

/// The `pending` value of a bill not yet final.
pub const PENDING_TRANSFER: &str = "transfer";

const FINAL_RANK: u64 = 9;

/// How far along a state is: a change is recorded only to a higher rank, so a report arriving
/// late never moves a bill back and a final state (all of rank 9) is never left. `None` for a
/// state WeChat Pay does not document.
pub fn rank(state: &str) -> Option<u64> {
    Some(match state {
        CREATING => 0,
        ACCEPTED => 1,
        PROCESSING => 2,
        WAIT_USER_CONFIRM => 3,
        TRANSFERING => 4,
        CANCELING => 5,
        SUCCESS | FAIL | CANCELLED => FINAL_RANK,
        _ => return None,
    })
}

pub fn is_final(state: &str) -> bool {
    rank(state) == Some(FINAL_RANK)
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportInfo {
    pub info_type: String,
    pub info_content: String,
}

/// A bill as the merchant asks for it (amount and openid from the back office, never the
/// mini-program).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTransfer {
    pub out_bill_no: String,
    pub openid: String,
    pub amount: u64,
    pub scene_id: String,
    pub remark: String,
    pub report_infos: Vec<ReportInfo>,
    /// `(sealed name, key id)`.
    pub user_name: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transfer {
    pub out_bill_no: String,
    pub openid: String,
    pub amount: u64,
    pub scene_id: String,
    pub remark: String,
    pub report_infos: Vec<ReportInfo>,
    /// Whether a (sealed) user_name goes with the bill; the name itself is never answered.
    pub has_user_name: bool,
    #[serde(skip)]
    pub user_name: Option<(String, String)>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_bill_no: Option<String>,
    #[serde(skip)]
    pub package_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    pub created_at: u64,
    /// How many reconciler runs in a row failed on it (backed off: `next_attempt_at`).
    #[serde(skip)]
    pub reconcile_attempts: u64,
}

impl Transfer {
    /// Not yet final: WeChat Pay may still change it.
    pub fn is_pending(&self) -> bool {
        !is_final(&self.state)
    }

    /// The same bill as `new` (a retry): every field WeChat Pay compares, and a user_name given
    /// both times or neither (its plaintext is not kept to compare).
    pub fn is_same_as(&self, new: &NewTransfer) -> bool {
        self.openid == new.openid
            && self.amount == new.amount
            && self.scene_id == new.scene_id
            && self.remark == new.remark
            && self.report_infos == new.report_infos
            && self.user_name.is_some() == new.user_name.is_some()
    }
}

/// What recording a new bill did.
#[derive(Debug, PartialEq)]
pub enum Created {
    New(Transfer),
    /// This out_bill_no exists with the same fields (a retry).
    Existing(Transfer),
    /// This out_bill_no is another bill's.
    Conflict(Transfer),
}

/// What a change of state did: notifications, answers and queries report a state many times,
/// and only one changes it.
#[derive(Debug, PartialEq)]
pub enum Change {
    Changed,
    Unchanged,
}

#[derive(Clone)]
pub struct TransferStore {
    client: Client,
    table: String,
}

impl TransferStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    fn failed<E: ProvideErrorMetadata + std::fmt::Debug, R>(&self, e: SdkError<E, R>) -> StoreError {
        store_error(Table::Transfers, &self.table, e)
    }

    /// One consistent `GetItem`.
    pub async fn get(&self, out_bill_no: &str) -> Result<Option<Transfer>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::OUT_BILL_NO, s(out_bill_no))
            .consistent_read(true);
        let output = send(&self.client, Table::Transfers, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        output.item.as_ref().map(transfer_from_item).transpose()
    }

    /// Records a new bill as `CREATING` (pending), unless its out_bill_no exists: then that bill,
    /// as a retry of the same one or a conflict.
    pub async fn create(&self, new: &NewTransfer, now: u64) -> Result<Created, StoreError> {
        let report_infos = serde_json::to_string(&new.report_infos).expect("report infos serialize");
        let mut item = HashMap::from([
            (attr::OUT_BILL_NO.to_owned(), s(&new.out_bill_no)),
            (attr::OPENID.to_owned(), s(&new.openid)),
            (attr::AMOUNT.to_owned(), n(new.amount)),
            (attr::SCENE_ID.to_owned(), s(&new.scene_id)),
            (attr::REMARK.to_owned(), s(&new.remark)),
            (attr::REPORT_INFOS.to_owned(), s(&report_infos)),
            (attr::STATE.to_owned(), s(CREATING)),
            (attr::RANK.to_owned(), n(0)),
            (attr::CREATED_AT.to_owned(), n(now)),
            (orders::attr::PENDING.to_owned(), s(PENDING_TRANSFER)),
            (orders::attr::PENDING_SINCE.to_owned(), n(now)),
        ]);
        if let Some((sealed, key_id)) = &new.user_name {
            item.insert(attr::USER_NAME_SEALED.to_owned(), s(sealed));
            item.insert(attr::USER_NAME_KEY_ID.to_owned(), s(key_id));
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::OUT_BILL_NO);
        let result = send(&self.client, Table::Transfers, &self.table, request.send()).await?;
        if applied(Table::Transfers, &self.table, result)? {
            return Ok(Created::New(Transfer {
                out_bill_no: new.out_bill_no.clone(),
                openid: new.openid.clone(),
                amount: new.amount,
                scene_id: new.scene_id.clone(),
                remark: new.remark.clone(),
                report_infos: new.report_infos.clone(),
                has_user_name: new.user_name.is_some(),
                user_name: new.user_name.clone(),
                state: CREATING.to_owned(),
                transfer_bill_no: None,
                package_info: None,
                create_time: None,
                update_time: None,
                fail_reason: None,
                created_at: now,
                reconcile_attempts: 0,
            }));
        }
        let existing = self
            .get(&new.out_bill_no)
            .await?
            .ok_or_else(|| StoreError::Unavailable {
                table: Table::Transfers,
                detail: format!(
                    "{}: bill {} refused as existing is not there",
                    self.table, new.out_bill_no
                ),
            })?;
        Ok(if existing.is_same_as(new) {
            Created::Existing(existing)
        } else {
            Created::Conflict(existing)
        })
    }

    /// Records what WeChat Pay reports of a bill (an answer, a query, a notification): its state
    /// when that is further along than ours, with the bill's ids and times; a final state
    /// takes it out of the pending index. A `package_info` reported for the state the bill is
    /// already in is added if it has none. An undocumented state changes nothing.
    pub async fn record(&self, bill: &TransferBill, now: u64) -> Result<Change, StoreError> {
        let Some(new_rank) = rank(&bill.state) else {
            return Ok(Change::Unchanged);
        };
        let mut set: Vec<String> = ["#s = :new", "#rank = :rank", "#up = :now"].map(String::from).into();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_BILL_NO, s(&bill.out_bill_no))
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_names("#rank", attr::RANK)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_values(":new", s(&bill.state))
            .expression_attribute_values(":rank", n(new_rank))
            .expression_attribute_values(":now", n(now));
        let fields = [
            ("#tbn", ":tbn", attr::TRANSFER_BILL_NO, &bill.transfer_bill_no),
            ("#pkg", ":pkg", attr::PACKAGE_INFO, &bill.package_info),
            ("#ct", ":ct", attr::CREATE_TIME, &bill.create_time),
            ("#ut", ":ut", attr::UPDATE_TIME, &bill.update_time),
            ("#fr", ":fr", attr::FAIL_REASON, &bill.fail_reason),
        ];
        for (name, value, attribute, field) in fields {
            if let Some(field) = field {
                set.push(format!("{name} = {value}"));
                request = request
                    .expression_attribute_names(name, attribute)
                    .expression_attribute_values(value, s(field));
            }
        }
        let mut update = format!("SET {}", set.join(", "));
        if new_rank == FINAL_RANK {
            update.push_str(" REMOVE #pending, #since");
            request = request
                .expression_attribute_names("#pending", orders::attr::PENDING)
                .expression_attribute_names("#since", orders::attr::PENDING_SINCE);
        }
        let condition = if bill.package_info.is_some() {
            "#rank < :rank OR (#s = :new AND attribute_not_exists(#pkg))"
        } else {
            "#rank < :rank"
        };
        let request = request.update_expression(update).condition_expression(condition);
        let result = send(&self.client, Table::Transfers, &self.table, request.send()).await?;
        Ok(if applied(Table::Transfers, &self.table, result)? {
            Change::Changed
        } else {
            Change::Unchanged
        })
    }

    /// Ends a `CREATING` bill as `FAIL` here, with `reason`: only for one WeChat Pay certainly
    /// does not have (it refused the create, and then a query found nothing). Never changes a
    /// bill WeChat Pay has reported on.
    pub async fn fail_unsent(&self, out_bill_no: &str, reason: &str, now: u64) -> Result<Change, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_BILL_NO, s(out_bill_no))
            .update_expression("SET #s = :fail, #rank = :final, #fr = :reason, #up = :now REMOVE #pending, #since")
            .condition_expression("#s = :creating")
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_names("#rank", attr::RANK)
            .expression_attribute_names("#fr", attr::FAIL_REASON)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#pending", orders::attr::PENDING)
            .expression_attribute_names("#since", orders::attr::PENDING_SINCE)
            .expression_attribute_values(":fail", s(FAIL))
            .expression_attribute_values(":final", n(FINAL_RANK))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":creating", s(CREATING));
        let result = send(&self.client, Table::Transfers, &self.table, request.send()).await?;
        Ok(if applied(Table::Transfers, &self.table, result)? {
            Change::Changed
        } else {
            Change::Unchanged
        })
    }

    /// A page of the out_bill_no of bills pending since before `cutoff` (the sparse index: no
    /// scan), at most `limit`, from `start` on.
    pub async fn pending(
        &self,
        cutoff: u64,
        limit: i32,
        start: Option<super::PageStart>,
    ) -> Result<super::PendingPage, StoreError> {
        let kind = (PENDING_TRANSFER, attr::OUT_BILL_NO);
        super::pending_page(&self.client, Table::Transfers, &self.table, kind, cutoff, limit, start).await
    }

    /// Backs a pending bill off (see `store::defer`).
    pub async fn defer(&self, transfer: &Transfer, next_attempt_at: u64, grace: u64) -> Result<bool, StoreError> {
        let key = (PENDING_TRANSFER, attr::OUT_BILL_NO, transfer.out_bill_no.as_str());
        let attempts = transfer.reconcile_attempts + 1;
        super::defer(
            &self.client,
            Table::Transfers,
            &self.table,
            key,
            attempts,
            next_attempt_at,
            grace,
        )
        .await
    }
}

fn transfer_from_item(item: &HashMap<String, AttributeValue>) -> Result<Transfer, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let malformed = |attribute| StoreError::Malformed {
        table: Table::Transfers,
        attribute,
    };
    let report_infos = match text(attr::REPORT_INFOS) {
        Some(json) => serde_json::from_str(&json).map_err(|_| malformed(attr::REPORT_INFOS))?,
        None => Vec::new(),
    };
    let user_name = text(attr::USER_NAME_SEALED).zip(text(attr::USER_NAME_KEY_ID));
    Ok(Transfer {
        out_bill_no: text(attr::OUT_BILL_NO).ok_or(malformed(attr::OUT_BILL_NO))?,
        openid: text(attr::OPENID).ok_or(malformed(attr::OPENID))?,
        amount: number(attr::AMOUNT).ok_or(malformed(attr::AMOUNT))?,
        scene_id: text(attr::SCENE_ID).ok_or(malformed(attr::SCENE_ID))?,
        remark: text(attr::REMARK).unwrap_or_default(),
        report_infos,
        has_user_name: user_name.is_some(),
        user_name,
        state: text(attr::STATE).ok_or(malformed(attr::STATE))?,
        transfer_bill_no: text(attr::TRANSFER_BILL_NO),
        package_info: text(attr::PACKAGE_INFO),
        create_time: text(attr::CREATE_TIME),
        update_time: text(attr::UPDATE_TIME),
        fail_reason: text(attr::FAIL_REASON),
        created_at: number(attr::CREATED_AT).unwrap_or(0),
        reconcile_attempts: super::attempts_of(item),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_only_go_forward_and_finals_are_final() {
        let order = [
            CREATING,
            ACCEPTED,
            PROCESSING,
            WAIT_USER_CONFIRM,
            TRANSFERING,
            CANCELING,
        ];
        for pair in order.windows(2) {
            assert!(rank(pair[0]) < rank(pair[1]), "{pair:?}");
        }
        for state in [SUCCESS, FAIL, CANCELLED] {
            assert!(is_final(state));
            assert!(order.iter().all(|s| rank(s) < rank(state) && !is_final(s)));
        }
        assert_eq!(rank("REFUNDED"), None);
        assert!(!is_final("REFUNDED"));
    }
}
