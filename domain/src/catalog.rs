//! The plan catalog, as data (`domain/catalog/plans.json`): the capabilities and quota
//! dimensions Keel knows, and what each plan grants. A tenant's entitlements are its
//! plan's grants with its per-tenant overrides on top.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Plan;

/// The catalog file, compiled in.
const PLANS_JSON: &str = include_str!("../catalog/plans.json");

/// What a plan grants.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlanGrants {
    /// The capabilities it turns on.
    pub capabilities: Vec<String>,
    /// Its quotas; `None` means unlimited.
    pub quotas: BTreeMap<String, Option<u64>>,
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Catalog {
    /// Capability key → description.
    pub capabilities: BTreeMap<String, String>,
    /// Quota key → description.
    pub quotas: BTreeMap<String, String>,
    /// Plan name → grants.
    pub plans: BTreeMap<String, PlanGrants>,
}

/// Whether an entitlement is a capability (on/off) or a quota (a number, or unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementKind {
    /// On or off (`true` / `false`).
    Capability,
    /// A limit (a non-negative integer, or `null` for unlimited).
    Quota,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let catalog: Catalog = serde_json::from_str(PLANS_JSON).expect("domain/catalog/plans.json is valid");
    catalog
});

/// The catalog.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

impl Catalog {
    /// The kind of entitlement `key`, if the catalog knows it.
    pub fn kind(&self, key: &str) -> Option<EntitlementKind> {
        if self.capabilities.contains_key(key) {
            Some(EntitlementKind::Capability)
        } else if self.quotas.contains_key(key) {
            Some(EntitlementKind::Quota)
        } else {
            None
        }
    }

    /// Whether `value` fits entitlement `key`: a boolean for a capability, a
    /// non-negative integer or `null` (unlimited) for a quota.
    pub fn accepts(&self, key: &str, value: &Value) -> bool {
        match self.kind(key) {
            Some(EntitlementKind::Capability) => value.is_boolean(),
            Some(EntitlementKind::Quota) => value.is_null() || value.is_u64(),
            None => false,
        }
    }

    /// What `plan` grants, entitlement by entitlement (every catalog key, in order).
    pub fn grants(&self, plan: Plan) -> BTreeMap<String, (EntitlementKind, Value)> {
        let grants = self.plans.get(plan.as_str());
        let mut out = BTreeMap::new();
        for key in self.capabilities.keys() {
            let on = grants.is_some_and(|g| g.capabilities.iter().any(|c| c == key));
            out.insert(key.clone(), (EntitlementKind::Capability, Value::Bool(on)));
        }
        for key in self.quotas.keys() {
            let limit = grants.and_then(|g| g.quotas.get(key)).copied().unwrap_or(Some(0));
            out.insert(key.clone(), (EntitlementKind::Quota, limit.map_or(Value::Null, Value::from)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_is_in_the_catalog_and_grants_only_known_entitlements() {
        let catalog = catalog();
        for plan in Plan::ALL {
            let grants = catalog.plans.get(plan.as_str()).expect("plan in catalog");
            assert!(grants.capabilities.iter().all(|c| catalog.capabilities.contains_key(c)), "{plan}");
            assert!(grants.quotas.keys().all(|q| catalog.quotas.contains_key(q)), "{plan}");
        }
        assert_eq!(catalog.plans.len(), Plan::ALL.len());
    }

    #[test]
    fn plans_grant_more_as_they_cost_more() {
        let catalog = catalog();
        let free = catalog.grants(Plan::Free);
        let pro = catalog.grants(Plan::Pro);
        assert_eq!(free["connectors.aws_discovery"].1, Value::Bool(false));
        assert_eq!(pro["connectors.aws_discovery"].1, Value::Bool(true));
        assert_eq!(free["seats"], (EntitlementKind::Quota, Value::from(5)));
        assert_eq!(catalog.grants(Plan::Enterprise)["seats"].1, Value::Null);
    }

    #[test]
    fn values_must_fit_the_kind() {
        let catalog = catalog();
        assert!(catalog.accepts("sso.oidc", &Value::Bool(true)));
        assert!(!catalog.accepts("sso.oidc", &Value::from(1)));
        assert!(catalog.accepts("seats", &Value::from(12)));
        assert!(catalog.accepts("seats", &Value::Null));
        assert!(!catalog.accepts("seats", &Value::from(-1)));
        assert!(!catalog.accepts("seats", &Value::from(1.5)));
        assert!(!catalog.accepts("no.such", &Value::Bool(true)));
    }
}
