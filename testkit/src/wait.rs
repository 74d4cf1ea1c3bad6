//! Waiting on a condition with a deadline: tests poll what the nodes report
//! (leader, applied index, exit) instead of sleeping a fixed time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long any awaited condition may take before the test fails. Generous:
/// tests must pass on a slow, loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`]
/// with a message saying what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_within(PATIENCE, check).await {
        Some(value) => value,
        None => panic!("timed out after {PATIENCE:?} waiting until {what}"),
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`; `None` if it
/// never did. For bounds that are part of what a test asserts.
pub async fn poll_within<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticks.tick().await;
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}
