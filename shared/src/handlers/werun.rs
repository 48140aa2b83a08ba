//! `POST /werun {"encryptedData", "iv"}` (from `wx.getWeRunData`) → the last 30 days of steps,
//! each dated in China time (UTC+8), oldest first, and the total.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Sealed, open_sealed, reject_open_data};
use crate::api::request::parse_json_body;
use crate::api::response::json_response;
use crate::function::{Answer, Entry, Function, Route};
use crate::store::sessions::Session;
use crate::{AppState, authed};

pub const FUNCTION: Function = Function {
    name: "werun",
    parts: super::OPEN_DATA,
    // WeChat only after a failed decryption.
    at_init: AtInit::DYNAMODB,
    entry: Entry::Routes(&[Route::post("/werun", authed!(werun))]),
};

#[derive(Serialize, Debug, PartialEq)]
struct Day {
    date: ChinaDate,
    timestamp: u64,
    step: u64,
}

/// A Unix timestamp written as `YYYY-MM-DD` in China time (UTC+8, no daylight saving), straight
/// into the answer (no string per day).
#[derive(Debug, PartialEq)]
struct ChinaDate(u64);

impl std::fmt::Display for ChinaDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = (self.0 + 8 * 3600) / 86_400;
        let (y, m, d) = crate::clock::civil_from_days(days as i64);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for ChinaDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What getWeRunData decrypts to: a day's steps, each day stamped at its 00:00 (UTC+8).
#[derive(Deserialize)]
struct Steps {
    #[serde(rename = "stepInfoList")]
    step_info_list: Vec<StepEntry>,
}

#[derive(Deserialize)]
struct StepEntry {
    timestamp: u64,
    step: u64,
}

/// The last day a WeRun timestamp may name (9999-12-31, UTC+8): later ones are not dates, and
/// would overflow the date arithmetic.
const LAST_TIMESTAMP: u64 = 253_402_271_999;

pub async fn werun(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: Sealed = parse_json_body(req)?;
    let data: Steps = open_sealed(state, session, &body.encrypted_data, &body.iv).await?;
    let mut days: Vec<Day> = data
        .step_info_list
        .into_iter()
        .map(|entry| Day {
            date: ChinaDate(entry.timestamp),
            timestamp: entry.timestamp,
            step: entry.step,
        })
        .collect();
    days.sort_by_key(|d| d.timestamp);
    // Values that decrypted fine but cannot be steps or dates are open data that does not check
    // out: the one answer, as for any other.
    let total = days.iter().try_fold(0u64, |sum, d| sum.checked_add(d.step));
    let (Some(total), true) = (total, days.last().is_none_or(|d| d.timestamp <= LAST_TIMESTAMP)) else {
        return Err(reject_open_data(state, session, &"step counts overflow or a date is out of range").await);
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "days": days, "total": total }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn china_date(timestamp: u64) -> String {
        serde_json::to_value(ChinaDate(timestamp))
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn dates_are_china_time() {
        // 2026-11-25 00:00 in UTC+8 is 2026-11-24 16:00 UTC (date -d '2026-11-24 16:00 UTC' +%s).
        assert_eq!(china_date(1_795_536_000), "2026-11-25");
        assert_eq!(china_date(1_795_536_000 - 1), "2026-11-24");
        assert_eq!(china_date(0), "1970-01-01");
        // Leap day: 2024-02-29 00:00 UTC+8 (date -d '2024-02-28 16:00 UTC' +%s).
        assert_eq!(china_date(1_709_136_000), "2024-02-29");
        assert_eq!(china_date(1_709_136_000 + 86_400), "2024-03-01");
    }
}
