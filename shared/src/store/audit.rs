//! The audit trail (`cspm_platform.audit_log`). (Placeholder until it lands.)

use crate::audit::AuditEvent;
use crate::db::Mongo;
use crate::error::StoreResult;

pub async fn insert(_db: &Mongo, _event: &AuditEvent) -> StoreResult<()> {
    Ok(())
}
