//! Security primitives: password hashing, bearer tokens, credential encryption.

pub mod crypto;
pub mod jwt;
pub mod password;
