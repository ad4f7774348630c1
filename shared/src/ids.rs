//! Typed identifiers: a prefix that says what the id names, then a ULID (sortable by creation time).
//!
//! Ids travel as plain strings in JSON and BSON (`scan_01JD…`), but inside the code a `RunId` can never be
//! passed where a `SubJobId` is expected, and a malformed id never gets past the parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by a 26-character ULID)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, unique and ordered by creation time.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::generate()))
            }

            /// The id with this ULID (ids derived from other data, e.g. one run per schedule fire).
            pub fn from_ulid(ulid: ulid::Ulid) -> Self {
                Self(format!("{}{}", $prefix, ulid))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The ULID part, e.g. to derive other identifiers from this one.
            pub fn ulid(&self) -> ulid::Ulid {
                // The constructor and the parser both guarantee the suffix is a valid ULID.
                ulid::Ulid::from_string(&self.0[$prefix.len()..]).unwrap_or_default()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdError { kind: $kind, prefix: $prefix, value: s.chars().take(80).collect() };
                let rest = s.strip_prefix($prefix).ok_or_else(err)?;
                let ulid = ulid::Ulid::from_string(rest).map_err(|_| err())?;
                // Normalise the case so that two spellings of one id are one id.
                Ok(Self(format!("{}{}", $prefix, ulid)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl From<$name> for bson::Bson {
            fn from(id: $name) -> Self {
                bson::Bson::String(id.0)
            }
        }

        /// As it travels: the prefix and a ULID (Crockford base 32, upper case).
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": concat!("^", $prefix, "[0-9A-HJKMNP-TV-Z]{26}$"),
                })
            }
        }

    };
}

prefixed_id!(
    /// A team: the unit of tenancy. Every document carries one; every query filters by it.
    TeamId, "team_", "team"
);
prefixed_id!(
    /// A person who signs in.
    UserId, "usr_", "user"
);
prefixed_id!(
    /// A connected cloud account (AWS account, GCP project, Azure subscription).
    AccountId, "acc_", "cloud account"
);
prefixed_id!(
    /// A ScanRun: one request to scan an account or a target. Native scans use the same id as `scan_id`.
    RunId, "scan_", "scan"
);
prefixed_id!(
    /// A SubJob: one unit of work (region × tool) that one worker executes.
    SubJobId, "sj_", "sub-job"
);
prefixed_id!(
    /// A schedule: when to scan an account or a target without anyone pressing a button.
    ScheduleId, "sched_", "schedule"
);
prefixed_id!(
    /// A version of the imported SCF catalog (the compliance engine).
    CatalogId, "scfcat_", "catalog"
);
prefixed_id!(
    /// One compliance sync of a team.
    SyncJobId, "csync_", "compliance sync"
);
prefixed_id!(
    /// A signed-in session. Tokens name it; it is checked on every request, so ending it takes effect at once.
    SessionId, "sess_", "session"
);
prefixed_id!(
    /// An API key (its id, not the secret: the secret is shown once and stored only as a hash).
    ApiKeyId, "key_", "API key"
);
prefixed_id!(
    /// One audit-trail event.
    AuditId, "aud_", "audit event"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = RunId::new();
        let parsed: RunId = id.to_string().parse().expect("parses");
        assert_eq!(parsed, id);
        assert!(id.as_str().starts_with("scan_"));
        assert_eq!(id.as_str().len(), 5 + 26);
    }

    #[test]
    fn an_id_of_another_kind_is_refused_with_a_clear_message() {
        let run = RunId::new();
        let err = run.as_str().parse::<SubJobId>().expect_err("must not parse");
        assert!(err.to_string().contains("sub-job id"), "{err}");
        assert!("sj_nope".parse::<SubJobId>().is_err());
        assert!("".parse::<TeamId>().is_err());
    }

    #[test]
    fn lower_case_ulids_are_normalised() {
        let id = AccountId::new();
        let lower = id.as_str().to_ascii_lowercase();
        let parsed: AccountId = lower.parse().expect("parses");
        assert_eq!(parsed, id);
    }

    #[test]
    fn ids_serialise_as_plain_strings() {
        let id = TeamId::new();
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(json, format!("\"{id}\""));
        let back: TeamId = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<TeamId>("\"usr_01ARZ3NDEKTSV4RRFFQ69G5FAV\"").is_err());
    }
}
