//! Stored time: milliseconds since the Unix epoch (UTC), as a BSON int64.
//!
//! One representation on every server: the fleet compares times in queries (lease expiry, dispatch age,
//! retention), and the MongoDB-wire test server turns BSON dates written by `$set` into strings, which
//! breaks both reads and range queries there. Integers sort and compare the same everywhere; the API
//! renders them as RFC 3339.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Self(ms)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
    }

    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC with milliseconds (`2026-11-23T11:04:23.145Z`).
    pub fn to_rfc3339(self) -> String {
        bson::DateTime::from_millis(self.0).try_to_rfc3339_string().unwrap_or_default()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // MongoDB may hand back an int32 for small values or a double after arithmetic.
        let v = f64::deserialize(d)?;
        Ok(Self(v as i64))
    }
}

impl From<Timestamp> for bson::Bson {
    fn from(t: Timestamp) -> Self {
        bson::Bson::Int64(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339_and_round_trip_through_bson() {
        let t = Timestamp::from_millis(1_795_422_213_145);
        assert_eq!(t.to_rfc3339(), "2026-11-23T08:23:33.145Z");
        let doc = bson::doc! { "t": t };
        assert_eq!(doc.get_i64("t").ok(), Some(1_795_422_213_145));
        #[derive(Deserialize)]
        struct W {
            t: Timestamp,
        }
        let w: W = bson::deserialize_from_document(doc).expect("deserialises");
        assert_eq!(w.t, t);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.plus(Duration::from_secs(1)).millis(), 2_000);
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
        assert_eq!(t.plus(Duration::from_secs(5)).since(t), Duration::from_secs(5));
    }
}
