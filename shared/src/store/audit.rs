//! The audit trail (`cspm_platform.audit_log`).
