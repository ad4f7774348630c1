//! The domain: what the fleet manipulates, independent of storage and transport.

pub mod finding;
pub mod native;
pub mod provider;
pub mod role;
pub mod scan;
pub mod schedule;
pub mod scope;
pub mod severity;
