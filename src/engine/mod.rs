//! The sync engine's entry point: one hint in, its effect committed.
//! For now the effect is the journal record of the hint itself, made
//! exactly once per hint id (a redelivered or duplicated hint changes
//! nothing); reconciliation of records builds on this same entry point.

use crate::queue::Hint;
use crate::store::{Store, StoreError};

/// What handling a hint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hint's effect is now committed.
    Applied,
    /// This hint id was handled before: nothing was done again.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Worth retrying later (store or remote unavailable, throttled).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help; the hint goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Database(_) => EngineError::Transient(e.to_string()),
            other => EngineError::Permanent(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
}

impl Engine {
    pub fn new(store: Store) -> Self {
        Engine { store }
    }

    #[tracing::instrument(skip_all, fields(hint_id = %hint.hint_id, tenant = %hint.tenant, change = hint.change.as_str()))]
    pub async fn handle(&self, hint: &Hint) -> Result<Outcome, EngineError> {
        if self.store.record_hint(hint).await? {
            Ok(Outcome::Applied)
        } else {
            tracing::debug!("hint already handled");
            Ok(Outcome::Duplicate)
        }
    }
}
