//! Domain claims: one aggregate per tenant domain, so that a domain is unique
//! across the platform even under concurrent provisioning. The event store's
//! optimistic concurrency on `(aggregate_type, aggregate_id, sequence)` makes
//! two claims of one domain race for the same row; exactly one wins.

use serde::{Deserialize, Serialize};

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::ids::TenantId;

/// A command on a domain claim (aggregate id = the normalized domain).
#[derive(Debug, Clone, PartialEq)]
pub enum TenantDomainCommand {
    /// Reserve the domain for a tenant. Claiming it again for the same tenant is a no-op.
    Claim {
        /// The domain (normalized).
        domain: String,
        /// The tenant that gets it.
        tenant_id: TenantId,
    },
    /// Free the domain (when its tenant is purged).
    Release {
        /// The tenant that holds it.
        tenant_id: TenantId,
    },
}

events! {
    /// What happened to a domain claim.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum TenantDomainEvent {
        /// The domain now belongs to the tenant.
        "tenant_domain.claimed" => Claimed {
            /// The domain.
            domain: String,
            /// The tenant.
            tenant_id: TenantId,
        },
        /// The domain is free again.
        "tenant_domain.released" => Released {
            /// The domain.
            domain: String,
            /// The tenant that held it.
            tenant_id: TenantId,
        },
    }
}

/// Why a claim command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantDomainError {
    /// Another tenant holds the domain.
    #[error("domain is already taken")]
    Taken,
    /// The tenant does not hold the domain.
    #[error("domain is not held by this tenant")]
    NotHeld,
}

impl DomainError for TenantDomainError {
    fn kind(&self) -> ErrorKind {
        match self {
            TenantDomainError::Taken => ErrorKind::AlreadyExists,
            TenantDomainError::NotHeld => ErrorKind::FailedPrecondition,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            TenantDomainError::Taken => "domain_taken",
            TenantDomainError::NotHeld => "domain_not_held",
        }
    }
}

/// The state of one domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantDomain {
    /// Who holds it now.
    pub holder: Option<TenantId>,
    /// The domain itself, once claimed.
    pub domain: String,
}

impl TenantDomain {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: TenantDomainCommand) -> Result<Option<TenantDomainEvent>, TenantDomainError> {
        match (command, &self.holder) {
            (TenantDomainCommand::Claim { tenant_id, .. }, Some(holder)) if *holder == tenant_id => Ok(None),
            (TenantDomainCommand::Claim { .. }, Some(_)) => Err(TenantDomainError::Taken),
            (TenantDomainCommand::Claim { domain, tenant_id }, None) => {
                Ok(Some(TenantDomainEvent::Claimed { domain, tenant_id }))
            }
            (TenantDomainCommand::Release { tenant_id }, Some(holder)) if *holder == tenant_id => {
                Ok(Some(TenantDomainEvent::Released { domain: self.domain.clone(), tenant_id }))
            }
            (TenantDomainCommand::Release { .. }, _) => Err(TenantDomainError::NotHeld),
        }
    }

    /// The state after `event`.
    fn evolve(&mut self, event: TenantDomainEvent) {
        match event {
            TenantDomainEvent::Claimed { tenant_id, domain } => {
                self.holder = Some(tenant_id);
                self.domain = domain;
            }
            TenantDomainEvent::Released { .. } => self.holder = None,
        }
    }
}

aggregate!(TenantDomain {
    TYPE: "tenant_domain",
    command: TenantDomainCommand,
    event: TenantDomainEvent,
    error: TenantDomainError
});

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn tenant(n: u8) -> TenantId {
        format!("tnt_01jd00000000000000000000{n:02}").parse().unwrap()
    }

    fn claimed(n: u8) -> TenantDomainEvent {
        TenantDomainEvent::Claimed { domain: "acme".into(), tenant_id: tenant(n) }
    }

    fn claim(n: u8) -> TenantDomainCommand {
        TenantDomainCommand::Claim { domain: "acme".into(), tenant_id: tenant(n) }
    }

    #[test]
    fn claims_a_free_domain() {
        TestFramework::<TenantDomain>::with(())
            .given_no_previous_events()
            .when(claim(1))
            .then_expect_events(vec![claimed(1)]);
    }

    #[test]
    fn a_second_tenant_cannot_claim_a_taken_domain() {
        TestFramework::<TenantDomain>::with(())
            .given(vec![claimed(1)])
            .when(claim(2))
            .then_expect_error(TenantDomainError::Taken);
    }

    #[test]
    fn claiming_again_for_the_same_tenant_changes_nothing() {
        TestFramework::<TenantDomain>::with(()).given(vec![claimed(1)]).when(claim(1)).then_expect_events(vec![]);
    }

    #[test]
    fn a_released_domain_can_be_claimed_by_another_tenant() {
        let released = TenantDomainEvent::Released { domain: "acme".into(), tenant_id: tenant(1) };
        TestFramework::<TenantDomain>::with(())
            .given(vec![claimed(1), released])
            .when(claim(2))
            .then_expect_events(vec![claimed(2)]);
    }

    #[test]
    fn release_names_the_domain() {
        let released = TenantDomainEvent::Released { domain: "acme".into(), tenant_id: tenant(1) };
        TestFramework::<TenantDomain>::with(())
            .given(vec![claimed(1)])
            .when(TenantDomainCommand::Release { tenant_id: tenant(1) })
            .then_expect_events(vec![released]);
    }

    #[test]
    fn only_the_holder_can_release() {
        TestFramework::<TenantDomain>::with(())
            .given(vec![claimed(1)])
            .when(TenantDomainCommand::Release { tenant_id: tenant(2) })
            .then_expect_error(TenantDomainError::NotHeld);
    }
}
