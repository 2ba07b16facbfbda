//! `[redaction]`: what never leaves the process.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Default of `redaction.replacement`.
pub const DEFAULT_REDACTION_REPLACEMENT: &str = "[REDACTED]";

/// Default of `redaction.deny_keys`: payload and attribute keys whose values never leave the
/// process (matched case-insensitively, ignoring `-` and `_`).
pub const DEFAULT_DENY_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set_cookie",
    "access_token",
    "refresh_token",
    "private_key",
    "client_secret",
    "credit_card",
];

/// `[redaction]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionSection {
    /// Keys whose values are replaced (case-insensitive, `-` and `_` ignored).
    pub deny_keys: Vec<String>,
    /// Keys the host marks safe: never redacted by key or by pattern.
    pub safe_keys: Vec<String>,
    /// Redact values that look like bearer tokens, API keys or e-mail addresses.
    pub builtin_patterns: bool,
    /// Extra regular expressions; matching parts of values are replaced.
    pub patterns: Vec<String>,
    /// What replaces a redacted value.
    pub replacement: String,
}

impl Default for RedactionSection {
    fn default() -> Self {
        RedactionSection {
            deny_keys: DEFAULT_DENY_KEYS.iter().map(|s| s.to_string()).collect(),
            safe_keys: Vec::new(),
            builtin_patterns: true,
            patterns: Vec::new(),
            replacement: DEFAULT_REDACTION_REPLACEMENT.into(),
        }
    }
}

impl RedactionSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (i, p) in self.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                return Err(ConfigError::invalid(
                    &format!("redaction.patterns[{i}]"),
                    format!("invalid regex: {e}"),
                ));
            }
        }
        Ok(())
    }
}
