//! The invocation's deadline, as Lambda gives it, and the time budgets derived from it.
//!
//! Lambda stops a function at its deadline, and API Gateway turns that into a bare 503. So every
//! remote call takes `min(its own timeout, time left - MARGIN)`, a retry is only made when time
//! is left for it, and [`run`] answers for the handler if it is still busy just before the
//! deadline. Outside an invocation (tests without a Lambda context, the CLI) there is no deadline
//! and the calls keep their own timeouts.

use std::time::{Duration, Instant};

/// Time kept back from the deadline for writing the answer.
pub const MARGIN: Duration = Duration::from_millis(500);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` (when there is one) visible to [`budget`]; if `work` has not
/// finished `MARGIN / 2` before the deadline, returns `None` instead of its output.
pub async fn run<T>(deadline: Option<Instant>, work: impl Future<Output = T>) -> Option<T> {
    match deadline {
        None => Some(work.await),
        Some(deadline) => {
            let stop = deadline.checked_sub(MARGIN / 2).unwrap_or(deadline);
            DEADLINE
                .scope(deadline, tokio::time::timeout_at(stop.into(), work))
                .await
                .ok()
        }
    }
}

/// No Lambda deadline lies before 2001 (10^12 ms after the epoch).
const EARLIEST_DEADLINE_MS: u64 = 1_000_000_000_000;

/// The deadline of a Lambda context, given in milliseconds since the Unix epoch. A value that
/// cannot be one is no deadline: `cargo lambda watch` (1.9) sends a fixed `600000`, its ten
/// minutes written as if the header were a duration, which would leave no time for any call.
pub fn from_epoch_millis(deadline_ms: u64) -> Option<Instant> {
    if deadline_ms < EARLIEST_DEADLINE_MS {
        return None;
    }
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis(),
    )
    .ok()?;
    Some(Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
}

/// How long a remote call may take: `timeout`, cut to the time left before the deadline less
/// [`MARGIN`]. `None` when no time is left: the call must not start.
pub fn budget(timeout: Duration) -> Option<Duration> {
    match DEADLINE.try_with(|deadline| deadline.saturating_duration_since(Instant::now())) {
        Err(_) => Some(timeout),
        Ok(left) => Some(timeout.min(left.checked_sub(MARGIN)?)).filter(|d| !d.is_zero()),
    }
}

/// Whether a pause of `pause` followed by a call that needs at least `then` still fits.
pub fn allows(pause: Duration, then: Duration) -> bool {
    budget(pause + then).is_some_and(|left| left >= pause + then)
}

/// Runs a remote call that has no timeout of its own within the budget: `None` if the budget
/// ran out first (or there was none).
pub async fn within<T>(timeout: Duration, call: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(budget(timeout)?, call).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budgets_follow_the_deadline() {
        let long = Duration::from_secs(30);
        assert_eq!(budget(long), Some(long), "no deadline: the call's own timeout");
        let deadline = Instant::now() + Duration::from_secs(2);
        run(Some(deadline), async {
            let left = budget(long).expect("time is left");
            assert!(left <= Duration::from_millis(1500), "{left:?}");
            assert_eq!(budget(Duration::from_millis(10)), Some(Duration::from_millis(10)));
            assert!(!allows(Duration::from_secs(1), Duration::from_secs(1)));
        })
        .await
        .expect("finishes in time");
        let past = Instant::now();
        let ran = run(Some(past + MARGIN), async { budget(long) }).await;
        assert_eq!(ran, Some(None), "no time left: no call starts");
    }

    #[test]
    fn a_deadline_before_2001_is_none() {
        assert_eq!(from_epoch_millis(0), None);
        assert_eq!(from_epoch_millis(600_000), None, "cargo lambda watch's");
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let ms = in_a_minute.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let left = from_epoch_millis(u64::try_from(ms).unwrap()).unwrap() - Instant::now();
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn work_still_running_near_the_deadline_is_cut() {
        let deadline = Instant::now() + MARGIN;
        let answer = run(Some(deadline), std::future::pending::<()>()).await;
        assert_eq!(answer, None);
    }
}
