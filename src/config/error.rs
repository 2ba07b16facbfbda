//! Why a configuration cannot be used: one error naming the key and the problem.

/// A configuration that cannot be used. Names the key and what is wrong.
///
/// Its `Debug` is its message, so `main() -> Result<(), Box<dyn Error>>` prints the sentence.
#[derive(thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the config structs (unknown key, wrong
    /// type, malformed TOML). Figment's message names the key and where it came from.
    #[error("configuration is invalid: {0}")]
    Parse(String),
    /// A value parsed but is out of range.
    #[error("configuration key `{key}` is invalid: {problem}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // Figment gives one error per problem; join them so every bad key is named.
        let all: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
        ConfigError::Parse(all.join("; "))
    }
}

/// A parse error's text without the lines it quotes from the file: the TOML parser shows the
/// offending line (`3 | api_key = "s3cr...`), which may hold a credential. What is left says
/// where (line and column) and what is wrong.
fn without_source_snippet(text: &str) -> String {
    let quoted = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !quoted(l) && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    kept.join(": ")
}

/// One figment error as `<problem> for key `a.b` [(set by VARIABLE)] in <source>`: the key as
/// the file and the docs write it, never with figment's profile prefix (`default.a.b`), and the
/// environment variable's name when one set it.
fn describe_figment_error(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let mut msg = without_source_snippet(&e.kind.to_string());
    if !key.is_empty() {
        msg.push_str(&format!(" for key `{key}`"));
    }
    if let Some(md) = &e.metadata {
        if let Some(profile) = &e.profile {
            let named = md.interpolate(profile, &e.path);
            if !key.is_empty() && named != format!("{profile}.{key}") && named != key {
                msg.push_str(&format!(" (set by {named})"));
            }
        }
        msg.push_str(&format!(" in {}", md.name));
        if let Some(source) = &md.source {
            msg.push_str(&format!(" {source}"));
        }
    }
    msg
}

impl ConfigError {
    /// The key `key` has `problem`.
    pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The first of `keys` that is 0, refused with `problem`.
fn first_zero(keys: &[(&str, u64)], problem: &str) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(ConfigError::invalid(key, problem)),
        None => Ok(()),
    }
}

/// Each key must be at least 1.
pub(crate) fn at_least_one(keys: &[(&str, u64)]) -> Result<(), ConfigError> {
    first_zero(keys, "must be at least 1")
}

/// Each key (a duration or a count of tries) must be greater than 0.
pub(crate) fn greater_than_zero(keys: &[(&str, u64)]) -> Result<(), ConfigError> {
    first_zero(keys, "must be greater than 0")
}
