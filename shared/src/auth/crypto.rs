//! Encryption of cloud credentials at rest: AES-256-GCM with a random 96-bit nonce per message.
//!
//! The ciphertext is bound to its owner (team and account ids as associated data), so a credential blob
//! copied onto another account's document does not decrypt. Stored as `v1:<base64 nonce‖ciphertext>`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the encryption key must be 32 bytes, given as 64 hex characters or base64")]
    BadKey,
    #[error("the stored credentials cannot be decrypted (wrong key, or the data was altered)")]
    Decrypt,
}

#[derive(Clone)]
pub struct CredentialCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher(<redacted>)")
    }
}

impl CredentialCipher {
    /// The key as 64 hex characters or as base64 of 32 bytes.
    pub fn from_key_text(key: &SecretString) -> Result<Self, CryptoError> {
        let text = key.expose_secret().trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| CryptoError::BadKey)?
        } else {
            STANDARD.decode(text).map_err(|_| CryptoError::BadKey)?
        };
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher })
    }

    pub fn encrypt(&self, plaintext: &[u8], associated: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        // Encryption with a valid key and an in-memory buffer cannot fail.
        let ct =
            self.cipher.encrypt(&nonce, Payload { msg: plaintext, aad: associated.as_bytes() }).unwrap_or_default();
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ct);
        format!("{VERSION}{}", STANDARD.encode(blob))
    }

    pub fn decrypt(&self, stored: &str, associated: &str) -> Result<Vec<u8>, CryptoError> {
        let b64 = stored.strip_prefix(VERSION).ok_or(CryptoError::Decrypt)?;
        let blob = STANDARD.decode(b64).map_err(|_| CryptoError::Decrypt)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce_bytes: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(&Nonce::from(nonce_bytes), Payload { msg: ct, aad: associated.as_bytes() })
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> CredentialCipher {
        CredentialCipher::from_key_text(&SecretString::from("11".repeat(32))).expect("key")
    }

    #[test]
    fn credentials_round_trip_for_their_owner_only() {
        let c = cipher();
        let blob = c.encrypt(b"{\"secret_access_key\":\"s3cr3t\"}", "team_a/acc_1");
        assert!(!blob.contains("s3cr3t"));
        assert_eq!(c.decrypt(&blob, "team_a/acc_1").expect("decrypts"), b"{\"secret_access_key\":\"s3cr3t\"}");
        assert_eq!(c.decrypt(&blob, "team_b/acc_1"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let c = cipher();
        assert_ne!(c.encrypt(b"x", "a"), c.encrypt(b"x", "a"));
    }

    #[test]
    fn a_wrong_key_or_altered_blob_fails_cleanly() {
        let blob = cipher().encrypt(b"x", "a");
        let other = CredentialCipher::from_key_text(&SecretString::from("22".repeat(32))).expect("key");
        assert_eq!(other.decrypt(&blob, "a"), Err(CryptoError::Decrypt));
        assert_eq!(cipher().decrypt("v1:AAAA", "a"), Err(CryptoError::Decrypt));
        assert_eq!(cipher().decrypt("garbage", "a"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(CredentialCipher::from_key_text(&SecretString::from("abcd".to_string())).is_err());
        let b64 = STANDARD.encode([7u8; 32]);
        assert!(CredentialCipher::from_key_text(&SecretString::from(b64)).is_ok());
    }
}
