//! The audit trail: `GET /api/audit-trail`.
