//! Brute-force protection (ADR 0009): failures counted per subject (an account or a
//! client address, always hashed) in `login_throttle`, which every gateway shares.
//! A subject that reaches its threshold is locked for a while, doubling per lock,
//! and each lock is recorded as a `login.throttled` event.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use keel_domain::envelope::Actor;
use keel_domain::login_guard::{LoginGuard, LoginGuardCommand, ThrottledSubject};

use crate::bus::{self, CommandContext, Framework};

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
    /// Counters in `pool` under `policy`.
    pub fn new(pool: PgPool, policy: ThrottlePolicy) -> Self {
        Self { guards: bus::framework(&pool), pool, policy }
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
            let Some(lock) = self.policy.lock_after(kind, failures) else { continue };
            let until = now + lock;
            sqlx::query("UPDATE login_throttle SET locked_until = $2 WHERE subject = $1")
                .bind(subject)
                .bind(until)
                .execute(&self.pool)
                .await?;
            tracing::warn!(subject = ?kind, failures, seconds = lock.num_seconds(), "sign-in throttled");
            let ctx =
                CommandContext::new(Actor::system("login_guard"), correlation_id.to_string(), subject.to_string());
            let cmd = LoginGuardCommand::Throttle { subject: kind, failures: failures as u32, until, at: now };
            if let Err(err) = bus::execute(&self.guards, subject, cmd, ctx.metadata(None)).await {
                tracing::error!(error = %err, "throttle event not recorded");
            }
        }
        Ok(())
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
