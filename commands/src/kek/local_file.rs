//! The KEK as a local key file (development and tests): 32 random bytes in a file
//! outside the database that only its owner may read (mode 600, checked on every
//! read). The configured path holds the current version; rotation keeps the previous
//! one beside it as `<path>.<key id>` until it is destroyed (the file deleted).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

use super::{KekError, KeyEncryptionKey, Wrapped, join_nonce, random_key, random_nonce, split_nonce};

/// What a version's id starts with.
const ID_PREFIX: &str = "file-";

/// A KEK in a local file.
pub struct LocalKeyFile {
    path: PathBuf,
    /// Versions read so far, by id.
    loaded: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalKeyFile {
    /// Opens the key file at `path`; refuses a missing file, one of another length than
    /// 32 bytes, or one whose mode lets anyone but its owner in.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KekError> {
        let kek = Self { path: path.as_ref().to_path_buf(), loaded: Mutex::new(HashMap::new()) };
        kek.read_current()?;
        Ok(kek)
    }

    /// Writes a new random key file at `path` (mode 600); fails if it exists.
    pub fn create(path: impl AsRef<Path>) -> Result<(), KekError> {
        write_new(path.as_ref(), &random_key())
    }

    fn retired_path(&self, key_id: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{key_id}"));
        PathBuf::from(name)
    }

    fn read_current(&self) -> Result<(String, [u8; 32]), KekError> {
        let key = read_key(&self.path)?;
        let id = key_id(&key);
        self.loaded.lock().map_err(|_| KekError::Wrap)?.insert(id.clone(), key);
        Ok((id, key))
    }

    fn key(&self, key_id: &str) -> Result<[u8; 32], KekError> {
        if let Some(key) = self.loaded.lock().map_err(|_| KekError::Unwrap)?.get(key_id) {
            return Ok(*key);
        }
        let (current, key) = self.read_current()?;
        if current == key_id {
            return Ok(key);
        }
        if !is_key_id(key_id) {
            return Err(KekError::UnknownVersion(key_id.to_string()));
        }
        let path = self.retired_path(key_id);
        if !path.exists() {
            return Err(KekError::UnknownVersion(key_id.to_string()));
        }
        let key = read_key(&path)?;
        if self::key_id(&key) != key_id {
            return Err(KekError::UnknownVersion(key_id.to_string()));
        }
        self.loaded.lock().map_err(|_| KekError::Unwrap)?.insert(key_id.to_string(), key);
        Ok(key)
    }
}

impl KeyEncryptionKey for LocalKeyFile {
    fn current(&self) -> Result<String, KekError> {
        Ok(self.read_current()?.0)
    }

    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Wrapped, KekError> {
        let (key_id, key) = self.read_current()?;
        let nonce = random_nonce();
        let sealed = cipher(&key)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| KekError::Wrap)?;
        Ok(Wrapped { key_id, bytes: join_nonce(&nonce, &sealed) })
    }

    fn unwrap(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let (nonce, sealed) = split_nonce(bytes)?;
        let key = self.key(key_id)?;
        cipher(&key).decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad }).map_err(|_| KekError::Unwrap)
    }

    fn rotate(&self) -> Result<String, KekError> {
        let (old_id, old) = self.read_current()?;
        let retired = self.retired_path(&old_id);
        if !retired.exists() {
            write_new(&retired, &old)?;
        }
        let next = self.retired_path("next");
        let _ = std::fs::remove_file(&next);
        let key = random_key();
        write_new(&next, &key)?;
        std::fs::rename(&next, &self.path).map_err(|e| file_error(&self.path, e))?;
        let id = key_id(&key);
        self.loaded.lock().map_err(|_| KekError::Wrap)?.insert(id.clone(), key);
        Ok(id)
    }

    fn versions(&self) -> Result<Vec<String>, KekError> {
        let mut versions = vec![self.current()?];
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let prefix = format!("{}.", self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default());
        for entry in std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?.flatten() {
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_prefix(&prefix))
                && is_key_id(id)
                && !versions.iter().any(|v| v == id)
            {
                versions.push(id.to_string());
            }
        }
        Ok(versions)
    }

    fn destroy(&self, key_id: &str) -> Result<(), KekError> {
        if self.current()? == key_id {
            return Err(KekError::DestroyCurrent(key_id.to_string()));
        }
        if !is_key_id(key_id) {
            return Err(KekError::UnknownVersion(key_id.to_string()));
        }
        let path = self.retired_path(key_id);
        // Overwrite before unlinking (a best effort: the file system may keep old blocks).
        if let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = file.write_all(&[0u8; 32]).and_then(|()| file.sync_all());
        }
        std::fs::remove_file(&path).map_err(|e| file_error(&path, e))?;
        self.loaded.lock().map_err(|_| KekError::Wrap)?.remove(key_id);
        Ok(())
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// A version's id: a fingerprint of the key (names it without revealing it).
fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new().chain_update(b"keel-kek-id\0").chain_update(key).finalize();
    format!("{ID_PREFIX}{}", hex::encode(&digest[..8]))
}

fn is_key_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX).is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn file_error(path: &Path, source: std::io::Error) -> KekError {
    KekError::File { path: path.display().to_string(), source }
}

/// Reads a key file, refusing loose modes and wrong lengths.
fn read_key(path: &Path) -> Result<[u8; 32], KekError> {
    let meta = std::fs::metadata(path).map_err(|e| file_error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekError::LooseMode { path: path.display().to_string(), mode });
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    bytes.try_into().map_err(|_| KekError::BadLength(path.display().to_string()))
}

/// Writes `key` to a new file at `path`, mode 600, synced.
fn write_new(path: &Path, key: &[u8; 32]) -> Result<(), KekError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(key).and_then(|()| file.sync_all()).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::NONCE_LEN;

    fn temp_kek() -> (PathBuf, LocalKeyFile) {
        let dir = std::env::temp_dir().join(format!("keel-kek-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        LocalKeyFile::create(&path).unwrap();
        (dir, LocalKeyFile::open(&path).unwrap())
    }

    #[test]
    fn wraps_and_unwraps_bound_to_its_associated_data() {
        let (dir, kek) = temp_kek();
        let wrapped = kek.wrap(b"the secret", b"server_secret:x").unwrap();
        assert!(!wrapped.bytes.windows(10).any(|w| w == b"the secret"));
        assert_eq!(kek.unwrap(&wrapped.key_id, &wrapped.bytes, b"server_secret:x").unwrap(), b"the secret");
        assert!(matches!(kek.unwrap(&wrapped.key_id, &wrapped.bytes, b"server_secret:y"), Err(KekError::Unwrap)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tampered_ciphertext_fails_to_unwrap() {
        let (dir, kek) = temp_kek();
        let wrapped = kek.wrap(b"the secret", b"aad").unwrap();
        for i in [0, NONCE_LEN, wrapped.bytes.len() - 1] {
            let mut tampered = wrapped.bytes.clone();
            tampered[i] ^= 1;
            assert!(matches!(kek.unwrap(&wrapped.key_id, &tampered, b"aad"), Err(KekError::Unwrap)), "byte {i}");
        }
        assert!(matches!(kek.unwrap(&wrapped.key_id, &wrapped.bytes[..20], b"aad"), Err(KekError::Unwrap)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_keeps_the_old_version_until_it_is_destroyed() {
        let (dir, kek) = temp_kek();
        let old = kek.wrap(b"v1", b"a").unwrap();
        let new_id = kek.rotate().unwrap();
        assert_ne!(new_id, old.key_id);
        assert_eq!(kek.current().unwrap(), new_id);
        assert_eq!(kek.wrap(b"v2", b"a").unwrap().key_id, new_id);
        assert_eq!(kek.unwrap(&old.key_id, &old.bytes, b"a").unwrap(), b"v1");
        let mut versions = kek.versions().unwrap();
        versions.sort();
        let mut expected = vec![old.key_id.clone(), new_id.clone()];
        expected.sort();
        assert_eq!(versions, expected);
        assert!(matches!(kek.destroy(&new_id), Err(KekError::DestroyCurrent(_))));
        kek.destroy(&old.key_id).unwrap();
        assert_eq!(kek.versions().unwrap(), vec![new_id]);
        // A fresh process (no cache) cannot unwrap under the destroyed version.
        let reopened = LocalKeyFile::open(dir.join("kek")).unwrap();
        assert!(matches!(reopened.unwrap(&old.key_id, &old.bytes, b"a"), Err(KekError::UnknownVersion(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_others_may_read_is_refused() {
        let (dir, _) = temp_kek();
        let path = dir.join("kek");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyFile::open(&path).unwrap_err();
        assert!(matches!(err, KekError::LooseMode { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("must be 600"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
