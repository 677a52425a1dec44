//! Password hashing: argon2id with the OWASP parameters (19 MiB, 2 iterations,
//! 1 lane), on a fixed pool of hashing threads (one per core by default), so that
//! logins never stall the async workers, a burst only queues, and each thread
//! reuses its own 19 MiB of working memory instead of mapping fresh pages per hash.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const LANES: u32 = 1;
/// Length of the hash output.
const OUTPUT_LEN: usize = 32;

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a PHC string Keel can read.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hashing threads are gone (the process is shutting down).
    #[error("password hashing was interrupted")]
    Interrupted,
}

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords off the async workers.
#[derive(Debug, Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet taken by a hashing thread.
    queued: Arc<AtomicUsize>,
    /// A hash of a random password, verified against when the account is unknown so that
    /// unknown e-mails and wrong passwords take the same time.
    decoy: Arc<str>,
}

fn params() -> Params {
    Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(OUTPUT_LEN)).unwrap_or_default()
}

thread_local! {
    /// This thread's argon2 working memory, kept between hashes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 into `out`, in this thread's reused working memory.
fn compute(
    argon2: &Argon2<'_>,
    blocks: usize,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), PasswordError> {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
            .map_err(|_| PasswordError::MalformedHash)
    })
}

/// Hashes `password` on the current thread (a PHC string with a fresh salt).
pub fn hash_blocking(password: &str) -> String {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let mut out = [0u8; OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hashed = salt
        .decode_b64(&mut salt_bytes)
        .ok()
        .and_then(|raw| compute(&argon2, params.block_count(), password, raw, &mut out).ok())
        .and_then(|()| Output::new(&out).ok());
    let Some(output) = hashed else { return String::new() };
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().unwrap_or_default(),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    hash.to_string()
}

/// Whether `password` matches the PHC string `hash`, on the current thread.
pub fn verify_blocking(password: &str, hash: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(hash).map_err(|_| PasswordError::MalformedHash)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| PasswordError::MalformedHash)?;
    let version = parsed.version.map(Version::try_from).transpose().map_err(|_| PasswordError::MalformedHash)?;
    let expected = parsed.hash.ok_or(PasswordError::MalformedHash)?;
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::MalformedHash)?;
    let mut salt = [0u8; 64];
    let salt = parsed
        .salt
        .ok_or(PasswordError::MalformedHash)?
        .decode_b64(&mut salt)
        .map_err(|_| PasswordError::MalformedHash)?;
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    compute(&argon2, blocks, password, salt, &mut out)?;
    Ok(bool::from(out.ct_eq(expected.as_bytes())))
}

impl Passwords {
    /// A pool of `threads` hashing threads.
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("keel-argon2-{n}")).spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a hashing thread");
            }
        }
        let decoy = hash_blocking(&uuid::Uuid::new_v4().to_string());
        Self { jobs, queued: Arc::default(), decoy: decoy.into() }
    }

    /// One hashing thread per core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map(usize::from).unwrap_or(2))
    }

    /// Hashes and verifications waiting for a hashing thread.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
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
        let (tx, rx) = oneshot::channel();
        let queued = self.queued.clone();
        queued.fetch_add(1, Ordering::Relaxed);
        let job = Box::new(move || {
            queued.fetch_sub(1, Ordering::Relaxed);
            drop(tx.send(work()));
        });
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(PasswordError::Interrupted);
        }
        rx.await.map_err(|_| PasswordError::Interrupted)?
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
        assert_eq!(passwords.queue_depth(), 0, "every job was taken");
    }
}
