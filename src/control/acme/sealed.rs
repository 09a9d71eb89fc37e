//! Private keys at rest: with `acme.storageEncryptionKey` (or `PYLON_STORAGE_KEY`) set, private
//! keys and account credentials are sealed with AES-256-GCM before they reach the store, as
//! `pylon-sealed:v1:<key id>:<base64(nonce || ciphertext)>`, bound to the KV key they are stored
//! at. Several keys may be given (`id1:KEY1,id2:KEY2`): the first seals, all open, so keys can
//! rotate. Without keys, values are stored as they are.

use base64::{engine::general_purpose::STANDARD, Engine};
use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    rand::{SecureRandom, SystemRandom},
};

const PREFIX: &str = "pylon-sealed:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("storage encryption key {0:?}: expected ID:BASE64 with 32 bytes of key")]
    BadKey(String),
    #[error("sealed with key id {0:?}, which this replica does not have (set it in acme.storageEncryptionKey or PYLON_STORAGE_KEY)")]
    UnknownKey(String),
    #[error(
        "sealed, but this replica has no storage encryption key (set acme.storageEncryptionKey or PYLON_STORAGE_KEY)"
    )]
    NoKey,
    #[error("cannot be opened with key {0:?}: wrong key or tampered value")]
    Tampered(String),
    #[error("malformed sealed value")]
    Malformed,
}

/// The storage keys of this replica; empty means values are stored in the clear.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(id, _)| id)).finish()
    }
}

impl Keyring {
    /// Parses `id:BASE64[,id:BASE64...]`.
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let mut keys = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || SealError::BadKey(entry.split(':').next().unwrap_or_default().to_string());
            let (id, material) = entry.split_once(':').ok_or_else(bad)?;
            let bytes = STANDARD.decode(material.trim()).map_err(|_| bad())?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad())?;
            if id.is_empty() || id.contains(':') {
                return Err(bad());
            }
            keys.push((id.to_string(), LessSafeKey::new(key)));
        }
        Ok(Keyring { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `plain` for storage at `kv_key` with the first key; unchanged without keys.
    pub fn seal(&self, kv_key: &str, plain: &str) -> String {
        let Some((id, key)) = self.keys.first() else { return plain.to_string() };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random source works");
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kv_key.as_bytes()), &mut data)
            .expect("AES-GCM seals any length Pylon stores");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        format!("{PREFIX}{id}:{}", STANDARD.encode(blob))
    }

    /// Opens a value read from `kv_key`; values that are not sealed pass through.
    pub fn open(&self, kv_key: &str, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_string()) };
        let (id, blob) = rest.split_once(':').ok_or(SealError::Malformed)?;
        if self.keys.is_empty() {
            return Err(SealError::NoKey);
        }
        let (_, key) = self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let blob = STANDARD.decode(blob).map_err(|_| SealError::Malformed)?;
        if blob.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut data = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(kv_key.as_bytes()), &mut data)
            .map_err(|_| SealError::Tampered(id.to_string()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    }
}

/// Whether a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn sealed_values_open_with_the_right_key_only_at_their_own_kv_key() {
        let ring = Keyring::parse(&key("k1", 7)).unwrap();
        let sealed = ring.seal("traefik/acme/certs/a.example", "-----BEGIN PRIVATE KEY-----");
        assert!(is_sealed(&sealed) && !sealed.contains("PRIVATE KEY"));
        assert_eq!(ring.open("traefik/acme/certs/a.example", &sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        assert_eq!(ring.open("traefik/acme/certs/b.example", &sealed), Err(SealError::Tampered("k1".into())));

        let other = Keyring::parse(&key("k2", 9)).unwrap();
        assert_eq!(other.open("traefik/acme/certs/a.example", &sealed), Err(SealError::UnknownKey("k1".into())));
        let wrong = Keyring::parse(&key("k1", 8)).unwrap();
        assert_eq!(wrong.open("traefik/acme/certs/a.example", &sealed), Err(SealError::Tampered("k1".into())));
        assert_eq!(Keyring::default().open("x", &sealed), Err(SealError::NoKey));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = Keyring::parse(&key("old", 1)).unwrap();
        let sealed_before = old.seal("k", "secret");
        let rotated = Keyring::parse(&format!("{},{}", key("new", 2), key("old", 1))).unwrap();
        assert_eq!(rotated.open("k", &sealed_before).unwrap(), "secret");
        assert!(rotated.seal("k", "secret").starts_with("pylon-sealed:v1:new:"));
    }

    #[test]
    fn without_keys_values_pass_through_and_bad_keys_are_named() {
        assert_eq!(Keyring::default().seal("k", "plain"), "plain");
        assert_eq!(Keyring::default().open("k", "plain").unwrap(), "plain");
        assert_eq!(Keyring::parse("k1:c2hvcnQ=").unwrap_err(), SealError::BadKey("k1".into()));
        assert_eq!(Keyring::parse("nocolon").unwrap_err(), SealError::BadKey("nocolon".into()));
    }
}
