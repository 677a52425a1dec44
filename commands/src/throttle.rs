//! Brute-force protection (ADR 0009): failures counted per subject (an account or a
//! client address, always hashed) in `login_throttle`, which every gateway shares.
//! A subject that reaches its threshold is locked for a while, doubling per lock,
//! and each lock is recorded as a `login.throttled` event.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use keel_domain::envelope::Actor;
use keel_domain::login_guard::{LoginGuard, LoginGuardCommand, ThrottledSubject};
use keel_domain::validate;

use crate::bus::{self, CommandContext, Framework};
use crate::pools::Pools;
use crate::secret;

/// The account a sign-in (or reset) names, however it is spelled: the tenant's domain
/// as the directory stores it (case, surrounding spaces and a trailing dot dropped;
/// `None` is the platform) and the e-mail as its `email_key` (lowercased, trimmed).
/// Hashed, so no subject names an address.
pub fn account_key(domain: Option<&str>, email: &str) -> String {
    let tenant = match domain {
        None => "platform".to_string(),
        Some(raw) => match validate::domain(raw) {
            Some(domain) => format!("tenant:{domain}"),
            // No tenant has such a domain; still one key however it is cased or padded.
            None => format!("invalid:{}", raw.trim().to_lowercase()),
        },
    };
    let email = validate::email(email).unwrap_or_else(|| email.trim().to_string()).to_lowercase();
    secret::digest(&format!("{tenant}|{email}"))
}

/// The network a client address counts for: an IPv4 address on its own (/32), an
/// IPv6 address by its /64 (one subscriber's allocation, which it can walk through at
/// will). An IPv4-mapped IPv6 address counts as the IPv4 address. Hashed.
pub fn address_key(client: Option<IpAddr>) -> String {
    let network = match client.map(|ip| ip.to_canonical()) {
        None => String::new(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    };
    secret::digest(&network)
}

/// Brute-force protection settings.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Consecutive failures of one account before it is locked.
    pub account_failures: i32,
    /// Failures from one client address before it is throttled.
    pub address_failures: i32,
    /// The first lock's length; each further lock doubles it.
    pub base_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_failures: 5,
            address_failures: 20,
            base_lock: Duration::seconds(30),
            max_lock: Duration::minutes(15),
            window: Duration::minutes(15),
        }
    }
}

impl ThrottlePolicy {
    /// The limits on password-reset requests: every request counts (3 per account and 10
    /// per address in 15 minutes), locks start at a minute.
    pub fn resets() -> Self {
        Self {
            account_failures: 3,
            address_failures: 10,
            base_lock: Duration::minutes(1),
            max_lock: Duration::minutes(15),
            window: Duration::minutes(15),
        }
    }

    /// How long a subject of `kind` is locked after `failures`, if that many lock it.
    pub fn lock_after(&self, kind: ThrottledSubject, failures: i32) -> Option<Duration> {
        let threshold = match kind {
            ThrottledSubject::Account => self.account_failures,
            ThrottledSubject::Address => self.address_failures,
        }
        .max(1);
        if failures < threshold || failures % threshold != 0 {
            return None;
        }
        let doublings = (failures / threshold - 1).clamp(0, 16) as u32;
        Some((self.base_lock * 2i32.pow(doublings)).min(self.max_lock))
    }
}

/// The shared failure counters.
pub struct Throttle {
    pool: PgPool,
    guards: Framework<LoginGuard>,
    policy: ThrottlePolicy,
}

impl Throttle {
    /// Counters on `pools` under `policy`.
    pub fn new(pools: &Pools, policy: ThrottlePolicy) -> Self {
        Self { guards: bus::framework(pools), pool: pools.durable.clone(), policy }
    }

    /// Whole seconds until the last lock of `subjects` ends, if any is locked.
    pub async fn locked_for(&self, subjects: &[String]) -> Result<Option<u64>, sqlx::Error> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(locked_until) - now())::float8 FROM login_throttle
             WHERE subject = ANY($1) AND locked_until > now()",
        )
        .bind(subjects)
        .fetch_one(&self.pool)
        .await?;
        Ok(seconds.map(|s| s.ceil().max(1.0) as u64))
    }

    /// Counts a failure against each subject; one that reaches its threshold is locked,
    /// and the lock is recorded as an event.
    pub async fn record_failure(
        &self,
        correlation_id: &str,
        subjects: &[(&str, ThrottledSubject)],
    ) -> Result<(), sqlx::Error> {
        for &(subject, kind) in subjects {
            let Some((failures, until, now)) = self.count(subject, kind).await? else { continue };
            let ctx =
                CommandContext::new(Actor::system("login_guard"), correlation_id.to_string(), subject.to_string());
            let cmd = LoginGuardCommand::Throttle { subject: kind, failures: failures as u32, until, at: now };
            if let Err(err) = bus::execute(&self.guards, subject, cmd, ctx.metadata(None)).await {
                tracing::error!(error = %err, "throttle event not recorded");
            }
        }
        Ok(())
    }

    /// Counts an attempt against each subject and locks one that reaches its threshold,
    /// without an event (for requests anyone may repeat, which must not grow the log).
    pub async fn record_attempt(&self, subjects: &[(&str, ThrottledSubject)]) -> Result<(), sqlx::Error> {
        for &(subject, kind) in subjects {
            self.count(subject, kind).await?;
        }
        Ok(())
    }

    /// Counts one failure of `subject`; if that locks it: (failures, locked until, now).
    async fn count(
        &self,
        subject: &str,
        kind: ThrottledSubject,
    ) -> Result<Option<(i32, DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
        let (failures, now): (i32, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO login_throttle AS t (subject, failures, last_failure_at) VALUES ($1, 1, now())
             ON CONFLICT (subject) DO UPDATE SET
               failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2) THEN 1 ELSE t.failures + 1 END,
               last_failure_at = now()
             RETURNING failures, now()",
        )
        .bind(subject)
        .bind(self.policy.window.num_seconds() as f64)
        .fetch_one(&self.pool)
        .await?;
        let Some(lock) = self.policy.lock_after(kind, failures) else { return Ok(None) };
        let until = now + lock;
        sqlx::query("UPDATE login_throttle SET locked_until = $2 WHERE subject = $1")
            .bind(subject)
            .bind(until)
            .execute(&self.pool)
            .await?;
        tracing::warn!(subject = ?kind, failures, seconds = lock.num_seconds(), "throttled");
        Ok(Some((failures, until, now)))
    }

    /// Forgets a subject's failures (after a success).
    pub async fn clear(&self, subject: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_throttle WHERE subject = $1").bind(subject).execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_one_subject_however_its_tenant_and_email_are_spelled() {
        let key = account_key(Some("acme"), "owner@acme.example.com");
        for (domain, email) in [
            ("ACME", "owner@acme.example.com"),
            ("acme.", "Owner@ACME.example.com"),
            (" Acme. ", " OWNER@acme.example.com "),
        ] {
            assert_eq!(account_key(Some(domain), email), key, "{domain:?} {email:?}");
        }
        assert_ne!(account_key(Some("acme2"), "owner@acme.example.com"), key);
        assert_ne!(account_key(None, "owner@acme.example.com"), key, "the platform is not a tenant");
        assert_ne!(account_key(Some(""), "owner@acme.example.com"), account_key(None, "owner@acme.example.com"));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_ipv4_by_itself() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(address_key(ip("2001:db8:1:2::1")), address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(address_key(ip("2001:db8:1:2::1")), address_key(ip("2001:db8:1:3::1")));
        assert_ne!(address_key(ip("203.0.113.7")), address_key(ip("203.0.113.8")));
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), address_key(ip("203.0.113.7")));
        assert_ne!(address_key(ip("203.0.113.7")), address_key(None));
    }

    #[test]
    fn locks_start_at_the_threshold_and_double_up_to_the_maximum() {
        let policy = ThrottlePolicy::default();
        let account = |n| policy.lock_after(ThrottledSubject::Account, n).map(|d| d.num_seconds());
        assert_eq!((1..5).filter_map(account).count(), 0);
        assert_eq!(account(5), Some(30));
        assert_eq!(account(6), None);
        assert_eq!(account(10), Some(60));
        assert_eq!(account(15), Some(120));
        assert_eq!(account(500), Some(900));
        assert_eq!(policy.lock_after(ThrottledSubject::Address, 5), None);
        assert_eq!(policy.lock_after(ThrottledSubject::Address, 20).map(|d| d.num_seconds()), Some(30));
    }
}
