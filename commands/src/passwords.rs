//! Password hashing: argon2id with the OWASP parameters (19 MiB, 2 iterations,
//! 1 lane), run on the blocking pool with a bound on concurrent hashes so that
//! logins never stall the async workers and a burst cannot exhaust memory.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const LANES: u32 = 1;

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a PHC string Keel can read.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hashing task did not finish (the runtime is shutting down).
    #[error("password hashing was interrupted")]
    Interrupted,
}

/// Hashes and verifies passwords off the async workers.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account is unknown so that
    /// unknown e-mails and wrong passwords take the same time.
    decoy: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` on the current thread (a PHC string with a fresh salt).
pub fn hash_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// Whether `password` matches the PHC string `hash`, on the current thread.
pub fn verify_blocking(password: &str, hash: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(hash).map_err(|_| PasswordError::MalformedHash)?;
    Ok(argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

impl Passwords {
    /// At most `concurrency` hashes at once (the number of cores is a good choice).
    pub fn new(concurrency: usize) -> Self {
        let decoy = hash_blocking(&uuid::Uuid::new_v4().to_string());
        Self { permits: Arc::new(Semaphore::new(concurrency.max(1))), decoy: decoy.into() }
    }

    /// At most one hash per core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map(usize::from).unwrap_or(2))
    }

    /// A new PHC hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_string();
        self.run(move || Ok(hash_blocking(&password))).await
    }

    /// Whether `password` matches `hash`; with `None` (no such account) it checks a decoy
    /// hash, takes the same time, and answers false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, PasswordError> {
        let (password, known) = (password.to_string(), hash.is_some());
        let hash = hash.map(str::to_string).unwrap_or_else(|| self.decoy.to_string());
        let matches = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Interrupted)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| PasswordError::Interrupted)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_the_owasp_parameters_and_salted() {
        let (a, b) = (hash_blocking("correct horse"), hash_blocking("correct horse"));
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(verify_blocking("correct horse", &a).unwrap());
        assert!(!verify_blocking("wrong horse", &a).unwrap());
        assert!(verify_blocking("x", "not a hash").is_err());
    }

    #[tokio::test]
    async fn unknown_accounts_check_the_decoy_and_fail() {
        let passwords = Passwords::new(1);
        let hash = passwords.hash("pw").await.unwrap();
        assert!(passwords.verify("pw", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("pw", None).await.unwrap());
    }
}
