//! Configuration: built-in defaults, then a TOML file, then environment variables.
//!
//! One struct per TOML section, every default a named constant (a test asserts that
//! `config/gateway.toml` states the same values). Loading follows Figment's "for library
//! authors" pattern: [`GatewayConfig::figment`] merges defaults, the file and
//! `TELEMETRY_GATEWAY__<SECTION>__<KEY>` variables, and [`GatewayConfig::load`] extracts and
//! validates. Unknown keys and bad values fail at start with an error naming the key.
//!
//! The key names `otlp.endpoint`, `otlp.protocol`, `dedup.backend`, `dedup.redis_url`,
//! `dedup.ttl_secs`, `gateway.enabled`, `gateway.enterprise_enabled` and
//! `payloads.inline_threshold_bytes` are relied on by other tooling: never rename them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod cases;
mod ceilings;
mod dedup;
mod diagnostics;
mod error;
mod export;
mod gateway;
mod logging;
mod metric_pool;
mod otel_env;
mod otlp;
mod payloads;
mod redaction;
mod retry;
mod shutdown;
mod sinks;
mod slo;
mod spool;
mod trace_batcher;
mod transport;
mod urls;

pub use cases::*;
pub use ceilings::*;
pub use dedup::*;
pub use diagnostics::*;
pub use error::ConfigError;
pub use export::*;
pub use gateway::*;
pub use logging::*;
pub use metric_pool::*;
pub use otlp::*;
pub use payloads::*;
pub use redaction::*;
pub use retry::*;
pub use shutdown::*;
pub use sinks::*;
pub use slo::*;
pub use spool::*;
pub use trace_batcher::*;
pub use transport::*;
pub(crate) use urls::credentials;
use urls::HIDDEN;
pub use urls::{hide_url_in, url_without_password};

/// Prefix of environment overrides: `TELEMETRY_GATEWAY__OTLP__ENDPOINT` sets `otlp.endpoint`.
pub const ENV_PREFIX: &str = "TELEMETRY_GATEWAY__";

/// Keys whose values are text even when they look like numbers or booleans: an environment
/// override of one of them is taken as the raw text (so `0012345` keeps its zeros and never fails
/// to parse). Every `otlp.headers.<name>` and `export.resource_attributes.<name>` is one too.
pub const STRING_KEYS: [&str; 16] = [
    "otlp.endpoint",
    "otlp.api_key",
    "dedup.redis_url",
    "dedup.key_prefix",
    "export.namespace",
    "export.service_name",
    "export.file_path",
    "payloads.url",
    "payloads.local_path",
    "redaction.replacement",
    "diagnostics.listen",
    "transport.redis_url",
    "transport.stream",
    "transport.group",
    "transport.consumer",
    "sinks.sqlite.path",
];

/// The whole configuration. Each field is one TOML section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `[gateway]`: the entrance.
    pub gateway: GatewaySection,
    /// `[cases.<name>]`: overrides of the built-in routing table and host-declared cases.
    pub cases: BTreeMap<String, CaseSection>,
    /// `[payloads]`: large-payload offload.
    pub payloads: PayloadsSection,
    /// `[trace_batcher]`: the trace path.
    pub trace_batcher: TraceBatcherSection,
    /// `[metric_pool]`: the metric/log handler pool.
    pub metric_pool: MetricPoolSection,
    /// `[dedup]`: idempotency.
    pub dedup: DedupSection,
    /// `[otlp]`: the enterprise exporter.
    pub otlp: OtlpSection,
    /// `[export]`: naming, content policy, the local file output and the log batcher.
    pub export: ExportSection,
    /// `[[sinks]]` (community trace sinks per tenant/app) and `[sinks.sqlite]`.
    pub sinks: SinksConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownSection,
    /// `[diagnostics]`: the flight recorder, the HTTP endpoint, readiness.
    pub diagnostics: DiagnosticsSection,
    /// `[logging]`: the gateway's own log lines.
    pub logging: LoggingSection,
    /// `[redaction]`: what never leaves the process.
    pub redaction: RedactionSection,
    /// `[retry]`: how exports ride out a failing backend.
    pub retry: RetrySection,
    /// `[spool]`: where the enterprise destination's export requests wait while the backend is
    /// away (memory, or a durable queue on disk).
    pub spool: SpoolSection,
    /// `[transport]`: how metric/log events reach the handler pool (in process, or through a
    /// Redis stream to worker processes).
    pub transport: TransportSection,
    /// `[slo.<case>]`: service-level objectives `telemetry-gateway slo` checks against the
    /// SQLite sink's data (docs/local-analytics.md).
    pub slo: BTreeMap<String, SloSection>,
}

impl GatewayConfig {
    /// Defaults, then the standard `OTEL_*` variables (`OTEL_SERVICE_NAME`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, ...: see docs/configuration.md), then the TOML file at
    /// `path` (when given), then `TELEMETRY_GATEWAY__*` environment variables.
    pub fn figment(path: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(GatewayConfig::default()))
            .merge(otel_env::OtelEnv::from_env());
        if let Some(p) = path {
            f = f.merge(Toml::file_exact(p));
        }
        f = f.merge(Env::prefixed(ENV_PREFIX).split("__"));
        // Figment parses every environment value (`0012` becomes the number 12, `true` a bool).
        // String-typed keys are merged again as the raw text, so an all-digit API key or header
        // value is kept exactly and never fails to parse (a parse error would echo the value).
        for (key, value) in std::env::vars() {
            let Some(rest) = key
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &key[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let path = rest
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_ascii_lowercase();
            if STRING_KEYS.contains(&path.as_str())
                || path.starts_with("otlp.headers.")
                || path.starts_with("export.resource_attributes.")
            {
                f = f.merge(Serialized::default(&path, value));
            }
        }
        f
    }

    /// Loads and validates: see [`figment`](Self::figment).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(path))
    }

    /// Extracts and validates from any figment (for hosts with their own providers).
    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let cfg: GatewayConfig = f.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string on top of the defaults (no environment), for tests and examples.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(GatewayConfig::default())).merge(Toml::string(toml)),
        )
    }

    /// Checks every range and cross-key rule, naming the key at fault. Each section checks its
    /// own keys (`validate` beside its struct); only rules across sections are here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A part this build does not have is the first thing to say: no other rule about it
        // can be met.
        self.check_features()?;
        // No configured number is so large that arithmetic on it could overflow or an
        // allocation sized by it could abort.
        self.check_ceilings()?;
        self.gateway.validate()?;
        self.payloads.validate()?;
        self.trace_batcher.validate()?;
        self.metric_pool.validate()?;
        self.dedup.validate()?;
        self.otlp.validate()?;
        self.export.validate()?;
        self.shutdown.validate()?;
        self.transport.validate()?;
        self.check_cross_keys()?;
        for (name, slo) in &self.slo {
            slo.validate(name)?;
        }
        for (name, case) in &self.cases {
            case.validate(name)?;
        }
        self.diagnostics.validate()?;
        self.retry.validate()?;
        self.spool.validate()?;
        self.logging.validate()?;
        self.redaction.validate()?;
        self.sinks.validate()
    }

    /// How many spools share what `spool.tenant_share_percent` leaves of `spool.max_bytes`:
    /// the enterprise destination's spans and log records, and with
    /// `transport.kind = "redis_streams"` the stream producer's buffer.
    pub fn enterprise_spools(&self) -> u64 {
        match self.transport.kind {
            TransportKind::RedisStreams => 3,
            TransportKind::InProcess => 2,
        }
    }

    /// The budget of each of [`enterprise_spools`](Self::enterprise_spools).
    pub fn enterprise_spool_budget(&self) -> u64 {
        self.spool.enterprise_budget(self.enterprise_spools())
    }

    /// The rules that join two sections.
    fn check_cross_keys(&self) -> Result<(), ConfigError> {
        if self.spool.kind == SpoolKind::Disk
            && (self.otlp.endpoint.is_none() || !self.gateway.enterprise_enabled)
        {
            return Err(ConfigError::invalid(
                "spool.kind",
                "\"disk\" needs the enterprise OTLP exporter (otlp.endpoint set, \
                 gateway.enterprise_enabled = true): the spool holds OTLP export requests",
            ));
        }
        let budget = self.enterprise_spool_budget();
        if self.spool.kind == SpoolKind::Disk && budget < MIN_SPOOL_BUDGET_BYTES {
            return Err(ConfigError::invalid(
                "spool.max_bytes",
                format!(
                    "leaves {budget} bytes to each of the {} spools of the enterprise \
                     destination (and the Redis Streams producer) after \
                     spool.tenant_share_percent; each needs at least {MIN_SPOOL_BUDGET_BYTES}",
                    self.enterprise_spools()
                ),
            ));
        }
        let tenant_budget = self.spool.tenant_budget(self.trace_batcher.max_live_sinks);
        if self.spool.kind == SpoolKind::Disk
            && self.spool.tenant_share_percent > 0
            && tenant_budget < MIN_SPOOL_BUDGET_BYTES
        {
            return Err(ConfigError::invalid(
                "spool.tenant_share_percent",
                format!(
                    "gives each of trace_batcher.max_live_sinks ({}) tenant spools {tenant_budget} \
                     bytes of spool.max_bytes; each needs at least {MIN_SPOOL_BUDGET_BYTES} \
                     (raise the share or spool.max_bytes, lower max_live_sinks, or set 0 to \
                     keep tenant sinks in memory)",
                    self.trace_batcher.max_live_sinks
                ),
            ));
        }
        if self.transport.kind == TransportKind::RedisStreams
            && self.dedup.backend == DedupBackendKind::Memory
        {
            return Err(ConfigError::invalid(
                "dedup.backend",
                "must be \"redis\" with transport.kind = \"redis_streams\": a memory cache \
                 cannot see the events other workers handled, so a redelivered event would \
                 count twice",
            ));
        }
        Ok(())
    }

    /// Every numeric key against its ceiling ([`ceiling_of`]), found by walking the serialized
    /// configuration, so a key added later is covered without a line here.
    fn check_ceilings(&self) -> Result<(), ConfigError> {
        fn walk(prefix: &str, v: &figment::value::Value) -> Result<(), ConfigError> {
            use figment::value::Value;
            match v {
                Value::Dict(_, d) => d.iter().try_for_each(|(k, v)| {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v)
                }),
                Value::Array(_, a) => a
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, v)| walk(&format!("{prefix}[{i}]"), v)),
                Value::Num(_, n) => match (n.to_u128(), ceiling_of(prefix)) {
                    (Some(value), (max, what)) if value > u128::from(max) => {
                        Err(ConfigError::Invalid {
                            key: prefix.to_owned(),
                            problem: format!("{value} is too large: at most {max} ({what})"),
                        })
                    }
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        }
        // A config that cannot be serialized has nothing numeric to check.
        match figment::value::Value::serialize(self) {
            Ok(v) => walk("", &v),
            Err(_) => Ok(()),
        }
    }

    /// A part this build left out (its cargo feature is off) cannot be configured: the error
    /// names the key and the feature to enable.
    fn check_features(&self) -> Result<(), ConfigError> {
        let needs = |key: &str, what: &str, feature: &str| ConfigError::Invalid {
            key: key.into(),
            problem: format!(
                "{what} needs the cargo feature `{feature}` of telemetry-gateway, which this \
                 build does not have (add `features = [\"{feature}\"]` to the dependency)"
            ),
        };
        if !cfg!(feature = "redis") {
            if self.dedup.backend == DedupBackendKind::Redis {
                return Err(needs("dedup.backend", "\"redis\"", "redis"));
            }
            if self.transport.kind == TransportKind::RedisStreams {
                return Err(needs("transport.kind", "\"redis_streams\"", "redis"));
            }
        }
        if !cfg!(feature = "analytics") && self.sinks.sqlite.is_some() {
            return Err(needs("sinks.sqlite", "the SQLite sink", "analytics"));
        }
        Ok(())
    }

    /// `dedup.timeout_ms` as a duration.
    pub fn dedup_timeout(&self) -> Duration {
        Duration::from_millis(self.dedup.timeout_ms)
    }
}

impl GatewayConfig {
    /// A copy with every credential replaced by `[REDACTED]`: `otlp.api_key`, header values
    /// (`otlp.headers`, each tenant sink's `headers`), and the passwords and secret query
    /// parameters of every URL (`otlp.endpoint`, `sinks[i].endpoint`, `dedup.redis_url`,
    /// `transport.redis_url`, `payloads.url`). For printing (`telemetry-gateway check-config`);
    /// `Debug` hides the same.
    pub fn with_credentials_hidden(&self) -> GatewayConfig {
        let mut c = self.clone();
        let hide = |h: &mut BTreeMap<String, String>| {
            h.values_mut().for_each(|v| *v = HIDDEN.to_owned());
        };
        if let Some(k) = c.otlp.api_key.as_mut() {
            *k = HIDDEN.to_owned();
        }
        hide(&mut c.otlp.headers);
        c.otlp.endpoint = c.otlp.endpoint.as_deref().map(url_without_password);
        for s in &mut c.sinks.tenants {
            hide(&mut s.headers);
            s.endpoint = s.endpoint.as_deref().map(url_without_password);
        }
        c.dedup.redis_url = url_without_password(&c.dedup.redis_url);
        c.transport.redis_url = url_without_password(&c.transport.redis_url);
        c.payloads.url = c.payloads.url.as_deref().map(url_without_password);
        c
    }
}

#[cfg(test)]
// Figment's `Jail` closures return figment's own (large) error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_endpoint_is_named_without_its_password() {
        let c = GatewayConfig::from_toml_str(
            "[otlp]\nendpoint = \"grpc://user:pw-0123456789@collector:4317\"\n",
        );
        let err = c.unwrap_err().to_string();
        assert!(
            err.contains("otlp.endpoint") && err.contains("collector"),
            "{err}"
        );
        assert!(!err.contains("pw-0123456789"), "{err}");
    }
    use figment::Jail;

    #[test]
    fn the_tenant_share_of_the_spool_is_checked_and_named() {
        let spool = |extra: &str| {
            GatewayConfig::from_toml_str(&format!(
                "[otlp]\nendpoint = \"http://collector:4317\"\n[spool]\nkind = \"disk\"\n\
                 path = \"/tmp/spool\"\n{extra}"
            ))
        };
        let err = spool("tenant_share_percent = 91\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spool.tenant_share_percent") && err.contains("at most 90"),
            "{err}"
        );
        // 20% of 8 MiB over 64 live sinks: 26,214 bytes each, under the 256 KiB minimum.
        let err = spool("max_bytes = 8388608\nsegment_bytes = 1048576\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spool.tenant_share_percent")
                && err.contains("trace_batcher.max_live_sinks (64)")
                && err.contains("26214 bytes"),
            "{err}"
        );
        // 0 keeps tenant sinks in memory: no share to check; the enterprise spools get half each.
        let c = spool("max_bytes = 8388608\nsegment_bytes = 1048576\ntenant_share_percent = 0\n")
            .unwrap();
        assert_eq!(c.enterprise_spool_budget(), 4 << 20);
        assert_eq!(c.spool.segment_for(c.enterprise_spool_budget()), 1 << 20);
        let c = spool("").unwrap();
        assert_eq!(c.spool.tenant_budget(64), (1u64 << 30) / 5 / 64);
        assert_eq!(
            c.spool.segment_for(c.spool.tenant_budget(64)),
            (1u64 << 30) / 5 / 64 / 4,
            "a small share gets smaller segments"
        );
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let c = GatewayConfig::default();
        assert_eq!(c.payloads.inline_threshold_bytes, 1024 * 1024);
        assert_eq!(c.dedup.ttl_secs, 3600);
        assert_eq!(c.dedup.key_prefix, "telemetry:dedup");
        assert_eq!(c.dedup.timeout_ms, 50);
        assert_eq!(c.export.namespace, "app");
        assert_eq!(c.dedup.backend, DedupBackendKind::Memory);
        assert!(c.otlp.endpoint.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                r#"
                [otlp]
                endpoint = "http://file:4317"
                [dedup]
                ttl_secs = 60
                "#,
            )?;
            jail.set_env("TELEMETRY_GATEWAY__OTLP__ENDPOINT", "http://env:4317");
            jail.set_env("TELEMETRY_GATEWAY__GATEWAY__ENABLED", "false");
            let c = GatewayConfig::load(Some(Path::new("gw.toml"))).unwrap();
            assert_eq!(c.otlp.endpoint.as_deref(), Some("http://env:4317"));
            assert_eq!(c.dedup.ttl_secs, 60);
            assert!(!c.gateway.enabled);
            assert_eq!(c.dedup.timeout_ms, DEFAULT_DEDUP_TIMEOUT_MS);
            Ok(())
        });
    }

    #[test]
    fn env_strings_that_look_like_numbers_stay_strings() {
        Jail::expect_with(|jail| {
            jail.set_env("TELEMETRY_GATEWAY__OTLP__API_KEY", "0012345");
            jail.set_env("TELEMETRY_GATEWAY__OTLP__HEADERS__X_TENANT", "42");
            jail.set_env("TELEMETRY_GATEWAY__DEDUP__KEY_PREFIX", "true");
            jail.set_env("TELEMETRY_GATEWAY__REDACTION__REPLACEMENT", "[HIDDEN]");
            let c = GatewayConfig::load(None).unwrap();
            assert_eq!(c.otlp.api_key.as_deref(), Some("0012345"));
            assert_eq!(
                c.otlp.headers.get("x_tenant").map(String::as_str),
                Some("42")
            );
            assert_eq!(c.dedup.key_prefix, "true");
            assert_eq!(c.redaction.replacement, "[HIDDEN]");
            // Typed keys are still typed.
            jail.set_env("TELEMETRY_GATEWAY__DEDUP__TTL_SECS", "abc");
            let err = GatewayConfig::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("dedup.ttl_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        let err = GatewayConfig::from_toml_str("[dedup]\nttl_sec = 5\n").unwrap_err();
        assert!(err.to_string().contains("ttl_sec"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("TELEMETRY_GATEWAY__OTLP__ENDPONT", "http://x:1");
            let err = GatewayConfig::load(None).unwrap_err();
            assert!(err.to_string().contains("endpont"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[metric_pool]\npool_size = 0\n", "metric_pool.pool_size"),
            ("[otlp]\nsampling_ratio = 1.5\n", "otlp.sampling_ratio"),
            ("[otlp]\nendpoint = \"localhost:4317\"\n", "otlp.endpoint"),
            ("[otlp]\nprotocol = \"thrift\"\n", "protocol"),
            ("[dedup]\nbackend = \"memcached\"\n", "backend"),
            (
                "[cases.billing]\nenterprise_only = true\n",
                "cases.billing.signal",
            ),
            ("[export]\nnamespace = \"My App\"\n", "export.namespace"),
        ];
        for (toml, key) in cases {
            let err = GatewayConfig::from_toml_str(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn shipped_config_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let from_file = GatewayConfig::from_figment(
            Figment::from(Serialized::defaults(GatewayConfig::default()))
                .merge(Toml::string(&text)),
        )
        .unwrap();
        assert_eq!(from_file, GatewayConfig::default());
        // Every key of every section is spelled out in the file (as a value or, for keys whose
        // default is "unset", as a commented example), so the file is the reference.
        let defaults = figment::value::Value::serialize(GatewayConfig::default()).unwrap();
        let dict = defaults.into_dict().unwrap();
        for (section, value) in dict {
            let Some(keys) = value.into_dict() else {
                continue;
            };
            assert!(
                text.contains(&format!("[{section}]")) || text.contains(&format!("[[{section}]]")),
                "config/gateway.toml lacks section [{section}]"
            );
            for key in keys.keys() {
                let found = text.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim();
                    l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
                });
                assert!(found, "config/gateway.toml lacks key {section}.{key}");
            }
        }
    }
}
