//! Wall-clock time as WeChat, WeChat Pay and DynamoDB TTLs count it: Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
