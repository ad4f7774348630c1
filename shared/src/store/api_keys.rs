//! API keys (`cspm_platform.api_keys`).
