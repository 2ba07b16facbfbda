//! Redaction: what never leaves the process.
//!
//! Payloads are written by many hands, and sooner or later one of them carries a password, an
//! API key or a customer's e-mail address. A [`Redactor`], built once from `[redaction]`,
//! replaces such values with `redaction.replacement` (default `[REDACTED]`) before an event is
//! exported, before it appears in the gateway's own log lines and before it is kept by the
//! flight recorder. Once a secret has left the process it cannot be called back, so the rules
//! lean towards redacting too much rather than too little.
//!
//! Three rules, in this order:
//!
//! 1. **Safe keys** (`redaction.safe_keys`): a key the host marks safe is never redacted, by key
//!    or by pattern. Only the value directly under it is exempt: the entries of an object under
//!    a safe key are judged by their own keys.
//! 2. **Denied keys** (`redaction.deny_keys`): the whole value under a denied key is replaced,
//!    whatever its type (a `null` stays `null`: there is nothing to hide).
//! 3. **Value patterns** (`redaction.builtin_patterns`, [`BUILTIN_PATTERNS`], and
//!    `redaction.patterns`): only the matching part of a string is replaced, so
//!    `"mail me at a@b.com"` becomes `"mail me at [REDACTED]"`.
//!
//! Keys are compared case-insensitively with `-` and `_` removed, so `API-Key`, `api_key` and
//! `apikey` are one key. A key is denied when it *equals* a deny key, or *ends with* one that is
//! at least [`MIN_SUFFIX_MATCH_CHARS`] characters long:
//!
//! | key | deny key | denied | why |
//! |---|---|---|---|
//! | `X-API-Key` | `api_key` | yes | equal once normalized |
//! | `github_token`, `csrfToken` | `token` | yes | ends with `token` |
//! | `db_password` | `password` | yes | ends with `password` |
//! | `tokens`, `total_tokens`, `prompt_tokens` | `token` | **no** | they end with `tokens`: these are counts |
//! | `secretary` | `secret` | no | neither equal nor a suffix |
//! | `next_page_token` | `token` | yes | a known false positive: mark it safe if it matters |
//! | `passwords` | `password` | **no** | plurals are not matched: add them to `deny_keys` |
//!
//! What a redactor must never do:
//! - panic, whatever the key or value;
//! - show a value it redacted: its `Debug` prints the configuration, never an input;
//! - cost anything for a clean value beyond one scan: no allocation (the results are
//!   [`Cow`]s);
//! - run after truncation: callers redact first, then cut, or a cut could leave the start of a
//!   secret that no longer matches its pattern.
//!
//! Not covered: object *keys* are never rewritten (a map keyed by e-mail address keeps its
//! keys), and numbers are never inspected by pattern.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexSet};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::config::RedactionSection;

/// A deny key this long or longer (in characters, once normalized) also denies every key that
/// ends with it (`github_token` by `token`); a shorter one denies only keys equal to it, so a
/// deny key like `pin` does not catch `spin`.
pub const MIN_SUFFIX_MATCH_CHARS: usize = 5;

/// The value patterns used when `redaction.builtin_patterns = true`, as (name, regex).
///
/// Each errs on the side of redacting: a snake_case identifier like `pk_` followed by sixteen
/// more characters is redacted as if it were a key.
pub const BUILTIN_PATTERNS: [(&str, &str); 6] = [
    // RFC 6750 token characters; at least 8 so prose like "bearer of bad news" survives.
    ("bearer_token", r"(?i)\bbearer\s+[a-z0-9\-._~+/]{8,}=*"),
    // OpenAI (`sk-...`, `sk-proj-...`) and Stripe (`sk_live_...`, `pk_test_...`, `rk_...`).
    ("secret_key", r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_\-]{16,}"),
    // Long-term (`AKIA`) and temporary (`ASIA`) AWS access key ids.
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    // Classic (`ghp_` and friends) and fine-grained (`github_pat_`) GitHub tokens.
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    // Header and payload are base64url JSON (`{"` encodes as `eyJ`); the signature may be empty.
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
    ),
    // The TLD must be letters, so `lodash@4.17.21` is not an address.
    (
        "email",
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    ),
];

/// Why a [`Redactor`] could not be built from `[redaction]`. Each names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactionError {
    /// A regular expression does not compile.
    #[error("{key}: invalid regex: {error}")]
    InvalidPattern {
        /// `redaction.patterns[i]` (or `redaction.patterns` when only the combined set fails).
        key: String,
        /// The regex crate's message.
        error: String,
    },
    /// A regular expression matches the empty string, so it would "redact" between every
    /// character of every value.
    #[error("{key}: {pattern:?} matches the empty string")]
    MatchesEmpty {
        /// `redaction.patterns[i]`.
        key: String,
        /// The pattern.
        pattern: String,
    },
    /// A deny or safe key is empty once `-` and `_` are removed; it would match only keys that
    /// are themselves empty, which is never what was meant.
    #[error("{key}: {value:?} is empty once '-' and '_' are removed")]
    EmptyKey {
        /// `redaction.deny_keys[i]` or `redaction.safe_keys[i]`.
        key: String,
        /// The configured value.
        value: String,
    },
}

impl RedactionError {
    /// The config key at fault, e.g. `redaction.patterns[2]`.
    pub fn key(&self) -> &str {
        match self {
            RedactionError::InvalidPattern { key, .. }
            | RedactionError::MatchesEmpty { key, .. }
            | RedactionError::EmptyKey { key, .. } => key,
        }
    }
}

/// Decides what never leaves the process: see the [module documentation](self).
///
/// Cheap to clone (the compiled state is shared) and safe to use from any thread.
#[derive(Clone)]
pub struct Redactor {
    inner: Arc<Compiled>,
}

/// A configured key, kept as written (for `Debug`) and normalized for matching.
struct NormalizedKey {
    written: String,
    /// Lower-cased, `-` and `_` removed, in reverse order: suffix tests become prefix tests on
    /// an iterator, with no allocation per key checked.
    reversed: Box<[char]>,
}

struct Compiled {
    deny: Vec<NormalizedKey>,
    safe: Vec<NormalizedKey>,
    /// One scan tells whether any pattern matches; `patterns` has the same order.
    set: RegexSet,
    patterns: Vec<Regex>,
    replacement: Box<str>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.inner;
        let names = |keys: &[NormalizedKey]| -> Vec<String> {
            keys.iter().map(|k| k.written.clone()).collect()
        };
        f.debug_struct("Redactor")
            .field("deny_keys", &names(&c.deny))
            .field("safe_keys", &names(&c.safe))
            .field("patterns", &c.set.patterns())
            .field("replacement", &c.replacement)
            .finish()
    }
}

/// The chars of `key` as matching sees them, last first.
fn normalized_rev(key: &str) -> impl Iterator<Item = char> + '_ {
    key.chars()
        .rev()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
}

impl NormalizedKey {
    fn new(config_key: String, written: &str) -> Result<Self, RedactionError> {
        let reversed: Box<[char]> = normalized_rev(written).collect();
        if reversed.is_empty() {
            return Err(RedactionError::EmptyKey {
                key: config_key,
                value: written.to_owned(),
            });
        }
        Ok(NormalizedKey {
            written: written.to_owned(),
            reversed,
        })
    }

    /// Whether `key` (normalized once by [`normalize`]) equals this one.
    fn equals_normalized(&self, rev: &[char]) -> bool {
        *self.reversed == *rev
    }

    /// Whether `key` (normalized once by [`normalize`]) is denied by this one: equal, or ending
    /// with it when this one has at least [`MIN_SUFFIX_MATCH_CHARS`] characters.
    fn denies_normalized(&self, rev: &[char]) -> bool {
        if self.reversed.len() >= MIN_SUFFIX_MATCH_CHARS {
            rev.starts_with(&self.reversed)
        } else {
            self.equals_normalized(rev)
        }
    }
}

/// A key normalized once (lower-cased, `-` and `_` removed, reversed), to be compared with every
/// deny and safe key without normalizing it again for each; ASCII keys take a fast path.
fn normalize(key: &str) -> SmallVec<[char; 48]> {
    if key.is_ascii() {
        key.bytes()
            .rev()
            .filter(|b| !matches!(b, b'-' | b'_'))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    } else {
        normalized_rev(key).collect()
    }
}

/// How the values under one key are redacted (see [`Redactor::rule_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRule {
    /// A safe key: values pass as they are.
    Safe,
    /// A denied key: the whole value is replaced.
    Denied,
    /// Any other key: the parts matching a pattern are replaced.
    Scanned,
}

impl Redactor {
    /// Builds a redactor from `[redaction]`, compiling every pattern once.
    pub fn from_config(cfg: &RedactionSection) -> Result<Redactor, RedactionError> {
        let keys = |list: &[String], section: &str| -> Result<Vec<NormalizedKey>, RedactionError> {
            list.iter()
                .enumerate()
                .map(|(i, k)| NormalizedKey::new(format!("redaction.{section}[{i}]"), k))
                .collect()
        };
        let deny = keys(&cfg.deny_keys, "deny_keys")?;
        let safe = keys(&cfg.safe_keys, "safe_keys")?;

        let mut sources: Vec<(String, &str)> = Vec::new();
        if cfg.builtin_patterns {
            sources.extend(
                BUILTIN_PATTERNS
                    .iter()
                    .map(|(name, re)| (format!("redaction.builtin_patterns ({name})"), *re)),
            );
        }
        sources.extend(
            cfg.patterns
                .iter()
                .enumerate()
                .map(|(i, re)| (format!("redaction.patterns[{i}]"), re.as_str())),
        );
        let mut patterns = Vec::with_capacity(sources.len());
        for (key, source) in &sources {
            let re = Regex::new(source).map_err(|e| RedactionError::InvalidPattern {
                key: key.clone(),
                error: e.to_string(),
            })?;
            if re.is_match("") {
                return Err(RedactionError::MatchesEmpty {
                    key: key.clone(),
                    pattern: (*source).to_owned(),
                });
            }
            patterns.push(re);
        }
        // Each pattern compiles alone, but the combined set has its own size limit.
        let set = RegexSet::new(sources.iter().map(|(_, s)| *s)).map_err(|e| {
            RedactionError::InvalidPattern {
                key: "redaction.patterns".into(),
                error: e.to_string(),
            }
        })?;
        Ok(Redactor {
            inner: Arc::new(Compiled {
                deny,
                safe,
                set,
                patterns,
                replacement: cfg.replacement.clone().into_boxed_str(),
            }),
        })
    }

    /// A redactor that redacts nothing: no deny keys, no patterns. For tests.
    pub fn disabled() -> Redactor {
        Redactor {
            inner: Arc::new(Compiled {
                deny: Vec::new(),
                safe: Vec::new(),
                set: RegexSet::empty(),
                patterns: Vec::new(),
                replacement: crate::config::DEFAULT_REDACTION_REPLACEMENT.into(),
            }),
        }
    }

    /// What replaces a redacted value (`redaction.replacement`).
    pub fn replacement(&self) -> &str {
        &self.inner.replacement
    }

    pub(crate) fn key_safe(&self, key: &str) -> bool {
        self.safe_normalized(&normalize(key))
    }

    fn safe_normalized(&self, rev: &[char]) -> bool {
        self.inner.safe.iter().any(|k| k.equals_normalized(rev))
    }

    fn denied_normalized(&self, rev: &[char]) -> bool {
        self.inner.deny.iter().any(|d| d.denies_normalized(rev))
    }

    /// Whether the whole value under `key` must be replaced: `key` matches a deny key (equal,
    /// or ending with a deny key of at least [`MIN_SUFFIX_MATCH_CHARS`] characters) and is not
    /// a safe key.
    pub fn key_denied(&self, key: &str) -> bool {
        let rev = normalize(key);
        !self.safe_normalized(&rev) && self.denied_normalized(&rev)
    }

    /// `value` as it may leave the process: the replacement when `key` is denied; otherwise
    /// with the parts matching a pattern replaced, unless `key` is safe. Pass `""` as `key`
    /// for a value that has none (a log message). Borrows `value` when nothing is replaced.
    pub fn redact_str<'a>(&self, key: &str, value: &'a str) -> Cow<'a, str> {
        self.redact_by(self.rule_of(key), value)
    }

    /// What the values under `key` go through: decided once for a key the caller uses for
    /// every event (a payload's `status`, `error`), then applied with [`Redactor::redact_by`].
    pub(crate) fn rule_of(&self, key: &str) -> KeyRule {
        let rev = normalize(key);
        if self.safe_normalized(&rev) {
            KeyRule::Safe
        } else if self.denied_normalized(&rev) {
            KeyRule::Denied
        } else {
            KeyRule::Scanned
        }
    }

    /// [`Redactor::redact_str`] for a key whose rule is known.
    pub(crate) fn redact_by<'a>(&self, rule: KeyRule, value: &'a str) -> Cow<'a, str> {
        match rule {
            KeyRule::Safe => Cow::Borrowed(value),
            KeyRule::Denied => Cow::Owned(self.inner.replacement.to_string()),
            KeyRule::Scanned => self.redact_patterns(value),
        }
    }

    /// Replaces the parts of `value` matching any pattern. Overlapping matches (a JWT inside a
    /// bearer token) become one replacement.
    pub(crate) fn redact_patterns<'a>(&self, value: &'a str) -> Cow<'a, str> {
        let c = &*self.inner;
        // The clean path: one scan, no allocation.
        if !c.set.is_match(value) {
            return Cow::Borrowed(value);
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for i in c.set.matches(value).iter() {
            spans.extend(
                c.patterns[i]
                    .find_iter(value)
                    // An empty match hides nothing and would insert the replacement mid-text.
                    .filter(|m| !m.is_empty())
                    .map(|m| (m.start(), m.end())),
            );
        }
        if spans.is_empty() {
            return Cow::Borrowed(value);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(value.len());
        let mut written = 0;
        let mut open: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match open {
                Some((s, e)) if start <= e => open = Some((s, e.max(end))),
                _ => {
                    if let Some((s, e)) = open {
                        out.push_str(&value[written..s]);
                        out.push_str(&c.replacement);
                        written = e;
                    }
                    open = Some((start, end));
                }
            }
        }
        if let Some((s, e)) = open {
            out.push_str(&value[written..s]);
            out.push_str(&c.replacement);
            written = e;
        }
        out.push_str(&value[written..]);
        Cow::Owned(out)
    }

    /// Redacts `value` in place, recursively: the whole value when `key` is denied; otherwise
    /// strings by pattern (unless `key` is safe), object entries by their own keys, array items
    /// by `key`. Pass `""` as `key` for a value that has none.
    pub fn redact_json(&self, key: &str, value: &mut Value) {
        let rev = normalize(key);
        if self.safe_normalized(&rev) {
            self.redact_children(value, true);
        } else if self.denied_normalized(&rev) {
            if !value.is_null() {
                *value = Value::String(self.inner.replacement.to_string());
            }
        } else {
            self.redact_children(value, false);
        }
    }

    /// `value` under a key that is not denied; `safe` when that key is safe. Array items share
    /// their array's key, so they share its verdict.
    fn redact_children(&self, value: &mut Value, safe: bool) {
        match value {
            Value::String(s) if !safe => {
                if let Cow::Owned(r) = self.redact_patterns(s) {
                    *s = r;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.redact_children(item, safe);
                }
            }
            Value::Object(map) => self.redact_object(map),
            _ => {}
        }
    }

    /// Redacts every entry of `obj` in place by its own key (see [`redact_json`](Self::redact_json)).
    pub fn redact_object(&self, obj: &mut Map<String, Value>) {
        for (k, v) in obj.iter_mut() {
            self.redact_json(k, v);
        }
    }

    /// `value` redacted as by [`redact_json`](Self::redact_json), cloned only when something
    /// must change.
    pub fn redacted_json<'a>(&self, key: &str, value: &'a Value) -> Cow<'a, Value> {
        if self.json_needs_redaction(key, value) {
            let mut v = value.clone();
            self.redact_json(key, &mut v);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(value)
        }
    }

    /// Whether [`redact_json`](Self::redact_json) could change `value`, without allocating.
    fn json_needs_redaction(&self, key: &str, value: &Value) -> bool {
        let rev = normalize(key);
        let safe = self.safe_normalized(&rev);
        if !safe && self.denied_normalized(&rev) {
            // Already-redacted values are left alone, so redacting twice never clones.
            return !(value.is_null() || value.as_str() == Some(self.replacement()));
        }
        self.children_need_redaction(value, safe)
    }

    fn children_need_redaction(&self, value: &Value, safe: bool) -> bool {
        match value {
            Value::String(s) => !safe && self.inner.set.is_match(s),
            Value::Array(items) => items
                .iter()
                .any(|item| self.children_need_redaction(item, safe)),
            Value::Object(map) => map.iter().any(|(k, v)| self.json_needs_redaction(k, v)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const R: &str = "[REDACTED]";

    fn defaults() -> Redactor {
        Redactor::from_config(&RedactionSection::default()).unwrap()
    }

    fn with(f: impl FnOnce(&mut RedactionSection)) -> Result<Redactor, RedactionError> {
        let mut cfg = RedactionSection::default();
        f(&mut cfg);
        Redactor::from_config(&cfg)
    }

    /// Redacts `value` under a key that is neither denied nor safe.
    fn by_pattern(r: &Redactor, value: &str) -> String {
        r.redact_str("note", value).into_owned()
    }

    #[test]
    fn builtin_patterns_compile_and_none_matches_empty() {
        for (name, re) in BUILTIN_PATTERNS {
            let re = Regex::new(re).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!re.is_match(""), "{name}");
        }
    }

    #[test]
    fn every_builtin_pattern_has_a_positive_and_a_negative_example() {
        let r = defaults();
        // (pattern, positive input, expected output, negative input)
        let cases = [
            (
                "bearer_token",
                "Authorization: Bearer abcDEF123456._~+/xyz==",
                "Authorization: [REDACTED]",
                "the bearer of bad news",
            ),
            (
                "bearer_token (any case)",
                "bEaReR 0123456789abcdef",
                R,
                "Bearer short",
            ),
            (
                "secret_key (OpenAI)",
                "key sk-proj-abcdefghijklmnop1234_x-y end",
                "key [REDACTED] end",
                "sk-short1234",
            ),
            (
                "secret_key (Stripe)",
                "pk_live_51HabcdefghijklmnopQR",
                R,
                "task_abcdefghijklmnopqrstuvwxyz",
            ),
            (
                "secret_key (restricted)",
                "rk_test_0123456789abcdefgh",
                R,
                "rk_test_123",
            ),
            (
                "aws_access_key_id",
                "id=AKIAIOSFODNN7EXAMPLE;",
                "id=[REDACTED];",
                "AKIAIOSFODNN7EXAMPL",
            ),
            (
                "aws_access_key_id (lower case is not a key id)",
                "ASIAABCDEFGHIJKLMNOP",
                R,
                "akiaiosfodnn7example",
            ),
            (
                "github_token",
                "token ghp_0123456789abcdefghijklmnopqrstuvwxyz",
                "token [REDACTED]",
                "ghp_0123456789abcdefghijklmnopqrstuvwxy",
            ),
            (
                "github_token (fine-grained)",
                "github_pat_11ABCDEFG0123456789_abcdefghij",
                R,
                "github_pat_short",
            ),
            (
                "jwt",
                "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl&x=1",
                "t=[REDACTED]&x=1",
                "eyJhbGciOiJIUzI1NiJ9.only-two-segments",
            ),
            (
                "email",
                "mail me at first.last+tag@mail.example.co.uk please",
                "mail me at [REDACTED] please",
                "lodash@4.17.21 and @handle and user@localhost",
            ),
        ];
        for (name, positive, expected, negative) in cases {
            assert_eq!(by_pattern(&r, positive), expected, "{name}: positive");
            assert!(
                matches!(r.redact_str("note", negative), Cow::Borrowed(_)),
                "{name}: negative {negative:?} was redacted to {:?}",
                r.redact_str("note", negative)
            );
        }
    }

    #[test]
    fn builtin_patterns_can_be_turned_off() {
        let r = with(|c| c.builtin_patterns = false).unwrap();
        assert_eq!(by_pattern(&r, "a@b.com"), "a@b.com");
        assert!(r.key_denied("password"), "deny keys still apply");
    }

    #[test]
    fn keys_are_compared_ignoring_case_dashes_and_underscores() {
        let r = defaults();
        for key in [
            "api_key",
            "API-Key",
            "apikey",
            "Api_Key",
            "X-API-KEY",
            "x_api_key",
        ] {
            assert!(r.key_denied(key), "{key}");
        }
        for key in ["Authorization", "set-cookie", "Set_Cookie", "CLIENT_SECRET"] {
            assert!(r.key_denied(key), "{key}");
        }
    }

    #[test]
    fn long_deny_keys_also_deny_keys_ending_with_them() {
        let r = defaults();
        for key in [
            "github_token",
            "csrfToken",
            "db_password",
            "DB-PASSWORD",
            "stripe_api_key",
            "session_cookie",
            "top_secret",
            "next_page_token",
        ] {
            assert!(r.key_denied(key), "{key}");
        }
        // A deny key shorter than MIN_SUFFIX_MATCH_CHARS matches only itself.
        let r = with(|c| c.deny_keys = vec!["pin".into()]).unwrap();
        assert!(r.key_denied("PIN"));
        assert!(!r.key_denied("spin"));
        assert!(!r.key_denied("pins"));
    }

    #[test]
    fn token_counts_are_not_tokens() {
        let r = defaults();
        for key in [
            "tokens",
            "total_tokens",
            "prompt_tokens",
            "completion_tokens",
            "max_tokens",
            "TotalTokens",
            "token_count",
            "duration_ms",
            "status",
            // Documented: neither equal to nor ending with `secret`.
            "secretary",
            // Documented: plurals are not matched.
            "passwords",
        ] {
            assert!(!r.key_denied(key), "{key}");
        }
        let mut v = json!({"total_tokens": 5, "tokens": 7, "prompt_tokens": 3});
        let before = v.clone();
        r.redact_json("", &mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn a_denied_key_replaces_the_whole_value() {
        let r = defaults();
        assert_eq!(r.redact_str("password", "hunter2"), R);
        assert_eq!(r.redact_str("Password", ""), R);
        let mut v = json!({
            "password": 1234,
            "token": {"nested": "value"},
            "secret": ["a", "b"],
            "api_key": null,
            "cookie": true,
        });
        r.redact_json("", &mut v);
        assert_eq!(
            v,
            json!({"password": R, "token": R, "secret": R, "api_key": null, "cookie": R})
        );
    }

    #[test]
    fn safe_keys_are_exempt_from_keys_and_patterns() {
        let r = with(|c| c.safe_keys = vec!["Page-Token".into(), "contact".into()]).unwrap();
        assert!(!r.key_denied("page_token"));
        // Safe keys are matched exactly, never by suffix.
        assert!(r.key_denied("next_page_token"));
        assert!(r.key_denied("github_token"));
        assert_eq!(r.redact_str("pagetoken", "abc"), "abc");
        assert_eq!(r.redact_str("contact", "a@b.com"), "a@b.com");
        assert_eq!(r.redact_str("other", "a@b.com"), R);
        // Safe covers the value under the key (array items too), not the entries of an object
        // under it: those are judged by their own keys.
        let mut v = json!({
            "contact": ["a@b.com", {"password": "x", "mail": "c@d.com"}],
        });
        r.redact_json("", &mut v);
        assert_eq!(
            v,
            json!({"contact": ["a@b.com", {"password": R, "mail": R}]})
        );
    }

    #[test]
    fn nested_json_is_redacted_at_every_depth() {
        let r = defaults();
        let mut v = json!({
            "user": {
                "name": "Ann",
                "credentials": {"db_password": "p", "hint": "ask bob@corp.example"},
                "emails": ["ann@corp.example", "not an address"],
            },
            "steps": [[{"Authorization": "Bearer abcdefghijklmnop"}], 3, null],
            "total_tokens": 42,
        });
        let expected = json!({
            "user": {
                "name": "Ann",
                "credentials": {"db_password": R, "hint": "ask [REDACTED]"},
                "emails": [R, "not an address"],
            },
            "steps": [[{"Authorization": R}], 3, null],
            "total_tokens": 42,
        });
        assert!(matches!(r.redacted_json("", &v), Cow::Owned(ref o) if *o == expected));
        r.redact_object(v.as_object_mut().unwrap());
        assert_eq!(v, expected);
        // Already clean: borrowed, not cloned.
        assert!(matches!(r.redacted_json("", &v), Cow::Borrowed(_)));
    }

    #[test]
    fn a_value_with_two_secrets_loses_both_and_keeps_the_rest() {
        let r = defaults();
        let v = "from a@b.com with AKIAIOSFODNN7EXAMPLE, then c@d.org.";
        assert_eq!(
            by_pattern(&r, v),
            "from [REDACTED] with [REDACTED], then [REDACTED]."
        );
        // Overlapping matches (a JWT inside a bearer token) are one replacement.
        let v = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln x";
        assert_eq!(by_pattern(&r, v), "[REDACTED] x");
    }

    #[test]
    fn clean_values_are_borrowed() {
        let r = defaults();
        for v in [
            "",
            "succeeded",
            "a long sentence with no secrets, just words.",
        ] {
            assert!(matches!(r.redact_str("note", v), Cow::Borrowed(_)), "{v}");
        }
    }

    #[test]
    fn custom_patterns_and_replacement_apply() {
        let r = with(|c| {
            c.patterns = vec![r"\b\d{3}-\d{2}-\d{4}\b".into()];
            c.replacement = "***".into();
        })
        .unwrap();
        assert_eq!(by_pattern(&r, "ssn 123-45-6789, a@b.com"), "ssn ***, ***");
        assert_eq!(r.redact_str("password", "x"), "***");
        assert_eq!(r.replacement(), "***");
        // `$` in the replacement is literal, not a capture-group reference.
        let r = with(|c| c.replacement = "$0 ${1}".into()).unwrap();
        assert_eq!(by_pattern(&r, "a@b.com"), "$0 ${1}");
    }

    #[test]
    fn an_invalid_custom_regex_names_its_key() {
        let err = with(|c| c.patterns = vec!["ok".into(), "(unclosed".into()]).unwrap_err();
        assert_eq!(err.key(), "redaction.patterns[1]");
        let text = err.to_string();
        assert!(
            text.starts_with("redaction.patterns[1]: invalid regex"),
            "{text}"
        );

        let err = with(|c| c.patterns = vec!["x*".into()]).unwrap_err();
        assert_eq!(err.key(), "redaction.patterns[0]");
        assert!(matches!(err, RedactionError::MatchesEmpty { .. }), "{err}");

        let err = with(|c| c.safe_keys = vec!["ok".into(), "-_".into()]).unwrap_err();
        assert_eq!(err.key(), "redaction.safe_keys[1]");
        let err = with(|c| c.deny_keys = vec![String::new()]).unwrap_err();
        assert_eq!(err.key(), "redaction.deny_keys[0]");
    }

    #[test]
    fn disabled_redacts_nothing() {
        let r = Redactor::disabled();
        assert!(!r.key_denied("password"));
        assert_eq!(
            r.redact_str("password", "hunter2 a@b.com"),
            "hunter2 a@b.com"
        );
        let mut v = json!({"token": "sk-abcdefghijklmnopqrstuvwxyz"});
        let before = v.clone();
        r.redact_json("", &mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn debug_shows_the_configuration_only() {
        let r = with(|c| c.safe_keys = vec!["contact".into()]).unwrap();
        let text = format!("{r:?}");
        assert!(
            text.contains("api_key") && text.contains("contact"),
            "{text}"
        );
        fn assert_traits<T: Clone + Send + Sync + fmt::Debug + 'static>() {}
        assert_traits::<Redactor>();
    }

    /// A property over a small generated space: wherever a secret sits among clean text and
    /// however the key is spelled, the secret never survives, the clean text always does, and
    /// redacting twice changes nothing.
    #[test]
    fn secrets_never_survive_in_any_position() {
        let r = defaults();
        let secrets = [
            "sk-abcdefghijklmnopqrstuvwx",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "someone@example.com",
            "Bearer abcdefghijklmnop",
        ];
        let befores = ["", " ", "text ", "é ünïcödé ", "(", "\n", "\"", "ok, "];
        let afters = ["", " ", " text", " ünïcödé", ")", "\n", "\"", ", ok"];
        for secret in secrets {
            for before in befores {
                for after in afters {
                    let value = format!("{before}{secret}{after}");
                    let out = by_pattern(&r, &value);
                    assert!(!out.contains(secret), "{value:?} -> {out:?}");
                    assert!(out.starts_with(before), "{value:?} -> {out:?}");
                    assert!(out.ends_with(after), "{value:?} -> {out:?}");
                    assert_eq!(by_pattern(&r, &out), out, "idempotent for {value:?}");
                }
            }
        }
        for key in [
            "password",
            "PASSWORD",
            "pass-word",
            "user_password",
            "_password_",
        ] {
            for value in secrets.iter().copied().chain(befores) {
                assert_eq!(r.redact_str(key, value), R, "{key}");
            }
        }
    }
}
