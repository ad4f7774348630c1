//! Signed-in sessions (`cspm_platform.sessions`).
