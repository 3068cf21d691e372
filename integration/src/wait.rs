//! Waiting by polling a condition against a deadline: the only way tests wait.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `cond` every [`POLL`] until it holds; panics naming `what` when
/// `timeout` passes first.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || if cond() { Ok(()) } else { Err("not yet".to_string()) })
}

/// Polls `probe` every [`POLL`] until it returns `Ok`, and returns that
/// value; panics naming `what` and the last `Err` when `timeout` passes
/// first. The `Err` says what was seen instead ("12 bytes, expected 40").
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let last = match probe() {
            Ok(v) => return v,
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "timed out after {:.1?} waiting for: {what}\n  last seen: {last}",
                now - start
            );
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut n = 0;
        let v = wait_for(Duration::from_secs(5), "third try", || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("try {n}"))
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_names_what_and_last_seen() {
        let err = std::panic::catch_unwind(|| {
            wait_for::<()>(Duration::from_millis(60), "the moon", || Err("cheese".into()))
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("the moon") && msg.contains("cheese"), "{msg}");
    }
}
