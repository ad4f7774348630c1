//! Audit-trail events: redaction of request bodies and the event shape. (Placeholder until it lands.)

use serde::{Deserialize, Serialize};

use crate::domain::role::Role;
use crate::ids::{ApiKeyId, AuditId, TeamId, UserId};
use crate::time::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "_id")]
    pub id: AuditId,
    pub at: Timestamp,
    pub team_id: Option<TeamId>,
    pub actor_id: Option<UserId>,
    pub actor_email: Option<String>,
    pub actor_role: Option<Role>,
    pub api_key_id: Option<ApiKeyId>,
    pub method: String,
    pub path: String,
    pub route: String,
    pub action: String,
    pub status: u16,
    pub success: bool,
    pub duration_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub body: Option<String>,
    pub target_id: Option<String>,
}

pub fn body_summary(_content_type: Option<&str>, _body: &[u8]) -> Option<String> {
    None
}
