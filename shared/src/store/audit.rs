//! The audit trail (`cspm_platform.audit_log`).
//!
//! Insert-only: there is no operation here that changes or removes an event; the only removal is the
//! retention sweep (`crate::retention`). Every read is of one team; a reader who may not see the team's whole trail
//! passes themselves as the actor, and the query is confined to their own events.

use bson::{Document, doc};
use futures::TryStreamExt;

use crate::audit::{AuditEvent, action_filter};
use crate::db::Mongo;
use crate::error::{StoreError, StoreResult};
use crate::ids::{TeamId, UserId};
use crate::time::Timestamp;

/// Most distinct actions [`actions`] returns (the vocabulary is a few dozen names).
pub const MAX_ACTIONS: i64 = 1_000;

/// A read of a team's trail.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub team: TeamId,
    /// The reader's confinement: only this actor's events (a reader without the team-wide permission).
    pub actor: Option<UserId>,
    /// The filter the reader asked for: only this user's events.
    pub user: Option<UserId>,
    /// A wildcard pattern of actions (`scan.*`, `*.delete`), see [`crate::audit::action_matches`].
    pub action: Option<String>,
    /// From this time, inclusive.
    pub start: Option<Timestamp>,
    /// Up to this time, inclusive.
    pub end: Option<Timestamp>,
    /// Only requests that succeeded.
    pub success_only: bool,
    pub skip: u64,
    pub limit: i64,
}

impl AuditQuery {
    /// Everything of the team, the first page of 50.
    pub fn team(team: TeamId) -> Self {
        Self {
            team,
            actor: None,
            user: None,
            action: None,
            start: None,
            end: None,
            success_only: false,
            skip: 0,
            limit: 50,
        }
    }

    /// The MongoDB filter, or `None` when nothing can match (a reader confined to themselves asking
    /// for someone else).
    fn filter(&self) -> Option<Document> {
        let mut q = doc! { "team_id": &self.team };
        match (&self.actor, &self.user) {
            (Some(a), Some(u)) if a != u => return None,
            (Some(a), _) | (None, Some(a)) => {
                q.insert("actor_id", a);
            }
            (None, None) => {}
        }
        if let Some(cond) = self.action.as_deref().and_then(action_filter) {
            q.insert("action", cond);
        }
        let mut at = Document::new();
        if let Some(s) = self.start {
            at.insert("$gte", s);
        }
        if let Some(e) = self.end {
            at.insert("$lte", e);
        }
        if !at.is_empty() {
            q.insert("at", at);
        }
        if self.success_only {
            q.insert("success", doc! { "$in": [true, 1] });
        }
        Some(q)
    }
}

fn decode(d: Document) -> StoreResult<AuditEvent> {
    bson::deserialize_from_document(d).map_err(StoreError::from)
}

/// Records an event. Ids are fresh, so a second insert of the same event is refused (`Duplicate`).
pub async fn insert(db: &Mongo, event: &AuditEvent) -> StoreResult<()> {
    db.audit.insert_one(bson::serialize_to_document(event)?).await?;
    Ok(())
}

/// A page of the events `q` selects, newest first, and how many it selects in all.
pub async fn query(db: &Mongo, q: &AuditQuery) -> StoreResult<(Vec<AuditEvent>, u64)> {
    let Some(filter) = q.filter() else {
        return Ok((Vec::new(), 0));
    };
    let total = db.audit.count_documents(filter.clone()).await?;
    let docs: Vec<Document> = db
        .audit
        .find(filter)
        .sort(doc! { "at": -1, "_id": -1 })
        .skip(q.skip)
        .limit(q.limit)
        .await?
        .try_collect()
        .await?;
    Ok((docs.into_iter().map(decode).collect::<StoreResult<_>>()?, total))
}

/// The distinct actions recorded in the team (or, with `actor`, by that actor), sorted. A `$group` on
/// the one field: the Mongo-wire test server has no `distinct` command.
pub async fn actions(db: &Mongo, team: &TeamId, actor: Option<&UserId>) -> StoreResult<Vec<String>> {
    let mut filter = doc! { "team_id": team };
    if let Some(a) = actor {
        filter.insert("actor_id", a);
    }
    let rows: Vec<Document> = db
        .audit
        .aggregate(vec![
            doc! { "$match": filter },
            doc! { "$group": { "_id": "$action" } },
            doc! { "$sort": { "_id": 1 } },
            doc! { "$limit": MAX_ACTIONS },
        ])
        .await?
        .try_collect()
        .await?;
    let mut out: Vec<String> = rows.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_string)).collect();
    // The sort is the server's; make it the same on every server.
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_reader_asking_for_someone_else_matches_nothing() {
        let me = UserId::new();
        let mut q = AuditQuery::team(TeamId::new());
        q.actor = Some(me.clone());
        q.user = Some(UserId::new());
        assert_eq!(q.filter(), None);
        q.user = Some(me.clone());
        let f = q.filter().expect("a filter");
        assert_eq!(f.get_str("actor_id").ok(), Some(me.as_str()));
    }

    #[test]
    fn the_filter_carries_every_condition() {
        let mut q = AuditQuery::team(TeamId::new());
        assert_eq!(q.filter().map(|f| f.len()), Some(1), "the team only");
        q.action = Some("*".into());
        assert_eq!(q.filter().map(|f| f.len()), Some(1), "`*` filters nothing");
        q.user = Some(UserId::new());
        q.action = Some("scan.*".into());
        q.start = Some(Timestamp::from_millis(10));
        q.end = Some(Timestamp::from_millis(20));
        q.success_only = true;
        let f = q.filter().expect("a filter");
        assert_eq!(f.get_document("action").and_then(|a| a.get_str("$regex")).ok(), Some(r"^scan\."));
        let at = f.get_document("at").expect("a time range");
        assert_eq!(at.get_i64("$gte").ok(), Some(10));
        assert_eq!(at.get_i64("$lte").ok(), Some(20));
        assert!(f.contains_key("success") && f.contains_key("actor_id"));
    }
}
