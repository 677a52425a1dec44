//! Subscription plans. The catalog of what each plan grants comes with entitlements.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A subscription plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// The free tier.
    Free,
    /// The paid tier for teams.
    Pro,
    /// The tier with everything, for regulated and large customers.
    Enterprise,
}

/// The plan name is not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan (expected free, pro or enterprise)")]
pub struct UnknownPlan;

impl Plan {
    /// Every plan, cheapest first.
    pub const ALL: [Plan; 3] = [Plan::Free, Plan::Pro, Plan::Enterprise];

    /// The plan's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

impl FromStr for Plan {
    type Err = UnknownPlan;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s.trim())).ok_or(UnknownPlan)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
