//! The KEK inside a PKCS#11 token (an HSM; SoftHSM2 in tests). Each version is an
//! AES-256 secret key object (sensitive, never extractable) with the configured label
//! and an 8-byte `CKA_ID`: its creation time in milliseconds, so the newest version is
//! the current one. Wrapping is `CKM_AES_GCM` inside the token with a random 96-bit IV
//! chosen here; destroying a version destroys its object.

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::{KekError, KeyEncryptionKey, TAG_LEN, Wrapped, join_nonce, random_nonce, split_nonce};

/// What a version's id starts with.
const ID_PREFIX: &str = "hsm-";
/// Longest value of each `KEEL_KEK` part.
const MAX_PART_LEN: usize = 256;

/// Where the KEK lives in a PKCS#11 token.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library).
    pub module: String,
    /// The token's label.
    pub token: String,
    /// The label of the KEK's key objects.
    pub label: String,
    /// The user PIN.
    pub pin: String,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Config {
    /// Parses `module=…;token=…;label=…` (what follows `pkcs11:` in `KEEL_KEK`) with the PIN.
    pub fn parse(spec: &str, pin: Option<&str>) -> Result<Self, KekError> {
        let (mut module, mut token, mut label) = (None, None, None);
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| KekError::BadSetting(format!("{part:?} is not name=value")))?;
            if value.is_empty() || value.len() > MAX_PART_LEN {
                return Err(KekError::BadSetting(format!("{name} must have 1 to {MAX_PART_LEN} characters")));
            }
            let slot = match name {
                "module" => &mut module,
                "token" => &mut token,
                "label" => &mut label,
                other => return Err(KekError::BadSetting(format!("unknown part {other:?}"))),
            };
            *slot = Some(value.to_string());
        }
        let missing = |what: &str| KekError::BadSetting(format!("pkcs11: needs {what}="));
        Ok(Self {
            module: module.ok_or_else(|| missing("module"))?,
            token: token.ok_or_else(|| missing("token"))?,
            label: label.unwrap_or_else(|| "keel-kek".into()),
            pin: pin.filter(|p| !p.is_empty()).ok_or(KekError::BadSetting("KEEL_KEK_PIN is not set".into()))?.into(),
        })
    }
}

/// A KEK held by a PKCS#11 token.
pub struct Pkcs11Kek {
    label: String,
    session: Mutex<Session>,
    /// Kept alive for the session (finalises the module when dropped).
    _context: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kek").field("label", &self.label).finish_non_exhaustive()
    }
}

fn hsm(err: cryptoki::error::Error) -> KekError {
    KekError::Pkcs11(err.to_string())
}

impl Pkcs11Kek {
    /// Loads the module, logs in to the token and creates the first version if the
    /// token holds none (key generation inside the token).
    pub fn open(config: Pkcs11Config) -> Result<Self, KekError> {
        let context = Pkcs11::new(&config.module).map_err(hsm)?;
        context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(hsm)?;
        let slot = context
            .get_slots_with_initialized_token()
            .map_err(hsm)?
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|info| info.label().trim() == config.token))
            .ok_or_else(|| KekError::Pkcs11(format!("no initialized token labelled {:?}", config.token)))?;
        let session = context.open_rw_session(slot).map_err(hsm)?;
        session.login(UserType::User, Some(&AuthPin::from(config.pin.as_str()))).map_err(hsm)?;
        let kek = Self { label: config.label, session: Mutex::new(session), _context: context };
        if kek.objects()?.is_empty() {
            kek.rotate()?;
        }
        Ok(kek)
    }

    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>, KekError> {
        self.session.lock().map_err(|_| KekError::Pkcs11("session lock poisoned".into()))
    }

    /// Every version: (id bytes, handle), oldest first.
    fn objects(&self) -> Result<Vec<(Vec<u8>, ObjectHandle)>, KekError> {
        let session = self.session()?;
        let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(self.label.as_bytes().to_vec())];
        let mut versions = Vec::new();
        for handle in session.find_objects(&template).map_err(hsm)? {
            let attributes = session.get_attributes(handle, &[AttributeType::Id]).map_err(hsm)?;
            if let Some(Attribute::Id(id)) = attributes.into_iter().next() {
                versions.push((id, handle));
            }
        }
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(versions)
    }

    fn current_object(&self) -> Result<(String, ObjectHandle), KekError> {
        let (id, handle) = self.objects()?.pop().ok_or_else(|| KekError::UnknownVersion("(none)".into()))?;
        Ok((key_id(&id), handle))
    }

    fn object(&self, key_id: &str) -> Result<ObjectHandle, KekError> {
        self.objects()?
            .into_iter()
            .find(|(id, _)| self::key_id(id) == key_id)
            .map(|(_, handle)| handle)
            .ok_or_else(|| KekError::UnknownVersion(key_id.to_string()))
    }
}

fn key_id(id: &[u8]) -> String {
    format!("{ID_PREFIX}{}", hex::encode(id))
}

impl KeyEncryptionKey for Pkcs11Kek {
    fn current(&self) -> Result<String, KekError> {
        Ok(self.current_object()?.0)
    }

    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Wrapped, KekError> {
        let (key_id, handle) = self.current_object()?;
        let mut nonce = random_nonce();
        let params = GcmParams::new(&mut nonce, aad, ((TAG_LEN * 8) as u64).into()).map_err(hsm)?;
        let sealed = self.session()?.encrypt(&Mechanism::AesGcm(params), handle, plaintext).map_err(hsm)?;
        Ok(Wrapped { key_id, bytes: join_nonce(&nonce, &sealed) })
    }

    fn unwrap(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let (nonce, sealed) = split_nonce(bytes)?;
        let handle = self.object(key_id)?;
        let mut nonce = nonce.to_vec();
        let params = GcmParams::new(&mut nonce, aad, ((TAG_LEN * 8) as u64).into()).map_err(hsm)?;
        self.session()?.decrypt(&Mechanism::AesGcm(params), handle, sealed).map_err(|_| KekError::Unwrap)
    }

    fn rotate(&self) -> Result<String, KekError> {
        let newest = self.objects()?.pop().map(|(id, _)| id);
        let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        // Strictly after the newest version, even within one millisecond.
        let next = newest
            .and_then(|id| <[u8; 8]>::try_from(id.as_slice()).ok())
            .map(|id| u64::from_be_bytes(id).saturating_add(1))
            .map_or(millis, |after| after.max(millis));
        let id = next.to_be_bytes().to_vec();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(self.label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        self.session()?.generate_key(&Mechanism::AesKeyGen, &template).map_err(hsm)?;
        Ok(key_id(&id))
    }

    fn versions(&self) -> Result<Vec<String>, KekError> {
        Ok(self.objects()?.iter().map(|(id, _)| key_id(id)).collect())
    }

    fn destroy(&self, key_id: &str) -> Result<(), KekError> {
        if self.current()? == key_id {
            return Err(KekError::DestroyCurrent(key_id.to_string()));
        }
        let handle = self.object(key_id)?;
        self.session()?.destroy_object(handle).map_err(hsm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_what_is_missing() {
        let config = Pkcs11Config::parse("module=/lib/x.so;token=keel;label=k", Some("1234")).unwrap();
        assert_eq!((config.module.as_str(), config.token.as_str(), config.label.as_str()), ("/lib/x.so", "keel", "k"));
        assert!(!format!("{config:?}").contains("1234"));
        assert!(Pkcs11Config::parse("module=/lib/x.so;token=keel", None).is_err());
        assert!(Pkcs11Config::parse("token=keel", Some("1")).is_err());
        assert!(Pkcs11Config::parse("module=/x;token=t;colour=red", Some("1")).is_err());
    }
}
