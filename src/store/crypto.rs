//! AES-256-GCM for secrets at rest. Owns the master key (loading, creating
//! the key file with owner-only permissions) and the stored ciphertext format
//! `v1:<base64(nonce ‖ ciphertext+tag)>`. The associated data binds every
//! ciphertext to the place it belongs (tenant id + field name), so a value
//! copied to another tenant or another column fails to decrypt instead of
//! leaking. This module must never log, print or put a key or plaintext into
//! an error message.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

/// Version tag of the stored format, so the scheme can change without a
/// flag day: a `v2:` reader can still read `v1:` rows.
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    Key(String),
    #[error("ciphertext does not decrypt under this master key (wrong key, or data moved between tenants)")]
    Decrypt,
}

/// The master-key cipher. Cheap to clone; `Debug` never shows the key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher { key: [REDACTED] }")
    }
}

impl Cipher {
    /// A cipher from a base64 (standard alphabet) 32-byte key.
    pub fn from_base64(key: &SecretString) -> Result<Cipher, CryptoError> {
        let bytes = B64.decode(key.expose_secret().trim()).map_err(|_| CryptoError::Key("not valid base64".into()))?;
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Key(format!("must be {KEY_LEN} bytes, found {}", bytes.len())));
        }
        let aead = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::Key("rejected by AES-256".into()))?;
        Ok(Cipher { aead })
    }

    /// Reads the base64 key file at `path`; when absent, creates it (and its
    /// folder) holding a fresh random key, readable by the owner only.
    pub fn load_or_create(path: &Path) -> Result<Cipher, CryptoError> {
        let io = |what: &str, e: std::io::Error| CryptoError::Key(format!("{what} {}: {e}", path.display()));
        match std::fs::read_to_string(path) {
            Ok(text) => return Cipher::from_base64(&SecretString::from(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read key file", e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("cannot create the folder of key file", e))?;
        }
        let key = Cipher::generate_key_base64();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(key.expose_secret().as_bytes())
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io("cannot write key file", e))?;
                Cipher::from_base64(&key)
            }
            // Another process created it between our read and our create:
            // theirs wins, so both end up with the same key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| io("cannot read key file", e))?;
                Cipher::from_base64(&SecretString::from(text))
            }
            Err(e) => Err(io("cannot create key file", e)),
        }
    }

    /// A fresh random 32-byte key, base64 encoded.
    pub fn generate_key_base64() -> SecretString {
        let key = Aes256Gcm::generate_key(OsRng);
        SecretString::from(B64.encode(key.as_slice()))
    }

    /// Encrypts under a fresh random nonce; `aad` names where the value lives.
    pub fn encrypt(&self, plaintext: &str, aad: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Decrypts a value produced by [`Cipher::encrypt`] with the same `aad`.
    /// Any malformed, tampered, moved or foreign-key value is `Decrypt`.
    pub fn decrypt(&self, stored: &str, aad: &str) -> Result<SecretString, CryptoError> {
        let body = stored.strip_prefix(PREFIX).ok_or(CryptoError::Decrypt)?;
        let bytes = B64.decode(body).map_err(|_| CryptoError::Decrypt)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()
    }

    #[test]
    fn round_trips_with_the_same_aad() {
        let c = cipher();
        let stored = c.encrypt("s3cret", "acme:client_secret");
        assert!(stored.starts_with("v1:"));
        assert!(!stored.contains("s3cret"));
        assert_eq!(c.decrypt(&stored, "acme:client_secret").unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn same_plaintext_encrypts_differently_each_time() {
        let c = cipher();
        assert_ne!(c.encrypt("x", "a"), c.encrypt("x", "a"));
    }

    #[test]
    fn value_moved_to_another_tenant_or_field_does_not_decrypt() {
        let c = cipher();
        let stored = c.encrypt("s3cret", "acme:client_secret");
        assert!(matches!(c.decrypt(&stored, "other:client_secret"), Err(CryptoError::Decrypt)));
        assert!(matches!(c.decrypt(&stored, "acme:hellohq_token"), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn another_key_does_not_decrypt() {
        let stored = cipher().encrypt("s3cret", "a");
        assert!(matches!(cipher().decrypt(&stored, "a"), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn tampered_or_malformed_values_are_refused() {
        let c = cipher();
        let stored = c.encrypt("s3cret", "a");
        let mut bytes = B64.decode(&stored[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1:{}", B64.encode(bytes));
        for bad in [tampered.as_str(), "v1:", "v1:!!!", "v2:abc", "plain", &stored[3..]] {
            assert!(matches!(c.decrypt(bad, "a"), Err(CryptoError::Decrypt)), "{bad}");
        }
    }

    #[test]
    fn key_must_be_32_bytes_of_base64() {
        assert!(Cipher::from_base64(&SecretString::from(B64.encode([0u8; 16]))).is_err());
        assert!(Cipher::from_base64(&SecretString::from("not base64 at all!")).is_err());
        assert!(Cipher::from_base64(&SecretString::from(format!(" {}\n", B64.encode([7u8; 32])))).is_ok());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = SecretString::from(B64.encode([0xAB; 32]));
        let shown = format!("{:?}", Cipher::from_base64(&key).unwrap());
        assert!(!shown.contains(key.expose_secret()));
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn key_file_is_created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state/master.key");
        let first = Cipher::load_or_create(&path).unwrap();
        let second = Cipher::load_or_create(&path).unwrap();
        let stored = first.encrypt("s3cret", "a");
        assert_eq!(second.decrypt(&stored, "a").unwrap().expose_secret(), "s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(Cipher::load_or_create(&path), Err(CryptoError::Key(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short");
    }
}
