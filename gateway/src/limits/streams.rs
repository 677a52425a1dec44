//! Caps on long-lived streams (OFREP SSE, gRPC `IngestEvents`): at most so many open
//! per caller and so many in all. A stream holds a [`StreamSlot`] while it is open;
//! dropping the slot (the stream ends, the client goes away) frees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_domain::access::Principal;

/// Why a stream may not open now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The caller already has as many streams open as it may.
    #[error("too many open streams for this caller; close one first")]
    CallerFull,
    /// The process has as many streams open as it takes.
    #[error("too many open streams; retry later")]
    Full,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// The open long-lived streams of a process, by caller.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    per_caller: usize,
    open: Mutex<Open>,
}

/// An open stream's place; frees it when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: String,
}

/// Whom a stream counts against: an API key, or a user (operator, auditor, tenant user).
pub fn caller_of(principal: &Principal) -> String {
    match principal {
        Principal::App { key_id, .. } => format!("key:{key_id}"),
        other => {
            let actor = other.actor();
            format!("{}:{}", actor.kind.as_str(), actor.id)
        }
    }
}

impl StreamSlots {
    /// At most `max` streams in all and `per_caller` per caller.
    pub fn new(max: usize, per_caller: usize) -> Arc<Self> {
        Arc::new(Self { max, per_caller, open: Mutex::new(Open::default()) })
    }

    /// A place for one more stream of `principal`, or why not.
    pub fn open(self: &Arc<Self>, principal: &Principal) -> Result<StreamSlot, StreamRefused> {
        let caller = caller_of(principal);
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mine = open.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(StreamRefused::CallerFull);
        }
        if open.total >= self.max {
            return Err(StreamRefused::Full);
        }
        open.total += 1;
        open.by_caller.insert(caller.clone(), mine + 1);
        Ok(StreamSlot { slots: self.clone(), caller })
    }

    /// Streams open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.total).unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(key: &str) -> Principal {
        Principal::App { id: "app_1".into(), key_id: key.into(), scopes: Default::default() }
    }

    #[test]
    fn each_caller_has_its_own_cap_within_the_global_one() {
        let slots = StreamSlots::new(3, 2);
        let a1 = slots.open(&app("a")).expect("first");
        let _a2 = slots.open(&app("a")).expect("second");
        assert_eq!(slots.open(&app("a")).unwrap_err(), StreamRefused::CallerFull);
        let _b1 = slots.open(&app("b")).expect("another caller");
        assert_eq!(slots.open(&app("c")).unwrap_err(), StreamRefused::Full);
        drop(a1);
        assert_eq!(slots.open_count(), 2);
        let _c1 = slots.open(&app("c")).expect("a freed place is reused");
        assert_eq!(slots.open(&app("a")).unwrap_err(), StreamRefused::Full);
    }

    #[test]
    fn a_user_and_an_app_count_apart() {
        assert_ne!(caller_of(&app("k1")), caller_of(&app("k2")));
        assert_ne!(caller_of(&Principal::Operator { id: "u1".into() }), caller_of(&app("u1")));
    }
}
