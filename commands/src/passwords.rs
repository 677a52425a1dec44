//! Password hashing: argon2id with the OWASP parameters (19 MiB, 2 iterations,
//! 1 lane), on a fixed pool of hashing threads (one per core by default), so that
//! logins never stall the async workers, a burst only queues, and each thread
//! reuses its own 19 MiB of working memory instead of mapping fresh pages per hash.
//! The queue is bounded: past its capacity a hash is refused at once with a retry
//! delay ([`PasswordError::Busy`]) instead of waiting behind a flood.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The queue is full: too many sign-ins at once; retry after `retry_after` seconds.
    #[error("too many password checks at once; retry in {retry_after} s")]
    Busy {
        /// Seconds until the queue has likely drained.
        retry_after: u32,
    },
}

/// How many seconds of hashing the queue holds by default.
pub const DEFAULT_QUEUE_SECONDS: u64 = 3;

/// The hashing queue at one moment (for metrics): jobs admitted and not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingQueue {
    /// Jobs waiting for or running on a hashing thread.
    pub depth: usize,
    /// The most jobs admitted at once; more are refused with [`PasswordError::Busy`].
    pub capacity: usize,
    /// Hashing threads.
    pub threads: usize,
    /// Jobs refused because the queue was full, since start.
    pub refused: u64,
}

/// The queue's shared counters.
#[derive(Debug)]
struct Queue {
    depth: AtomicUsize,
    refused: std::sync::atomic::AtomicU64,
    capacity: usize,
    threads: usize,
    /// How long one hash takes here (measured at start).
    per_hash: Duration,
}

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords off the async workers.
#[derive(Debug, Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
    queue: Arc<Queue>,
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
    /// A pool of `threads` hashing threads whose queue holds [`DEFAULT_QUEUE_SECONDS`] of work.
    pub fn new(threads: usize) -> Self {
        Self::with_capacity(threads, None)
    }

    /// A pool of `threads` hashing threads admitting at most `capacity` jobs at once
    /// (waiting or running); `None`: as many as they finish in [`DEFAULT_QUEUE_SECONDS`].
    pub fn with_capacity(threads: usize, capacity: Option<usize>) -> Self {
        let threads = threads.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("keel-argon2-{n}")).spawn(move || {
                loop {
                    let job = match receiver.lock() {
                        Ok(receiver) => receiver.recv(),
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
        let started = Instant::now();
        let decoy = hash_blocking(&uuid::Uuid::new_v4().to_string());
        let per_hash = started.elapsed().max(Duration::from_millis(1));
        let capacity = capacity.unwrap_or_else(|| {
            let per_thread = Duration::from_secs(DEFAULT_QUEUE_SECONDS).as_nanos() / per_hash.as_nanos();
            threads * (per_thread as usize).max(1)
        });
        tracing::info!(threads, capacity, per_hash_ms = per_hash.as_millis() as u64, "password hashing ready");
        let queue = Queue { depth: AtomicUsize::new(0), refused: Default::default(), capacity, threads, per_hash };
        Self { jobs, queue: Arc::new(queue), decoy: decoy.into() }
    }

    /// One hashing thread per core.
    pub fn per_core() -> Self {
        Self::with_capacity(cores(), None)
    }

    /// The queue now: its depth, capacity and refusals.
    pub fn queue(&self) -> HashingQueue {
        HashingQueue {
            depth: self.queue.depth.load(Ordering::Relaxed),
            capacity: self.queue.capacity,
            threads: self.queue.threads,
            refused: self.queue.refused.load(Ordering::Relaxed),
        }
    }

    /// Hashes and verifications admitted and not yet done (waiting or running).
    pub fn queue_depth(&self) -> usize {
        self.queue().depth
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
        let queue = &self.queue;
        let ahead = queue.depth.fetch_add(1, Ordering::AcqRel);
        if ahead >= queue.capacity {
            queue.depth.fetch_sub(1, Ordering::AcqRel);
            queue.refused.fetch_add(1, Ordering::Relaxed);
            let drain = queue.per_hash.as_secs_f64() * ahead as f64 / queue.threads as f64;
            return Err(PasswordError::Busy { retry_after: drain.ceil().clamp(1.0, 30.0) as u32 });
        }
        // Leaves the queue when done, run or not (a dropped job also counts out).
        let admitted = Admitted(self.queue.clone());
        let (tx, rx) = oneshot::channel();
        let job = move || {
            let result = work();
            drop(admitted);
            drop(tx.send(result));
        };
        self.jobs.send(Box::new(job)).map_err(|_| PasswordError::Interrupted)?;
        rx.await.map_err(|_| PasswordError::Interrupted)?
    }
}

/// One admitted job's place in the queue, given back when dropped.
struct Admitted(Arc<Queue>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The machine's cores (2 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(2)
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

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_with_a_retry_delay_and_drains() {
        let passwords = Passwords::with_capacity(1, Some(2));
        let (release, wait) = mpsc::channel::<()>();
        let holder = passwords.clone();
        let running = tokio::spawn(async move {
            holder
                .run(move || {
                    wait.recv().ok();
                    Ok(())
                })
                .await
        });
        let queued = passwords.clone();
        let waiting = tokio::spawn(async move { queued.hash("pw").await });
        let admitted = async {
            while passwords.queue().depth < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), admitted).await.expect("both jobs admitted");
        let refused = passwords.verify("pw", None).await;
        assert!(matches!(refused, Err(PasswordError::Busy { retry_after: 1.. })), "{refused:?}");
        assert_eq!(passwords.queue(), HashingQueue { depth: 2, capacity: 2, threads: 1, refused: 1 });
        release.send(()).unwrap();
        running.await.unwrap().unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(passwords.queue().depth, 0);
        assert!(!passwords.verify("pw", None).await.unwrap(), "admitted again once drained");
    }
}
