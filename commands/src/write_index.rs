//! Write-side indexes: tables folded from events inside the transaction that appends
//! them (ADR 0009, 0010, 0013), so that what they say is in force the moment the
//! events commit. The event store applies one list of them (`group_commit::WRITE_SIDE_INDEXES`).

use std::future::Future;

use cqrs_es::persist::SerializedEvent;
use sqlx::PgConnection;

/// A table the event store updates in the append's transaction.
///
/// Implementors are unit structs; a tuple of indexes is itself an index (affected
/// when any member is, applied member by member in order), which keeps the store's
/// list statically dispatched: no allocation or extra round trip per command.
pub trait WriteSideIndex: Sync {
    /// Whether `event` changes this index (if no event of a commit does, the commit
    /// is a single statement with no transaction around it).
    fn affects(&self, event: &SerializedEvent) -> bool;

    /// Folds one just-appended event into the index (a no-op for events it ignores).
    fn apply(
        &self,
        tx: &mut PgConnection,
        event: &SerializedEvent,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Implements [`WriteSideIndex`] for a tuple of indexes.
macro_rules! tuple_index {
    ($($index:ident . $at:tt),+) => {
        impl<$($index: WriteSideIndex),+> WriteSideIndex for ($($index,)+) {
            fn affects(&self, event: &SerializedEvent) -> bool {
                $(self.$at.affects(event))||+
            }

            async fn apply(&self, tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
                $(self.$at.apply(tx, event).await?;)+
                Ok(())
            }
        }
    };
}

tuple_index!(A.0, B.1);
tuple_index!(A.0, B.1, C.2);
tuple_index!(A.0, B.1, C.2, D.3);
tuple_index!(A.0, B.1, C.2, D.3, E.4);

/// A just-appended event's payload as the aggregate's event enum.
pub(crate) fn decode<E: serde::de::DeserializeOwned>(event: &SerializedEvent) -> Result<E, sqlx::Error> {
    serde_json::from_value(event.payload.clone()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
