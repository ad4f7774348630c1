//! Password hashing: PBKDF2-HMAC-SHA256, 600,000 iterations, stored as `{iterations}${salt_hex}${hash_hex}`.
//!
//! Hashes made with fewer iterations (the legacy 100,000) still verify, and the caller is told to rehash.
//! Verification always does the full PBKDF2 work and compares in constant time; for an unknown user
//! the caller verifies against [`dummy_hash`] so that both answers take the same time.

use std::sync::OnceLock;

use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const ITERATIONS: u32 = 600_000;
pub const LEGACY_ITERATIONS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// Refuse absurd iteration counts in stored hashes (a corrupted document must not pin a CPU for minutes).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Hashes a password with a fresh random salt. CPU-heavy (~0.3 s): call it from a blocking thread.
pub fn hash_password(password: &str) -> String {
    hash_with(password, ITERATIONS, &rand::random::<[u8; SALT_LEN]>())
}

/// A hash with a given iteration count and salt (legacy records, tests).
pub fn hash_with(password: &str, iterations: u32, salt: &[u8]) -> String {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    format!("{iterations}${}${}", hex::encode(salt), hex::encode(out))
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses fewer iterations than today's standard: store a fresh hash.
    pub needs_rehash: bool,
}

/// Verifies a password against a stored hash in constant time. A malformed stored hash never verifies.
pub fn verify_password(password: &str, stored: &str) -> Verified {
    let parsed = parse(stored);
    let (iterations, salt, expected) = match parsed {
        Some(p) => p,
        // Still do the work, so that a broken record is not distinguishable by timing.
        None => (ITERATIONS, vec![0u8; SALT_LEN], vec![0xffu8; HASH_LEN]),
    };
    let mut out = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut out);
    let ok = parsed_ok(stored) && bool::from(out.ct_eq(&expected));
    Verified { ok, needs_rehash: ok && iterations < ITERATIONS }
}

fn parsed_ok(stored: &str) -> bool {
    parse(stored).is_some()
}

fn parse(stored: &str) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    let iterations: u32 = parts.next()?.parse().ok()?;
    let salt = hex::decode(parts.next()?).ok()?;
    let hash = hex::decode(parts.next()?).ok()?;
    if parts.next().is_some()
        || iterations == 0
        || iterations > MAX_ITERATIONS
        || salt.is_empty()
        || hash.len() != HASH_LEN
    {
        return None;
    }
    Some((iterations, salt, hash))
}

/// A hash of a random password, verified when the user does not exist so that "unknown user" and
/// "wrong password" cost the same.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())))
}

/// The policy's shortest password, in characters.
pub const MIN_LENGTH: usize = 12;

/// The password policy: at least 12 characters with an upper-case letter, a lower-case letter, a digit
/// and a symbol. Returns what is missing.
pub fn check_policy(password: &str) -> Result<(), String> {
    let mut missing = Vec::new();
    if password.chars().count() < MIN_LENGTH {
        missing.push("at least 12 characters");
    }
    if !password.chars().any(char::is_uppercase) {
        missing.push("an upper-case letter");
    }
    if !password.chars().any(char::is_lowercase) {
        missing.push("a lower-case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        missing.push("a digit");
    }
    if !password.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace()) {
        missing.push("a symbol");
    }
    if password.len() > 1024 {
        return Err("the password is longer than 1024 bytes".into());
    }
    if missing.is_empty() { Ok(()) } else { Err(format!("the password needs {}", missing.join(", "))) }
}

/// A random password that satisfies the policy (for the bootstrap admin when none is configured).
pub fn generate_password() -> String {
    let body = hex::encode(rand::random::<[u8; 12]>());
    format!("Aa1!{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_with("Correct-Horse-1", 1_000, b"0123456789abcdef");
        assert!(verify_password("Correct-Horse-1", &h).ok);
        assert!(!verify_password("Correct-Horse-2", &h).ok);
        assert!(!verify_password("", &h).ok);
    }

    #[test]
    fn the_stored_format_carries_iterations_and_salt() {
        let h = hash_password("Correct-Horse-1");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[0], "600000");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 64);
        assert_eq!(verify_password("Correct-Horse-1", &h), Verified { ok: true, needs_rehash: false });
    }

    #[test]
    fn legacy_hashes_verify_and_ask_for_a_rehash() {
        let legacy = hash_with("Correct-Horse-1", LEGACY_ITERATIONS, b"fedcba9876543210");
        assert_eq!(verify_password("Correct-Horse-1", &legacy), Verified { ok: true, needs_rehash: true });
        assert_eq!(verify_password("wrong", &legacy), Verified { ok: false, needs_rehash: false });
    }

    #[test]
    fn malformed_hashes_never_verify() {
        for bad in ["", "abc", "0$00$00", "100$zz$00", "99999999999$00$00", "1000$0011$00"] {
            assert!(!verify_password("x", bad).ok, "{bad}");
        }
    }

    #[test]
    fn the_policy_names_what_is_missing() {
        assert!(check_policy("Abcdefgh123!").is_ok());
        let err = check_policy("short").expect_err("too weak");
        assert!(err.contains("12 characters") && err.contains("digit") && err.contains("symbol"), "{err}");
        assert!(check_policy(&generate_password()).is_ok());
    }
}
