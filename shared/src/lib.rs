//! Shared domain of the CSPM scan fleet: ids, the ScanRun/SubJob state machines, stores over MongoDB,
//! the Redis queue and its admission control, security primitives, configuration and telemetry.
//! It knows nothing about HTTP routes or worker loops; the binaries build those on top of it.

pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod compliance;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod ids;
pub mod kev;
pub mod ocsf;
pub mod ops;
pub mod orchestrate;
pub mod queue;
pub mod ratelimit;
pub mod retention;
pub mod scheduling;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod time;

pub use bson;
pub use mongodb;
pub use redis;
pub use reqwest;
