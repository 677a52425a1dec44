//! The write side's last line of defence on size: no event larger than the broker
//! accepts is ever appended (`keel_domain::limits`). The gateway checks each field
//! first; this checks the serialized event, on every append path, before commit.

use std::sync::atomic::{AtomicUsize, Ordering};

use keel_domain::limits::Limits;
use serde_json::Value;

/// The most bytes of an event's payload and metadata, serialized (set at start-up).
static MAX_EVENT_BYTES: AtomicUsize =
    AtomicUsize::new(keel_domain::limits::DEFAULT_MESSAGE_MAX_BYTES - keel_domain::limits::ENVELOPE_RESERVE);

/// Sets this process's limits (at start-up, from the broker's message limit).
pub fn configure(limits: Limits) {
    MAX_EVENT_BYTES.store(limits.max_event_bytes(), Ordering::Relaxed);
}

/// The most bytes of an event's payload and metadata together, serialized.
pub fn max_event_bytes() -> usize {
    MAX_EVENT_BYTES.load(Ordering::Relaxed)
}

/// An event larger than the broker accepts: refused before it is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event would be {size} bytes; the most is {limit}")]
pub struct EventTooLarge {
    /// The event's payload and metadata, serialized.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// Refuses an event whose payload and metadata together serialize to more than
/// [`max_event_bytes`].
pub fn check_event(payload: &Value, metadata: &Value) -> Result<(), EventTooLarge> {
    let size = serialized_len(payload) + serialized_len(metadata);
    let limit = max_event_bytes();
    if size > limit {
        tracing::warn!(size, limit, "event refused: larger than the broker accepts");
        return Err(EventTooLarge { size, limit });
    }
    Ok(())
}

/// The length of `value` as compact JSON, without building the text.
fn serialized_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_compact_json() {
        let value = serde_json::json!({ "reason": "é\"x", "n": [1, 2] });
        assert_eq!(serialized_len(&value), value.to_string().len());
    }

    #[test]
    fn refuses_an_event_over_the_limit_and_accepts_one_at_it() {
        let limit = max_event_bytes();
        let metadata = serde_json::json!({});
        // `"…"` is two bytes more than its text; `{}` is two.
        let at = Value::String("a".repeat(limit - 4));
        assert_eq!(check_event(&at, &metadata), Ok(()));
        let over = Value::String("a".repeat(limit - 3));
        assert_eq!(check_event(&over, &metadata), Err(EventTooLarge { size: limit + 1, limit }));
    }
}
