//! The aggregates a process last committed, kept in memory (ADR 0029), so that a
//! command loads its aggregate without a query and without folding its history.
//!
//! A cached aggregate may be stale (another process committed after it): a decision
//! taken on it then cannot commit, because its events' sequence is taken, and the
//! command is retried on the aggregate loaded from the store ([`crate::bus::execute`]
//! does the same for a refusal taken on a cached aggregate). The cache never decides
//! what is committed; it only saves the load when nothing else wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};

use crate::store::KeelEventRepository;

/// Aggregates of one type a framework keeps unless configured otherwise; past it, one
/// is dropped for each one added.
pub const DEFAULT_ENTRIES: usize = 20_000;

/// Aggregates of type `A` with the sequence of their last event.
#[derive(Debug)]
pub struct AggregateCache<A> {
    entries: Arc<Mutex<HashMap<String, (A, usize)>>>,
    capacity: usize,
}

impl<A> Clone for AggregateCache<A> {
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone(), capacity: self.capacity }
    }
}

impl<A: Clone> AggregateCache<A> {
    /// A cache of at most `capacity` aggregates (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self { entries: Arc::default(), capacity }
    }

    fn get(&self, id: &str) -> Option<(A, usize)> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// Keeps `aggregate` at `sequence` unless a later one is kept already.
    fn put(&self, id: &str, aggregate: A, sequence: usize) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(id).is_some_and(|(_, kept)| *kept >= sequence) {
            return;
        }
        if entries.len() >= self.capacity
            && !entries.contains_key(id)
            && let Some(evicted) = entries.keys().next().cloned()
        {
            entries.remove(&evicted);
        }
        entries.insert(id.to_string(), (aggregate, sequence));
    }

    /// Whether aggregate `id` is kept.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    /// Forgets aggregate `id` (its next load reads the store).
    pub fn forget(&self, id: &str) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

/// The Keel event store with the cache in front of its loads.
pub struct CachedEventStore<A: Aggregate> {
    store: PersistedEventStore<KeelEventRepository, A>,
    cache: AggregateCache<A>,
}

impl<A: Aggregate> CachedEventStore<A> {
    /// `store` with `cache` in front.
    pub fn new(store: PersistedEventStore<KeelEventRepository, A>, cache: AggregateCache<A>) -> Self {
        Self { store, cache }
    }
}

impl<A> EventStore<A> for CachedEventStore<A>
where
    A: Aggregate + Clone,
{
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.store.load_events(aggregate_id).await
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<Self::AC, AggregateError<A::Error>> {
        if let Some((aggregate, current_sequence)) = self.cache.get(aggregate_id) {
            return Ok(EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_string(),
                aggregate,
                current_sequence,
                current_snapshot: None,
            });
        }
        let context = self.store.load_aggregate(aggregate_id).await?;
        self.cache.put(aggregate_id, context.aggregate.clone(), context.current_sequence);
        Ok(context)
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: std::collections::HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let aggregate_id = context.aggregate_id.clone();
        let sequence = context.current_sequence + events.len();
        // cqrs-es's `EventSink::write` applied the events while the command was handled:
        // the context's aggregate is already the state after them.
        let after = context.aggregate.clone();
        match self.store.commit(events, context, metadata).await {
            Ok(committed) => {
                self.cache.put(&aggregate_id, after, sequence);
                Ok(committed)
            }
            Err(err) => {
                self.cache.forget(&aggregate_id);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_sequence_wins_and_an_earlier_one_never_replaces_it() {
        let cache = AggregateCache::<u32>::new(10);
        cache.put("a", 5, 5);
        cache.put("a", 4, 4);
        assert_eq!(cache.get("a"), Some((5, 5)));
        cache.put("a", 6, 6);
        assert_eq!(cache.get("a"), Some((6, 6)));
        cache.forget("a");
        assert!(!cache.contains("a"));
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity() {
        let cache = AggregateCache::<u32>::new(100);
        for i in 0..110 {
            cache.put(&i.to_string(), 1, 1);
        }
        assert_eq!(cache.entries.lock().unwrap().len(), 100);
    }

    #[test]
    fn a_cache_of_no_entries_keeps_nothing() {
        let cache = AggregateCache::<u32>::new(0);
        cache.put("a", 1, 1);
        assert!(!cache.contains("a"));
    }
}
