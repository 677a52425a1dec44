//! The key-encryption key (KEK, ADR 0028): the root of Keel's key hierarchy, held
//! outside the database. Every secret Keel stores is wrapped under it with
//! AES-256-GCM, bound by associated data to its purpose and row, and stored with the
//! id of the KEK version that wrapped it.
//!
//! One trait, two providers: [`LocalKeyFile`] (a 32-byte key in a mode-600 file, for
//! development and tests) and [`Pkcs11Kek`] (an AES key that never leaves an HSM).
//! Both keep versions: rotation adds one and makes it current, unwrapping picks the
//! version by the stored key id, and a retired version is destroyed once nothing
//! names it (`wrapped_secrets`).

mod local_file;
mod pkcs11;

use std::sync::Arc;

pub use local_file::LocalKeyFile;
pub use pkcs11::{Pkcs11Config, Pkcs11Kek};

/// Bytes of the random nonce before every wrapped value (96 bits, GCM's native size).
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag after every wrapped value.
pub const TAG_LEN: usize = 16;
/// Longest key id a provider makes (the stored `kek_id`).
pub const MAX_KEY_ID_LEN: usize = 64;

/// A value wrapped under one version of the KEK.
#[derive(Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The KEK version that wrapped it.
    pub key_id: String,
    /// Nonce, ciphertext and tag.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wrapped").field("key_id", &self.key_id).field("len", &self.bytes.len()).finish()
    }
}

/// Why the KEK could not be used. Messages name files and settings, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// `KEEL_KEK` is not set: Keel keeps no secret without a KEK.
    #[error("no key-encryption key configured: set KEEL_KEK (file:/path or pkcs11:module=…;token=…;label=…)")]
    NotConfigured,
    /// `KEEL_KEK` is not in a known form.
    #[error("KEEL_KEK is not understood: {0}")]
    BadSetting(String),
    /// The key file could not be read or written.
    #[error("key-encryption key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The key file is readable or writable by others than its owner.
    #[error(
        "key-encryption key file {path} has mode {mode:o}: it must be 600 (owner read/write only); run chmod 600 {path}"
    )]
    LooseMode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly 32 bytes.
    #[error("key-encryption key file {0} must hold exactly 32 bytes")]
    BadLength(String),
    /// No version of the KEK has this id (destroyed, or never known here).
    #[error("key-encryption key version {0} is not available")]
    UnknownVersion(String),
    /// The current version cannot be destroyed.
    #[error("key-encryption key version {0} is current and cannot be destroyed")]
    DestroyCurrent(String),
    /// The wrapped value was altered, bound to other associated data, or wrapped by another key.
    #[error("a wrapped secret failed authentication (altered, misplaced or under another key)")]
    Unwrap,
    /// Encryption failed (should not happen with valid inputs).
    #[error("wrapping failed")]
    Wrap,
    /// The PKCS#11 module refused an operation.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
}

/// The key-encryption key, in versions. Implementations are cheap to call from async
/// code (a file read, or one HSM round trip).
pub trait KeyEncryptionKey: Send + Sync {
    /// The id of the version new values are wrapped under.
    fn current(&self) -> Result<String, KekError>;
    /// Wraps `plaintext` under the current version, bound to `aad`.
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Wrapped, KekError>;
    /// Unwraps `bytes` with version `key_id`; fails unless it was wrapped with that version and `aad`.
    fn unwrap(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError>;
    /// Makes a new version and makes it current; returns its id. Older versions still unwrap.
    fn rotate(&self) -> Result<String, KekError>;
    /// The ids of every version this provider still holds, the current one included.
    fn versions(&self) -> Result<Vec<String>, KekError>;
    /// Destroys version `key_id` for good (never the current one).
    fn destroy(&self, key_id: &str) -> Result<(), KekError>;
}

/// The KEK a process uses.
pub type Kek = Arc<dyn KeyEncryptionKey>;

/// Opens the KEK that `setting` names (`KEEL_KEK`), with `pin` (`KEEL_KEK_PIN`) for PKCS#11:
/// - `file:/path/to/kek`: a [`LocalKeyFile`];
/// - `pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=keel;label=keel-kek`: a [`Pkcs11Kek`].
pub fn open(setting: Option<&str>, pin: Option<&str>) -> Result<Kek, KekError> {
    let setting = setting.map(str::trim).filter(|s| !s.is_empty()).ok_or(KekError::NotConfigured)?;
    if let Some(path) = setting.strip_prefix("file:") {
        return Ok(Arc::new(LocalKeyFile::open(path)?));
    }
    if let Some(spec) = setting.strip_prefix("pkcs11:") {
        let config = Pkcs11Config::parse(spec, pin)?;
        return Ok(Arc::new(Pkcs11Kek::open(config)?));
    }
    Err(KekError::BadSetting("it must start with file: or pkcs11:".into()))
}

/// The stored form of a wrapped value: nonce ‖ ciphertext ‖ tag ([`split_nonce`] undoes it).
fn join_nonce(nonce: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(nonce.len() + sealed.len());
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(sealed);
    bytes
}

/// Splits `bytes` into nonce and sealed part, or fails as a bad unwrap.
fn split_nonce(bytes: &[u8]) -> Result<(&[u8], &[u8]), KekError> {
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(KekError::Unwrap);
    }
    Ok(bytes.split_at(NONCE_LEN))
}

/// A fresh random 256-bit key.
fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// A fresh random 96-bit nonce.
fn random_nonce() -> [u8; NONCE_LEN] {
    use rand::RngCore;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}
