//! OCSF 1.4.0: the normalised form of every finding, and validation against the schema.

pub mod event;
pub mod schema;
