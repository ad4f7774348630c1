//! Stores: typed documents and the operations on them. Every query of a team's data takes the team.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod findings;
pub mod occurrences;
pub mod results;
pub mod runs;
pub mod schedules;
pub mod sessions;
pub mod subjobs;
pub mod users;

use serde::{Deserialize, Deserializer};

use crate::error::{StoreError, StoreResult};

/// Runs one `update` command of many statements against `collection` and returns the server's reply.
/// A statement the server refused fails the call, saying how many `what` were not written and why the
/// first was not.
pub(crate) async fn update_statements(
    db: &mongodb::Database,
    collection: &str,
    updates: Vec<bson::Bson>,
    ordered: bool,
    what: &str,
) -> StoreResult<bson::Document> {
    let reply = db.run_command(bson::doc! { "update": collection, "updates": updates, "ordered": ordered }).await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Database(format!("{} {what} were not written: {:?}", errors.len(), errors.first())));
    }
    Ok(reply)
}

/// Reads a stored flag written as a boolean or as 0/1 (the MongoDB-wire test server stores booleans
/// written by `$set` as integers; queries treat both alike).
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
        Null(()),
    }
    Ok(match Option::<Flag>::deserialize(d)? {
        Some(Flag::Bool(b)) => b,
        Some(Flag::Int(n)) => n != 0,
        Some(Flag::Null(())) | None => false,
    })
}

/// The same leniency for a flag read from a raw document.
pub fn flag(doc: &bson::Document, key: &str) -> bool {
    match doc.get(key) {
        Some(bson::Bson::Boolean(b)) => *b,
        Some(bson::Bson::Int32(n)) => *n != 0,
        Some(bson::Bson::Int64(n)) => *n != 0,
        _ => false,
    }
}
