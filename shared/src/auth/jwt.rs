//! Bearer tokens: compact JWS with HMAC-SHA256, the one algorithm this service issues and accepts.
//!
//! The header is compared byte for byte with the only header we issue, so a token that names another
//! algorithm (`none`, RS256 with the key as a public key, ...) is refused before any signature check.
//! Signatures are compared in constant time; `exp` is mandatory and enforced.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::{SessionId, UserId};

type HmacSha256 = Hmac<Sha256>;

/// `{"alg":"HS256","typ":"JWT"}`, the only header we issue and accept.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token says about its bearer: who, and in which session. The team and the role are not in
/// the token: they are read with the session on every request, so a change takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    /// The session; the token is honoured only while it exists.
    pub sid: SessionId,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
}

/// Signs and verifies tokens with the service's secret key.
#[derive(Clone)]
pub struct TokenKeys {
    key: SecretString,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    pub fn new(key: SecretString) -> Self {
        Self { key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(self.key.expose_secret().as_bytes()).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verifies the header, the signature and the expiry (`now` in seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Malformed)?;
        if header != HEADER_JSON.as_bytes() {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims { sub: UserId::new(), sid: SessionId::new(), iat: 0, exp, jti: "t1".into() }
    }

    fn keys(k: &str) -> TokenKeys {
        TokenKeys::new(SecretString::from(k.to_string()))
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let c = claims(1_000);
        let t = k.sign(&c);
        assert_eq!(k.verify(&t, 999), Ok(c));
        assert_eq!(k.verify(&t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_or_a_tampered_payload_is_refused() {
        let t = keys("key-one-key-one-key-one-key-one!").sign(&claims(1_000));
        assert_eq!(keys("key-two-key-two-key-two-key-two!").verify(&t, 0), Err(TokenError::Signature));
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut forged = claims(1_000);
        forged.sub = UserId::new();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(keys("key-one-key-one-key-one-key-one!").verify(&parts.join("."), 0), Err(TokenError::Signature));
    }

    #[test]
    fn tokens_naming_another_algorithm_are_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let t = k.sign(&claims(1_000));
        let payload = t.split('.').nth(1).expect("payload");
        for header in
            [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"HS512","typ":"JWT"}"#, r#"{"typ":"JWT","alg":"HS256"}"#]
        {
            let forged = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(k.verify(&forged, 0), Err(TokenError::Algorithm), "{header}");
        }
        assert_eq!(k.verify("a.b", 0), Err(TokenError::Malformed));
        assert_eq!(k.verify("", 0), Err(TokenError::Malformed));
    }
}
