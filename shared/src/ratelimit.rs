//! Fixed-window rate limits shared by every API replica (Redis).
