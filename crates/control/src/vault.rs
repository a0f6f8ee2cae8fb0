//! Secrets at rest: every secret value the store keeps is sealed here with an AEAD
//! (ChaCha20-Poly1305 from `ring`) under a key that lives in the home, never in the store, so
//! the store file alone (a copy, a backup of it) reveals no secret.
//!
//! - The key: `<home>/secret.key`, 32 random bytes, mode 0600, made at the first start.
//! - A sealed value: `tv1` | the key's id (8 bytes of its SHA-256) | a random 96-bit nonce |
//!   the ciphertext and its tag. The value's name (for example `config/env:42/API_KEY`) is the
//!   associated data, so a sealed value moved to another name does not open.
//! - Rotation (`turnout secrets rotate-key`): the new key is written to `secret.key.new`
//!   first, every sealed value is re-sealed in one store transaction, then the new key
//!   replaces the old. A vault opened while both files exist knows both keys, so a crash at
//!   any point loses nothing; `settle` then keeps the one the store uses.
//!
//! Separately, `<home>/credential.key` (never rotated, so running instances keep working)
//! derives each environment's credentials for the daemon's own services (the mail catcher,
//! the egress proxy): `credential(env_id)`.
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use turnout_model::{AppName, EnvName};

use crate::error::ControlError;
use crate::home::Home;

const MAGIC: &[u8; 3] = b"tv1";
const KEY_LEN: usize = 32;
const ID_LEN: usize = 8;
const HEADER: usize = MAGIC.len() + ID_LEN + NONCE_LEN;

/// The id of a key: the first 8 bytes of its SHA-256, shown as hex.
pub type KeyId = [u8; ID_LEN];

/// The keys that seal and open secret values.
pub struct Vault {
    keys: HashMap<KeyId, LessSafeKey>,
    /// The key new values are sealed with.
    current: KeyId,
    /// A key written by a rotation that may not have finished (`secret.key.new`).
    pending: Option<KeyId>,
    rng: SystemRandom,
    key_file: PathBuf,
    credentials: Credentials,
}

/// Derives each environment's password for the daemon's own services; cheap to clone.
#[derive(Clone)]
pub struct Credentials(ring::hmac::Key);

impl Vault {
    /// Open the home's keys, making them on the first start (mode 0600).
    pub fn open(home: &Home) -> Result<Vault, ControlError> {
        let rng = SystemRandom::new();
        let key_file = home.root().join("secret.key");
        let current_bytes = read_or_make(&key_file, &rng)?;
        let mut keys = HashMap::new();
        let current = key_id(&current_bytes);
        keys.insert(current, aead_key(&current_bytes)?);
        let pending = match std::fs::read(pending_file(&key_file)) {
            Ok(bytes) if bytes.len() == KEY_LEN => {
                let id = key_id(&bytes);
                keys.insert(id, aead_key(&bytes)?);
                Some(id)
            }
            // Cut short while it was written: the rotation never reached the store.
            Ok(_) => {
                remove(&pending_file(&key_file))?;
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&pending_file(&key_file), e)),
        };
        let credential_bytes = read_or_make(&home.root().join("credential.key"), &rng)?;
        Ok(Vault {
            keys,
            current,
            pending,
            rng,
            key_file,
            credentials: Credentials(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &credential_bytes,
            )),
        })
    }

    /// Seal `plain` under the current key, bound to `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, ControlError> {
        self.seal_with(self.current, name, plain)
    }

    fn seal_with(&self, id: KeyId, name: &str, plain: &[u8]) -> Result<Vec<u8>, ControlError> {
        let key = self
            .keys
            .get(&id)
            .ok_or_else(|| ControlError::internal("sealing with a key the vault does not hold"))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ControlError::internal("no randomness for a nonce"))?;
        let mut sealed = Vec::with_capacity(HEADER + plain.len() + CHACHA20_POLY1305.tag_len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&id);
        sealed.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut body,
        )
        .map_err(|_| ControlError::internal("cannot seal a secret value"))?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Open a value sealed for `name` by any key this vault holds. The error names the value,
    /// never its content.
    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, ControlError> {
        let refused = |why: &str| {
            ControlError::internal(format!(
                "the secret value {name} cannot be opened: {why} (is this the home's own secret.key?)"
            ))
        };
        let id = sealed_key_id(sealed).ok_or_else(|| refused("it is not a sealed value"))?;
        let key = self
            .keys
            .get(&id)
            .ok_or_else(|| refused("it was sealed with another key"))?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[MAGIC.len() + ID_LEN..HEADER])
            .map_err(|_| refused("its nonce is cut short"))?;
        let mut body = sealed[HEADER..].to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .map_err(|_| refused("it does not authenticate"))?;
        Ok(plain.to_vec())
    }

    /// `open_value` as text (every secret Turnout keeps is text).
    pub fn open_text(&self, name: &str, sealed: &[u8]) -> Result<String, ControlError> {
        String::from_utf8(self.open_value(name, sealed)?).map_err(|_| {
            ControlError::internal(format!("the secret value {name} is not UTF-8 text"))
        })
    }

    /// The id of the key new values are sealed with (hex), for `secrets rotate-key`'s answer.
    pub fn current_id(&self) -> String {
        hex(&self.current)
    }

    /// The key id a sealed value names, if it is one.
    pub fn sealed_with(sealed: &[u8]) -> Option<String> {
        sealed_key_id(sealed).map(|id| hex(&id))
    }

    /// A rotation's first step: a new key, written to `secret.key.new` (fsynced) and held
    /// beside the current one. Then `reseal` every value in one store transaction, then
    /// `commit_rotation`.
    pub fn begin_rotation(&mut self) -> Result<String, ControlError> {
        let mut bytes = [0u8; KEY_LEN];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| ControlError::internal("no randomness for a new key"))?;
        write_key(&pending_file(&self.key_file), &bytes)?;
        let id = key_id(&bytes);
        self.keys.insert(id, aead_key(&bytes)?);
        self.pending = Some(id);
        Ok(hex(&id))
    }

    /// A value sealed by any held key, sealed again under the pending key of a rotation.
    pub fn reseal(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, ControlError> {
        let next = self
            .pending
            .ok_or_else(|| ControlError::internal("resealing without a rotation begun"))?;
        let plain = self.open_value(name, sealed)?;
        self.seal_with(next, name, &plain)
    }

    /// After the store committed the resealed values: the pending key becomes the key.
    pub fn commit_rotation(&mut self) -> Result<(), ControlError> {
        let Some(next) = self.pending.take() else {
            return Ok(());
        };
        let pending = pending_file(&self.key_file);
        std::fs::rename(&pending, &self.key_file).map_err(|e| io_error(&pending, e))?;
        sync_dir(&self.key_file)?;
        self.keys.retain(|id, _| *id == next);
        self.current = next;
        Ok(())
    }

    /// The store's transaction failed: forget the pending key.
    pub fn abort_rotation(&mut self) -> Result<(), ControlError> {
        if let Some(next) = self.pending.take() {
            self.keys.remove(&next);
            remove(&pending_file(&self.key_file))?;
        }
        Ok(())
    }

    /// At start-up, after a rotation was cut short: `store_uses_pending` says whether the store
    /// holds values sealed with the pending key (its transaction committed): then the rotation
    /// is finished, else undone.
    pub fn settle(&mut self, store_uses_pending: bool) -> Result<(), ControlError> {
        match store_uses_pending {
            true => self.commit_rotation(),
            false => self.abort_rotation(),
        }
    }

    /// The pending key's id (hex) while a rotation is unfinished.
    pub fn pending_id(&self) -> Option<String> {
        self.pending.map(|id| hex(&id))
    }

    /// What derives the environments' credentials (see `Credentials`).
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone()
    }
}

/// The user name environment `app/env` logs in to the daemon's own services with (mail
/// catcher, egress proxy): `APP.ENV` (names hold no '.'). `store::mail::directory` builds the
/// same in SQL.
pub fn service_user(app: &AppName, env: &EnvName) -> String {
    format!("{app}.{env}")
}

impl Credentials {
    /// The password of environment `env_id` for the daemon's own services (mail catcher,
    /// egress proxy): 32 hex characters, the same on every start, different per environment
    /// and per home.
    pub fn credential(&self, env_id: i64) -> String {
        let tag = ring::hmac::sign(
            &self.0,
            format!("turnout-env-credential:{env_id}").as_bytes(),
        );
        hex(&tag.as_ref()[..16])
    }

    /// A keyed digest of `data` (hex), to compare contents the store keeps sealed without
    /// keeping a plain hash a guess could be checked against. Stable across key rotations.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        let mut input = b"turnout-fingerprint:".to_vec();
        input.extend_from_slice(data);
        hex(ring::hmac::sign(&self.0, &input).as_ref())
    }

    /// Whether `password` is environment `env_id`'s credential (constant time).
    pub fn check_credential(&self, env_id: i64, password: &str) -> bool {
        let expected = self.credential(env_id);
        expected.len() == password.len()
            && expected
                .bytes()
                .zip(password.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.len() < HEADER || &sealed[..MAGIC.len()] != MAGIC {
        return None;
    }
    sealed[MAGIC.len()..MAGIC.len() + ID_LEN].try_into().ok()
}

fn pending_file(key_file: &Path) -> PathBuf {
    key_file.with_extension("key.new")
}

fn key_id(bytes: &[u8]) -> KeyId {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..ID_LEN]);
    id
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, ControlError> {
    let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map_err(|_| ControlError::internal("a key of the wrong length"))?;
    Ok(LessSafeKey::new(key))
}

/// The key in `path`, or a new one written there (0600) when there is none.
fn read_or_make(path: &Path, rng: &SystemRandom) -> Result<Vec<u8>, ControlError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == KEY_LEN => Ok(bytes),
        Ok(bytes) => Err(ControlError::internal(format!(
            "{} holds {} bytes, not a {KEY_LEN}-byte key; restore it from a backup of the home (without it the secrets it sealed cannot be read)",
            path.display(),
            bytes.len()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; KEY_LEN];
            rng.fill(&mut bytes)
                .map_err(|_| ControlError::internal("no randomness for a new key"))?;
            write_key(path, &bytes)?;
            Ok(bytes.to_vec())
        }
        Err(e) => Err(io_error(path, e)),
    }
}

/// Write a key file, mode 0600, fsynced with its directory; never over an existing file.
fn write_key(path: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    let _ = std::fs::remove_file(path.with_extension("partial"));
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| io_error(&partial, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| io_error(path, e))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), ControlError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn remove(path: &Path) -> Result<(), ControlError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ControlError {
    ControlError::internal(format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &Path) -> Vault {
        Vault::open(&Home::new(dir.to_path_buf())).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_under_its_own_name_only_and_never_shows_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let sealed = v.seal("config/env:1/API_KEY", b"sk_live_123").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"sk_live_123"));
        assert_eq!(
            v.open_text("config/env:1/API_KEY", &sealed).unwrap(),
            "sk_live_123"
        );
        let moved = v.open_value("config/env:2/API_KEY", &sealed).unwrap_err();
        assert!(
            moved.to_string().contains("config/env:2/API_KEY"),
            "{moved}"
        );
        assert!(!moved.to_string().contains("sk_live"), "{moved}");
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn the_key_survives_a_restart_and_a_rotation_cut_short_either_side_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = vault(dir.path()).seal("n", b"v").unwrap();
        // Cut short before the store committed: the old key stays.
        let mut v = vault(dir.path());
        v.begin_rotation().unwrap();
        let mut v = vault(dir.path());
        assert!(v.pending_id().is_some());
        v.settle(false).unwrap();
        assert_eq!(vault(dir.path()).open_text("n", &sealed).unwrap(), "v");
        // Cut short after the store committed: the new key takes over.
        let mut v = vault(dir.path());
        let next = v.begin_rotation().unwrap();
        let resealed = v.reseal("n", &sealed).unwrap();
        assert_eq!(Vault::sealed_with(&resealed), Some(next.clone()));
        let mut v = vault(dir.path());
        v.settle(true).unwrap();
        let v = vault(dir.path());
        assert_eq!(v.current_id(), next);
        assert_eq!(v.open_text("n", &resealed).unwrap(), "v");
        assert!(v.open_value("n", &sealed).is_err());
    }

    #[test]
    fn credentials_are_stable_per_home_and_differ_per_environment() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            vault(dir.path()).credentials(),
            vault(dir.path()).credentials(),
        );
        assert_eq!(a.credential(7), b.credential(7));
        assert_ne!(a.credential(7), a.credential(8));
        assert!(a.check_credential(7, &b.credential(7)));
        assert!(!a.check_credential(7, &a.credential(8)));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            vault(other.path()).credentials().credential(7),
            a.credential(7)
        );
    }
}
