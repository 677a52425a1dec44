//! A tenant's deployment: where it runs (environment, cluster, namespace), where edge
//! routers send its traffic (the routing target), and its deployment state, plus what
//! fleet agents report seeing. One aggregate per tenant: the aggregate id is the tenant
//! id, so its events share the tenant's Kafka key and order. The service checks that
//! the tenant exists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::validate;

#[cfg(test)]
mod tests;

/// The aggregate type name of deployments in the event store.
pub const AGGREGATE_TYPE: &str = "deployment";

/// Longest routing target.
pub const MAX_TARGET_LEN: usize = 253;
/// Longest agent id.
pub const MAX_AGENT_ID_LEN: usize = 128;

/// Where a tenant's deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Planned, not started.
    Pending,
    /// Being rolled out.
    Deploying,
    /// Serving.
    Active,
    /// The rollout failed.
    Failed,
    /// Taken out of service.
    Retired,
}

impl DeploymentState {
    /// Every state.
    pub const ALL: [DeploymentState; 5] = [
        DeploymentState::Pending,
        DeploymentState::Deploying,
        DeploymentState::Active,
        DeploymentState::Failed,
        DeploymentState::Retired,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::Deploying => "deploying",
            DeploymentState::Active => "active",
            DeploymentState::Failed => "failed",
            DeploymentState::Retired => "retired",
        }
    }
}

impl std::str::FromStr for DeploymentState {
    type Err = DeploymentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        DeploymentState::ALL.into_iter().find(|state| state.as_str() == s).ok_or(DeploymentError::InvalidState)
    }
}

/// A DNS label (a cluster or namespace name): 1 to 63 of `a-z 0-9 -`, not starting or
/// ending with `-`; trimmed and lowercased.
pub fn label(raw: &str) -> Option<String> {
    let label = raw.trim().to_ascii_lowercase();
    let ok = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(label)
}

/// A routing target: `host[:port]` (`acme.eu-1.internal:8443`) or a URL
/// (`https://acme.eu-1.internal/app`), 1 to 253 characters, no whitespace. The host is a
/// DNS name or an IPv4 address; the scheme and the host are lowercased, the rest is kept.
pub fn routing_target(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_TARGET_LEN || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            let ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
                && scheme.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
            (Some(ok.then_some(scheme)?), rest)
        }
        None => (None, raw),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if scheme.is_none() && !path.is_empty() {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host = validate::domain(host).filter(|h| h.len() == host.len())?;
    if let Some(port) = port {
        let ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !ok || !(1..=65535).contains(&port.parse::<u32>().ok()?) {
            return None;
        }
    }
    let authority = match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    Some(match scheme {
        Some(scheme) => format!("{scheme}://{authority}{path}"),
        None => authority,
    })
}

/// A fleet agent's id: 1 to 128 visible ASCII characters.
pub fn agent_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    let ok = !id.is_empty() && id.len() <= MAX_AGENT_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| id.to_string())
}

/// A deployment target, validated by [`DeploymentTarget::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentTarget {
    /// Environment, e.g. `production`.
    pub environment: String,
    /// Cluster name (a DNS label).
    pub cluster: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Where edge routers send the tenant's traffic.
    pub routing_target: String,
    /// Deployment state.
    pub state: DeploymentState,
}

impl DeploymentTarget {
    /// Validates and normalizes the raw request fields.
    pub fn new(
        environment: &str,
        cluster: &str,
        namespace: &str,
        routing_target: &str,
        state: &str,
    ) -> Result<Self, DeploymentError> {
        Ok(Self {
            environment: validate::environment(environment).ok_or(DeploymentError::InvalidEnvironment)?,
            cluster: label(cluster).ok_or(DeploymentError::InvalidCluster)?,
            namespace: label(namespace).ok_or(DeploymentError::InvalidNamespace)?,
            routing_target: self::routing_target(routing_target).ok_or(DeploymentError::InvalidRoutingTarget)?,
            state: state.parse()?,
        })
    }
}

/// What a fleet agent saw of a tenant's deployment, validated by [`HealthReport::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The reporting agent (its app id when it authenticates with an API key).
    pub agent_id: String,
    /// The routing target the agent sees in use; empty if it sees none.
    pub observed_target: String,
    /// The deployment state the agent sees.
    pub observed_state: DeploymentState,
    /// Whether the deployment answers its health checks.
    pub healthy: bool,
    /// When the report was received.
    pub at: DateTime<Utc>,
}

impl HealthReport {
    /// Validates and normalizes the raw report fields.
    pub fn new(
        agent_id: &str,
        observed_target: &str,
        observed_state: &str,
        healthy: bool,
        at: DateTime<Utc>,
    ) -> Result<Self, DeploymentError> {
        let observed_target = match observed_target.trim() {
            "" => String::new(),
            raw => routing_target(raw).ok_or(DeploymentError::InvalidObservedTarget)?,
        };
        Ok(Self {
            agent_id: self::agent_id(agent_id).ok_or(DeploymentError::InvalidAgentId)?,
            observed_target,
            observed_state: observed_state.parse().map_err(|_| DeploymentError::InvalidObservedState)?,
            healthy,
            at,
        })
    }
}

/// A command on a tenant's deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentCommand {
    /// Set where the tenant runs and is routed, and its state (no event if nothing changes).
    SetTarget(DeploymentTarget),
    /// Record what a fleet agent sees (always recorded: every report is audited).
    ReportHealth(HealthReport),
}

impl DeploymentCommand {
    /// What identifies the request for idempotency: the command and its arguments,
    /// without the time at which it was (re)sent.
    pub fn fingerprint(&self) -> String {
        match self {
            DeploymentCommand::SetTarget(t) => format!(
                "set_target|{}|{}|{}|{}|{}",
                t.environment,
                t.cluster,
                t.namespace,
                t.routing_target,
                t.state.as_str()
            ),
            DeploymentCommand::ReportHealth(r) => format!(
                "report_health|{}|{}|{}|{}",
                r.agent_id,
                r.observed_target,
                r.observed_state.as_str(),
                r.healthy
            ),
        }
    }
}

events! {
    /// What happened to a tenant's deployment.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum DeploymentEvent {
        /// The deployment target or state was set (the whole target).
        "deployment.target_set" => TargetSet {
            /// Environment.
            environment: String,
            /// Cluster.
            cluster: String,
            /// Namespace.
            namespace: String,
            /// Where edge routers send the tenant's traffic.
            routing_target: String,
            /// Deployment state.
            state: DeploymentState,
        },
        /// A fleet agent reported what it sees.
        "deployment.health_reported" => HealthReported {
            /// The reporting agent.
            agent_id: String,
            /// The routing target it sees in use (empty: none).
            observed_target: String,
            /// The state it sees.
            observed_state: DeploymentState,
            /// Whether the deployment answers its health checks.
            healthy: bool,
            /// When the report was received.
            reported_at: DateTime<Utc>,
        },
    }
}

/// Why a deployment command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    /// The environment is not a valid environment name.
    #[error("environment must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter")]
    InvalidEnvironment,
    /// The cluster is not a DNS label.
    #[error("cluster must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidCluster,
    /// The namespace is not a DNS label.
    #[error("namespace must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidNamespace,
    /// The routing target is neither `host[:port]` nor a URL.
    #[error("routing_target must be host[:port] or a URL, at most 253 characters, without whitespace")]
    InvalidRoutingTarget,
    /// The state is not a deployment state.
    #[error("state must be one of pending, deploying, active, failed, retired")]
    InvalidState,
    /// The agent id is empty, too long or not printable ASCII.
    #[error("agent_id must be 1 to 128 printable ASCII characters")]
    InvalidAgentId,
    /// The observed target is neither empty, `host[:port]` nor a URL.
    #[error("observed_target must be empty, host[:port] or a URL, at most 253 characters")]
    InvalidObservedTarget,
    /// The observed state is not a deployment state.
    #[error("observed_state must be one of pending, deploying, active, failed, retired")]
    InvalidObservedState,
}

impl DomainError for DeploymentError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }

    fn code(&self) -> &'static str {
        use DeploymentError::*;
        match self {
            InvalidEnvironment => "invalid_environment",
            InvalidCluster => "invalid_cluster",
            InvalidNamespace => "invalid_namespace",
            InvalidRoutingTarget => "invalid_routing_target",
            InvalidState => "invalid_deployment_state",
            InvalidAgentId => "invalid_agent_id",
            InvalidObservedTarget => "invalid_observed_target",
            InvalidObservedState => "invalid_observed_state",
        }
    }
}

/// A tenant's deployment state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The current target, once set.
    pub environment: Option<String>,
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Routing target.
    pub routing_target: String,
    /// Deployment state.
    pub state: Option<DeploymentState>,
}

impl Deployment {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: DeploymentCommand) -> Result<Option<DeploymentEvent>, DeploymentError> {
        Ok(match command {
            DeploymentCommand::SetTarget(t) => {
                let unchanged = self.environment.as_deref() == Some(t.environment.as_str())
                    && self.cluster == t.cluster
                    && self.namespace == t.namespace
                    && self.routing_target == t.routing_target
                    && self.state == Some(t.state);
                (!unchanged).then_some(DeploymentEvent::TargetSet {
                    environment: t.environment,
                    cluster: t.cluster,
                    namespace: t.namespace,
                    routing_target: t.routing_target,
                    state: t.state,
                })
            }
            DeploymentCommand::ReportHealth(r) => Some(DeploymentEvent::HealthReported {
                agent_id: r.agent_id,
                observed_target: r.observed_target,
                observed_state: r.observed_state,
                healthy: r.healthy,
                reported_at: r.at,
            }),
        })
    }

    /// The state after `event`.
    fn evolve(&mut self, event: DeploymentEvent) {
        match event {
            DeploymentEvent::TargetSet { environment, cluster, namespace, routing_target, state } => {
                self.environment = Some(environment);
                self.cluster = cluster;
                self.namespace = namespace;
                self.routing_target = routing_target;
                self.state = Some(state);
            }
            // Reports are history (audit, the fleet view), not state the rules depend on.
            DeploymentEvent::HealthReported { .. } => {}
        }
    }
}

aggregate!(Deployment {
    TYPE: AGGREGATE_TYPE,
    command: DeploymentCommand,
    event: DeploymentEvent,
    error: DeploymentError
});
