//! Per-caller budgets on routes that spend the app's WeChat quotas or money for a caller (content
//! checks, a phone number by code, asking WeChat Pay about an order): a logged-in user gets
//! `burst` calls at once and `per_minute` after that, whatever number of sessions they open.
//!
//! A generic cell rate algorithm (a token bucket kept as one number: the *theoretical arrival
//! time* `tat` of the next call) in the sessions table, under the key `budget:<route>:<openid>`
//! (a session's key is 64 hex digits, so the two never meet), expired by the table's TTL. A caller
//! within their rate costs one conditional `UpdateItem`; one inside a burst a second (a
//! compare-and-set on the value the first one returned); a refused one none more.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::sessions::attr;
use super::{StoreError, Table, applied, is_condition_failure, n, s, send, store_error};

/// The time of the next call this budget allows, in milliseconds since the epoch.
const TAT: &str = "budget_tat_ms";

/// A caller's allowance on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Calls a minute, sustained (1 or more).
    pub per_minute: u64,
    /// Calls at once after a quiet spell (1 or more).
    pub burst: u64,
}

impl Budget {
    /// Milliseconds between two calls at the sustained rate.
    fn interval_ms(self) -> u64 {
        60_000 / self.per_minute.max(1)
    }

    /// How far ahead of now the next call's time may run: `burst - 1` intervals.
    fn tolerance_ms(self) -> u64 {
        self.interval_ms() * self.burst.max(1).saturating_sub(1)
    }
}

/// What spending one call of a budget did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    Allowed,
    /// Refused: the caller may call again in this many seconds (at least 1).
    RetryAfter(u64),
}

#[derive(Clone)]
pub struct BudgetStore {
    client: Client,
    table: String,
}

impl BudgetStore {
    pub fn new(client: Client, sessions_table: &str) -> Self {
        Self {
            client,
            table: sessions_table.to_owned(),
        }
    }

    /// Spends one call of `openid`'s `budget` on `route` at `now_ms`.
    pub async fn spend(&self, route: &str, openid: &str, budget: Budget, now_ms: u64) -> Result<Spent, StoreError> {
        let key = format!("budget:{route}:{openid}");
        let interval = budget.interval_ms();
        // A quiet caller (no budget item, or its time has come): the next call's time is an
        // interval from now.
        let fresh = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, s(&key))
            .update_expression("SET #tat = :next, #exp = :exp")
            .condition_expression("attribute_not_exists(#tat) OR #tat <= :now")
            .expression_attribute_names("#tat", TAT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":next", n(now_ms + interval))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":exp", n(expiry(now_ms + interval, budget)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let tat = match send(&self.client, Table::Sessions, &self.table, fresh.send()).await? {
            Ok(_) => return Ok(Spent::Allowed),
            Err(e) if is_condition_failure(&e) => match tat_of_refusal(&e) {
                Some(tat) => tat,
                None => self.read_tat(&key).await?.unwrap_or(now_ms),
            },
            Err(e) => return Err(store_error(Table::Sessions, &self.table, e)),
        };
        let ahead = tat.saturating_sub(now_ms);
        if ahead > budget.tolerance_ms() {
            let wait_ms = ahead - budget.tolerance_ms();
            return Ok(Spent::RetryAfter(wait_ms.div_ceil(1000).max(1)));
        }
        // Inside the burst: one more interval on the time read, if no other call moved it.
        let next = tat.max(now_ms) + interval;
        let burst = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, s(&key))
            .update_expression("SET #tat = :next, #exp = :exp")
            .condition_expression("#tat = :seen")
            .expression_attribute_names("#tat", TAT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":seen", n(tat))
            .expression_attribute_values(":exp", n(expiry(next, budget)));
        if applied(
            Table::Sessions,
            &self.table,
            send(&self.client, Table::Sessions, &self.table, burst.send()).await?,
        )? {
            Ok(Spent::Allowed)
        } else {
            // Another call of the same caller got there first, this very moment: they are
            // calling in parallel, which a budget exists to slow down.
            Ok(Spent::RetryAfter(1))
        }
    }

    async fn read_tat(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, s(key))
            .consistent_read(true);
        let output = send(&self.client, Table::Sessions, &self.table, request.send())
            .await?
            .map_err(|e| store_error(Table::Sessions, &self.table, e))?;
        Ok(output.item().and_then(|item| number(item.get(TAT))))
    }
}

/// The budget's item is kept (TTL, seconds) until its time has passed by a burst: then it holds
/// nothing a fresh start would not.
fn expiry(tat_ms: u64, budget: Budget) -> u64 {
    (tat_ms + budget.tolerance_ms()) / 1000 + 60
}

fn number(value: Option<&aws_sdk_dynamodb::types::AttributeValue>) -> Option<u64> {
    value?.as_n().ok()?.parse().ok()
}

/// The time a refused first write found (DynamoDB returns the item with the refusal).
fn tat_of_refusal<R>(e: &aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>) -> Option<u64> {
    match e.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(failed) => number(failed.item()?.get(TAT)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_runs_ahead_by_its_size_less_one_interval() {
        let budget = Budget {
            per_minute: 6,
            burst: 3,
        };
        assert_eq!((budget.interval_ms(), budget.tolerance_ms()), (10_000, 20_000));
        let single = Budget {
            per_minute: 60,
            burst: 1,
        };
        assert_eq!((single.interval_ms(), single.tolerance_ms()), (1_000, 0));
    }
}
