//! URLs in the configuration: the one check of each kind (OTLP endpoints, Redis URLs), and the
//! hiding of their credentials wherever a configuration is printed, debugged or reported.

use std::collections::BTreeMap;

use super::error::ConfigError;

/// What is wrong with a Redis URL, the one check for `dedup.redis_url` and
/// `transport.redis_url`. `rediss://` (TLS) is refused here, not at start: the Redis client is
/// built without TLS (no TLS stack in the dependency tree); reach a TLS Redis through a local
/// TLS tunnel, or a `unix://` socket.
pub(super) fn redis_url_problem(url: &str) -> Option<&'static str> {
    if url.starts_with("rediss://") {
        Some(
            "rediss:// (TLS) is not supported: the Redis client is built without TLS; use \
             redis:// through a TLS tunnel, or unix://",
        )
    } else if url.starts_with("redis://") || url.starts_with("unix://") {
        None
    } else {
        Some("must start with redis:// or unix://")
    }
}

pub(super) fn check_endpoint(key: &str, ep: &str) -> Result<(), ConfigError> {
    endpoint_problem(ep).map_or(Ok(()), |problem| {
        Err(ConfigError::Invalid {
            key: key.into(),
            problem,
        })
    })
}

/// What is wrong with an OTLP endpoint, if anything. Quotes it without its password.
pub(super) fn endpoint_problem(ep: &str) -> Option<String> {
    (!(ep.starts_with("http://") || ep.starts_with("https://"))).then(|| {
        format!(
            "{:?} must start with http:// or https://",
            url_without_password(ep)
        )
    })
}

/// What `Debug` shows for a credential.
pub(super) const HIDDEN: &str = "[REDACTED]";

/// A stand-in the URL parser leaves as it is, swapped for [`HIDDEN`] once printed (the parser
/// would percent-encode `[REDACTED]` into `%5BREDACTED%5D`).
const HIDDEN_IN_URL: &str = "REDACTEDPASSWORD0";

/// Query parameters whose values are credentials in object store and Redis URLs.
const SECRET_QUERY_KEYS: [&str; 8] = [
    "password",
    "secret",
    "token",
    "access_key",
    "secret_access_key",
    "account_key",
    "sas",
    "sig",
];

/// `url` with every credential hidden: the password of its user info and the values of
/// credential query parameters (`?secret_access_key=...`). A URL that does not parse is still
/// cut at its user info (`scheme://user:[REDACTED]@...`): an error must not quote a password
/// just because the URL around it is malformed. The one function every output and error uses
/// for URLs (`check-config`, `Debug`, validation and build errors).
pub fn url_without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some(HIDDEN_IN_URL));
            }
            let secret_query = u.query_pairs().any(|(k, _)| is_secret_key(&k));
            if secret_query {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) {
                            HIDDEN_IN_URL.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string().replace(HIDDEN_IN_URL, HIDDEN)
        }
        Err(_) => hide_userinfo_unparsed(url),
    }
}

/// `text` (an error message from a client library) with `url` and its password hidden
/// wherever it quotes them, whole or in part.
pub fn hide_url_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &url_without_password(url));
    if let Some(password) = password_of(url).filter(|p| !p.is_empty()) {
        out = out.replace(&password, HIDDEN);
    }
    out
}

/// The password in `url`'s user info, parsed or not (`scheme://user:password@host`).
fn password_of(url: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(url) {
        return u.password().map(str::to_owned);
    }
    let (start, at) = userinfo_span(url)?;
    url[start..at].split_once(':').map(|(_, p)| p.to_owned())
}

/// Where the user info of text that looks like a URL lies: `(start, end)` byte offsets, between
/// `://` and the last `@` before the path, query or fragment. For text that does not parse as a
/// URL (the parser's own accessors cover the rest).
fn userinfo_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Some((start, start + authority.rfind('@')?))
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

/// `scheme://user:password@rest` → `scheme://user:[REDACTED]@rest` for text that is not a URL.
fn hide_userinfo_unparsed(text: &str) -> String {
    let Some((start, at)) = userinfo_span(text) else {
        return text.to_owned();
    };
    let userinfo = &text[start..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{}{user}:{HIDDEN}{}", &text[..start], &text[at..])
}

/// The credentials in `headers` and `endpoint` (header values; a URL's password), for the log
/// sanitizer to hide wherever they might surface (an exporter's error message, say).
pub(crate) fn credentials<'a>(
    headers: &'a BTreeMap<String, String>,
    endpoint: Option<&'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = headers.values().cloned().collect();
    for v in headers.values() {
        // `Bearer <token>`: the token alone may surface too.
        if let Some((_, token)) = v.split_once(' ') {
            out.push(token.to_owned());
        }
    }
    if let Some(p) = endpoint.and_then(password_of).filter(|p| !p.is_empty()) {
        out.push(p);
    }
    out
}

pub(super) fn hidden_headers(headers: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    headers.keys().map(|k| (k.as_str(), HIDDEN)).collect()
}
