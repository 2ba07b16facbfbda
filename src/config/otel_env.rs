//! The OpenTelemetry SDK's standard environment variables, read as defaults beneath the
//! gateway's own configuration.
//!
//! Precedence, lowest first: the built-in defaults, then these `OTEL_*` variables, then the TOML
//! file, then `TELEMETRY_GATEWAY__*` variables. So a platform that sets `OTEL_SERVICE_NAME` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` for every service configures the gateway too, and the gateway's
//! own file or variables still win.
//!
//! | variable | key |
//! |---|---|
//! | `OTEL_SERVICE_NAME` | `export.service_name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-decoded) | `export.resource_attributes` (its `service.name` gives `export.service_name` when `OTEL_SERVICE_NAME` is unset) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `otlp.endpoint` |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, `http/protobuf`) | `otlp.protocol` |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values percent-decoded) | `otlp.headers` |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds) | `otlp.timeout_ms` |
//!
//! The per-signal forms (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, ...) are not read: the gateway
//! sends its three signals to one collector endpoint, so a per-signal value has nowhere to go.
//! A value that does not parse (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) fails the load with
//! the key and the variable named.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The variables read, with the dotted key each sets.
const VARIABLES: [(&str, &str); 6] = [
    ("OTEL_SERVICE_NAME", "export.service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "export.resource_attributes"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp.endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "otlp.protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "otlp.headers"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "otlp.timeout_ms"),
];

/// A figment provider of the `OTEL_*` variables (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct OtelEnv {
    /// (dotted key, value), in [`VARIABLES`] order.
    values: Vec<(&'static str, Value)>,
}

impl OtelEnv {
    /// Reads the variables from this process's environment.
    pub(crate) fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (tests pass a map).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut values = Vec::new();
        let mut resource = get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_pairs(&v))
            .unwrap_or_default();
        // The spec: OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES, and
        // the gateway keeps service.name in its own key either way.
        let from_resource = resource.remove("service.name");
        resource.remove("service.instance.id");
        if let Some(name) = get("OTEL_SERVICE_NAME").or(from_resource) {
            values.push(("export.service_name", Value::from(name)));
        }
        if !resource.is_empty() {
            values.push(("export.resource_attributes", string_map(resource)));
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            values.push(("otlp.endpoint", Value::from(v.trim().to_owned())));
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            values.push(("otlp.protocol", Value::from(v.trim().to_owned())));
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_HEADERS") {
            values.push(("otlp.headers", string_map(parse_pairs(&v))));
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            // A number when it is one; otherwise the text, so that extraction fails naming the
            // key and this variable.
            let value = match v.trim().parse::<u64>() {
                Ok(ms) => Value::from(ms),
                Err(_) => Value::from(v),
            };
            values.push(("otlp.timeout_ms", value));
        }
        OtelEnv { values }
    }
}

/// `k=v,k2=v2` as the OTel spec writes lists (headers, resource attributes): pairs split on
/// `,`, key and value on the first `=`, both trimmed, the value percent-decoded. A pair without
/// `=` or with an empty key is skipped.
fn parse_pairs(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

/// Decodes `%XX` escapes; anything else (a lone `%`, bad hex) is kept as written, and text whose
/// decoded bytes are not UTF-8 is kept whole.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_or_else(|_| text.to_owned(), std::borrow::Cow::into_owned)
}

fn string_map(m: BTreeMap<String, String>) -> Value {
    let dict: Dict = m.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    Value::from(dict)
}

/// The variable that sets a dotted key (for error messages).
fn variable_of(key: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|(_, k)| key == *k || key.starts_with(&format!("{k}.")))
        .map(|(v, _)| *v)
}

impl Provider for OtelEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named("OTEL_* environment variable(s)").interpolater(|_profile, keys| {
            let key = keys.join(".");
            variable_of(&key).map_or(key, str::to_owned)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut root = Dict::new();
        for (key, value) in &self.values {
            let (section, field) = key.split_once('.').unwrap_or((key, ""));
            let entry = root
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, dict) = entry {
                dict.insert(field.to_owned(), value.clone());
            }
        }
        let mut map = Map::new();
        map.insert(Profile::Default, root);
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_trim_and_percent_decode_as_the_spec_says() {
        let m = parse_pairs(" a = 1 ,b=x%2Cy%3Dz, =skipped,nokey, c=%zz%");
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("x,y=z"));
        assert_eq!(m.get("c").map(String::as_str), Some("%zz%"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn service_name_wins_over_the_resource_attribute_and_instance_id_is_never_taken() {
        let vars: BTreeMap<&str, &str> = [
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=other,deployment.environment=prod,service.instance.id=x",
            ),
        ]
        .into_iter()
        .collect();
        let env = OtelEnv::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned()));
        assert_eq!(
            env.values[0],
            ("export.service_name", Value::from("checkout"))
        );
        let Value::Dict(_, attrs) = &env.values[1].1 else {
            panic!("resource attributes are a table");
        };
        assert_eq!(attrs.len(), 1, "{attrs:?}");
        assert!(attrs.contains_key("deployment.environment"));
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            variable_of("otlp.headers.x-key"),
            Some("OTEL_EXPORTER_OTLP_HEADERS")
        );
        assert_eq!(
            variable_of("otlp.protocol"),
            Some("OTEL_EXPORTER_OTLP_PROTOCOL")
        );
        assert_eq!(variable_of("otlp.api_key"), None);
    }
}
