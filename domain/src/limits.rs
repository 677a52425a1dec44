//! Size limits, all derived from one: the largest message the broker accepts
//! (Kafka's `message.max.bytes`; Keel's `KEEL_KAFKA_MESSAGE_MAX_BYTES`). Each event
//! is one Kafka message, so no accepted input may make an event larger than the
//! broker takes; a REST body or a gRPC message carries at most one message's worth
//! (batch endpoints excepted: each of their records is its own event, bounded by
//! the field limits here).

/// Kafka's default `message.max.bytes`, and Keel's: 1 MiB.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1024 * 1024;
/// The smallest broker limit Keel runs with: an event whose every field is at its
/// limit still fits.
pub const MIN_MESSAGE_MAX_BYTES: usize = 64 * 1024;
/// Bytes of a message kept for what surrounds an event's payload and metadata: the
/// envelope's other fields, the key, the headers and Kafka's record overhead.
pub const ENVELOPE_RESERVE: usize = 4 * 1024;
/// Most characters of a free-text field (a reason, a description).
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Most characters of a name or an identifier chosen by a caller.
pub const MAX_NAME_CHARS: usize = 200;
/// Most bytes of a caller's JSON metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// The limits of one deployment, derived from the broker's message limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    message_max_bytes: usize,
}

/// A message limit Keel cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the broker's message limit must be at least {MIN_MESSAGE_MAX_BYTES} bytes, not {0}")]
pub struct MessageLimitTooSmall(pub usize);

impl Limits {
    /// The limits for a broker that accepts messages of up to `message_max_bytes`.
    pub fn new(message_max_bytes: usize) -> Result<Self, MessageLimitTooSmall> {
        if message_max_bytes < MIN_MESSAGE_MAX_BYTES {
            return Err(MessageLimitTooSmall(message_max_bytes));
        }
        Ok(Self { message_max_bytes })
    }

    /// The largest message the broker accepts.
    pub fn message_max_bytes(&self) -> usize {
        self.message_max_bytes
    }

    /// The most bytes of an event's serialized payload and metadata together.
    pub fn max_event_bytes(&self) -> usize {
        self.message_max_bytes - ENVELOPE_RESERVE
    }

    /// The most bytes of a REST request body (batch endpoints set their own).
    pub fn request_body_bytes(&self) -> usize {
        self.message_max_bytes
    }

    /// The most bytes of one gRPC message, received or sent.
    pub fn grpc_message_bytes(&self) -> usize {
        self.message_max_bytes
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self { message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES }
    }
}

/// Whether `text` is at most [`MAX_TEXT_CHARS`] characters.
pub fn text_fits(text: &str) -> bool {
    // Bytes bound characters from above: the cheap check first.
    text.len() <= MAX_TEXT_CHARS || text.chars().count() <= MAX_TEXT_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_at_its_limit_fits_the_smallest_message() {
        // JSON escapes a character into at most 6 bytes (`\u001f`); an audit record has
        // two free-text fields, a handful of names and a metadata object, and its chain hashes.
        let worst = 2 * MAX_TEXT_CHARS * 6 + 8 * MAX_NAME_CHARS * 6 + MAX_METADATA_BYTES + 1024;
        assert!(worst <= Limits::new(MIN_MESSAGE_MAX_BYTES).expect("minimum").max_event_bytes(), "{worst}");
    }

    #[test]
    fn limits_derive_from_the_message_limit() {
        let limits = Limits::default();
        assert_eq!(limits.message_max_bytes(), 1_048_576);
        assert_eq!(limits.max_event_bytes(), 1_048_576 - ENVELOPE_RESERVE);
        assert_eq!(limits.request_body_bytes(), 1_048_576);
        assert_eq!(limits.grpc_message_bytes(), 1_048_576);
        assert_eq!(Limits::new(1000), Err(MessageLimitTooSmall(1000)));
    }

    #[test]
    fn text_is_counted_in_characters() {
        assert!(text_fits(&"é".repeat(MAX_TEXT_CHARS)));
        assert!(!text_fits(&"a".repeat(MAX_TEXT_CHARS + 1)));
    }
}
