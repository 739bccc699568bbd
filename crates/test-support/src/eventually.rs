use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled: short enough that tests do not wait noticeably longer than
/// the condition takes, long enough not to spin.
const POLL: Duration = Duration::from_millis(20);

/// What a polled condition returns: `bool` (done or not) or `Option<T>` (done with a value).
pub trait Settled {
    /// What [`eventually`] returns once the condition holds.
    type Value;
    /// `Some` once the condition holds.
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Poll `check` until it holds (returns `true` or `Some`), and return its value; panic with
/// "timed out after … waiting for `what`" once `within` has passed.
pub async fn eventually<F, Fut>(
    within: Duration,
    what: &str,
    mut check: F,
) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await.settled() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for synchronous tests: polls `check` on this thread.
#[track_caller]
pub fn eventually_blocking<T: Settled>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> T,
) -> T::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().settled() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let v = eventually(Duration::from_secs(5), "the third call", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n)
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a condition that never holds")]
    async fn panics_naming_what_was_awaited() {
        eventually(
            Duration::from_millis(60),
            "a condition that never holds",
            || async { false },
        )
        .await;
    }

    #[test]
    fn blocking_variant_accepts_bool_conditions() {
        let mut n = 0;
        eventually_blocking(Duration::from_secs(5), "n to reach 2", || {
            n += 1;
            n == 2
        });
        assert_eq!(n, 2);
    }

    #[test]
    #[should_panic(expected = "timed out after 50ms waiting for nothing")]
    fn blocking_variant_panics_after_the_deadline() {
        eventually_blocking(Duration::from_millis(50), "nothing", || None::<()>);
    }
}
