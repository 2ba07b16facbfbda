//! The payload store: where large payloads wait while only their reference travels.
//!
//! Backed by the `object_store` crate (in-memory and local filesystem built in; S3, GCS and Azure
//! behind the `aws`, `gcp` and `azure` cargo features), so the gateway never hand-writes file or
//! HTTP storage code. Keys are `{tenant_id}/{event_id}.json`.
//!
//! A payload ref is **untrusted input**: it arrives in an envelope that may have crossed a process
//! boundary. [`validate_ref`] refuses a ref that could leave its tenant's prefix (`..`, an
//! absolute path, a backslash, another tenant's key) before anything is read, and every read is
//! bounded in time (`payloads.read_timeout_ms`) and size (`payloads.max_read_bytes`) and must
//! decode as a JSON object.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use uuid::Uuid;

use crate::config::{PayloadStoreKind, PayloadsSection};
use crate::contracts::JsonObject;

pub use crate::contracts::{validate_ref, RefError, MAX_REF_BYTES};

/// The key a payload is offloaded under.
pub fn payload_key(tenant_id: &str, event_id: &Uuid) -> String {
    format!("{tenant_id}/{event_id}.json")
}

/// Why a payload could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The write did not finish within `payloads.write_timeout_ms`.
    #[error("payload store write timed out after {0:?}")]
    Timeout(Duration),
    /// The store refused the write.
    #[error("payload store write failed: {0}")]
    Store(String),
}

/// Why a payload could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The ref was refused without being read.
    #[error(transparent)]
    Refused(#[from] RefError),
    /// No object under that key.
    #[error("payload not found in the store")]
    NotFound,
    /// The read did not finish within `payloads.read_timeout_ms`.
    #[error("payload store read timed out after {0:?}")]
    Timeout(Duration),
    /// The stored object is larger than `payloads.max_read_bytes`.
    #[error("stored payload is {size} bytes, at most {max} allowed")]
    TooLarge {
        /// The object's size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// The object is not a JSON object.
    #[error("stored payload is not a JSON object: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("payload store read failed: {0}")]
    Store(String),
}

/// Why the payload store could not be built from config.
#[derive(Debug, thiserror::Error)]
pub enum StoreBuildError {
    /// `payloads.local_path` could not be created or opened.
    #[error("payloads.local_path {path:?}: {error}")]
    Local {
        /// The directory.
        path: String,
        /// What failed.
        error: String,
    },
    /// `payloads.url` could not be parsed or its backend is not compiled in.
    #[error("payloads.url {url:?}: {error}")]
    Url {
        /// The URL.
        url: String,
        /// What failed.
        error: String,
    },
}

/// The payload store with its time and size bounds.
#[derive(Debug, Clone)]
pub struct PayloadStore {
    store: Arc<dyn ObjectStore>,
    /// For a local directory store: its canonical root. `object_store` follows symlinks even
    /// when they leave the root, so every read is first resolved and checked against it.
    local_root: Option<std::path::PathBuf>,
    write_timeout: Duration,
    read_timeout: Duration,
    max_read_bytes: usize,
    /// For the in-memory store: its byte budget (`payloads.memory_max_bytes`).
    budget: Option<Arc<Budget>>,
    /// The log hygiene of the gateway using the store (set at its start).
    log: Arc<crate::logging::LogScope>,
}

/// The retention of a store that keeps its payloads itself (the in-memory store, the local
/// directory): payloads in the order they were written, with their size and time, and their
/// total. Past the byte budget, or past the age limit, the oldest are deleted. Object stores
/// behind a URL keep their own lifecycle rules.
#[derive(Debug)]
struct Budget {
    max: usize,
    /// Payloads older than this are deleted (the local store); `None`: no age limit.
    max_age: Option<Duration>,
    held: parking_lot::Mutex<(std::collections::VecDeque<Held>, usize)>,
    evicted: std::sync::atomic::AtomicU64,
}

/// One payload the budget knows of.
#[derive(Debug)]
struct Held {
    path: StorePath,
    size: usize,
    written: std::time::SystemTime,
}

impl Budget {
    fn new(max: usize, max_age: Option<Duration>) -> Self {
        Budget {
            max: max.max(1),
            max_age,
            held: parking_lot::Mutex::new(Default::default()),
            evicted: Default::default(),
        }
    }

    /// Notes a payload of `size` bytes written at `path` at `written`; returns the payloads to
    /// delete so that the total fits the budget and none is older than the age limit.
    fn admit(
        &self,
        path: StorePath,
        size: usize,
        written: std::time::SystemTime,
    ) -> Vec<StorePath> {
        let mut held = self.held.lock();
        let (order, total) = &mut *held;
        order.push_back(Held {
            path,
            size,
            written,
        });
        *total += size;
        let now = std::time::SystemTime::now();
        let too_old = |h: &Held| {
            self.max_age.is_some_and(|age| {
                now.duration_since(h.written)
                    .is_ok_and(|elapsed| elapsed > age)
            })
        };
        let mut victims = Vec::new();
        while *total > self.max || order.front().is_some_and(too_old) {
            let Some(h) = order.pop_front() else {
                break;
            };
            *total -= h.size;
            victims.push(h.path);
        }
        self.evicted
            .fetch_add(victims.len() as u64, std::sync::atomic::Ordering::Relaxed);
        victims
    }
}

/// The payloads already in a local store's directory, oldest first, so that its retention
/// covers what earlier runs left. Bounded: at most [`MAX_LOCAL_SCAN`] files are looked at.
fn scan_local(root: &std::path::Path) -> Vec<Held> {
    let mut found = Vec::new();
    let Ok(tenants) = std::fs::read_dir(root) else {
        return found;
    };
    'scan: for tenant in tenants.flatten() {
        let Ok(files) = std::fs::read_dir(tenant.path()) else {
            continue;
        };
        for f in files.flatten() {
            if found.len() >= MAX_LOCAL_SCAN {
                break 'scan;
            }
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let key = format!(
                "{}/{}",
                tenant.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            if let Ok(path) = StorePath::parse(&key) {
                found.push(Held {
                    path,
                    size: meta.len() as usize,
                    written: meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                });
            }
        }
    }
    found.sort_by_key(|h| h.written);
    found
}

/// The most files a local store's start-up scan looks at.
const MAX_LOCAL_SCAN: usize = 1_000_000;

impl PayloadStore {
    /// Wraps any `object_store` backend (hosts and tests can inject their own).
    pub fn new(store: Arc<dyn ObjectStore>, cfg: &PayloadsSection) -> Self {
        PayloadStore {
            store,
            local_root: None,
            write_timeout: Duration::from_millis(cfg.write_timeout_ms),
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            max_read_bytes: cfg.max_read_bytes,
            budget: None,
            log: Arc::default(),
        }
    }

    /// The store as used by one gateway: its warnings go through that gateway's `log` scope.
    pub(crate) fn with_log(mut self, log: Arc<crate::logging::LogScope>) -> Self {
        self.log = log;
        self
    }

    /// The in-process store, holding at most `payloads.memory_max_bytes` of payloads (the
    /// oldest are deleted first).
    pub fn memory(cfg: &PayloadsSection) -> Self {
        let mut s = Self::new(Arc::new(InMemory::new()), cfg);
        s.budget = Some(Arc::new(Budget::new(cfg.memory_max_bytes, None)));
        s
    }

    /// Payloads deleted to keep the store within its retention: `payloads.memory_max_bytes` for
    /// the in-memory store, `payloads.local_max_bytes` and `local_max_age_secs` for the local
    /// directory (always 0 for a URL store, whose own lifecycle rules apply).
    pub fn evicted(&self) -> u64 {
        self.budget
            .as_ref()
            .map_or(0, |b| b.evicted.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A local directory store at `root` (created when missing). Reads are confined to the
    /// directory: a ref that resolves outside it, through a symlink, is refused unread.
    pub fn local(root: &std::path::Path, cfg: &PayloadsSection) -> Result<Self, StoreBuildError> {
        let local_err = |e: &dyn std::fmt::Display| StoreBuildError::Local {
            path: root.display().to_string(),
            error: e.to_string(),
        };
        std::fs::create_dir_all(root).map_err(|e| local_err(&e))?;
        let canonical = std::fs::canonicalize(root).map_err(|e| local_err(&e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&canonical)
            .map_err(|e| local_err(&e))?;
        let mut s = Self::new(Arc::new(fs), cfg);
        // Retention by bytes and age: what earlier runs left counts, oldest first, and what is
        // past the limits now is deleted at once.
        let budget = Budget::new(
            cfg.local_max_bytes,
            Some(Duration::from_secs(cfg.local_max_age_secs)),
        );
        let mut stale = Vec::new();
        for h in scan_local(&canonical) {
            stale.extend(budget.admit(h.path, h.size, h.written));
        }
        for p in stale {
            let _ = std::fs::remove_file(canonical.join(p.as_ref()));
        }
        s.budget = Some(Arc::new(budget));
        s.local_root = Some(canonical);
        Ok(s)
    }

    /// Builds the store named by `payloads.store`.
    pub fn from_config(cfg: &PayloadsSection) -> Result<Self, StoreBuildError> {
        let store: Arc<dyn ObjectStore> = match cfg.store {
            PayloadStoreKind::Memory => return Ok(Self::memory(cfg)),
            PayloadStoreKind::Local => return Self::local(&cfg.local_path, cfg),
            PayloadStoreKind::Url => {
                let raw = cfg.url.clone().unwrap_or_default();
                // Never the URL's credentials (a password, a secret query parameter).
                let url_err = |e: &dyn std::fmt::Display| StoreBuildError::Url {
                    url: crate::config::url_without_password(&raw),
                    error: crate::config::hide_url_in(&e.to_string(), &raw),
                };
                let url = url::Url::parse(&raw).map_err(|e| url_err(&e))?;
                // Cloud credentials come from the usual environment variables of each backend.
                let opts = std::env::vars().filter_map(|(k, v)| {
                    let lk = k.to_ascii_lowercase();
                    (lk.starts_with("aws_")
                        || lk.starts_with("google_")
                        || lk.starts_with("azure_"))
                    .then_some((lk, v))
                });
                let (store, prefix) =
                    object_store::parse_url_opts(&url, opts).map_err(|e| url_err(&e))?;
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            }
        };
        Ok(Self::new(store, cfg))
    }

    /// Writes `json` (serialized payload bytes) under `{tenant_id}/{event_id}.json` and returns
    /// the ref.
    pub async fn put(
        &self,
        tenant_id: &str,
        event_id: &Uuid,
        json: Bytes,
    ) -> Result<String, OffloadError> {
        let key = payload_key(tenant_id, event_id);
        let path = StorePath::parse(&key).map_err(|e| OffloadError::Store(e.to_string()))?;
        let size = json.len();
        if let Some(b) = &self.budget {
            if size > b.max {
                let key = if self.local_root.is_some() {
                    "payloads.local_max_bytes"
                } else {
                    "payloads.memory_max_bytes"
                };
                return Err(OffloadError::Store(format!(
                    "payload of {size} bytes is larger than {key} ({})",
                    b.max
                )));
            }
        }
        match tokio::time::timeout(
            self.write_timeout,
            self.store.put(&path, PutPayload::from(json)),
        )
        .await
        {
            Ok(Ok(_)) => {
                if let Some(b) = &self.budget {
                    let victims = b.admit(path, size, std::time::SystemTime::now());
                    if !victims.is_empty() {
                        self.log.warn_limited(
                            "payload store full or expired; oldest payloads deleted",
                            || {
                                tracing::warn!(
                                    deleted = victims.len(),
                                    max_bytes = b.max,
                                    "payload store retention: oldest payloads deleted \
                                     (payloads.memory_max_bytes, or payloads.local_max_bytes \
                                     and local_max_age_secs)"
                                )
                            },
                        );
                    }
                    for v in victims {
                        // A delete that fails leaves a file behind, never an error for this
                        // write; it is not retried (the next start's scan sees it again).
                        let _ = self.store.delete(&v).await;
                    }
                }
                Ok(key)
            }
            Ok(Err(e)) => Err(OffloadError::Store(e.to_string())),
            Err(_) => Err(OffloadError::Timeout(self.write_timeout)),
        }
    }

    /// Reads the payload behind `r`, after checking that `r` belongs to `tenant_id`.
    pub async fn get(&self, tenant_id: &str, r: &str) -> Result<JsonObject, ReadError> {
        validate_ref(tenant_id, r)?;
        let path = StorePath::parse(r).map_err(|_| ReadError::Refused(RefError::Traversal))?;
        let max = self.max_read_bytes;
        let read = async {
            if let Some(root) = &self.local_root {
                // Resolve symlinks without opening the target; a missing file falls through to
                // the store's own NotFound.
                if let Ok(resolved) = tokio::fs::canonicalize(root.join(r)).await {
                    if !resolved.starts_with(root) {
                        return Err(ReadError::Refused(RefError::OutsideRoot));
                    }
                }
            }
            let got = self.store.get(&path).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => ReadError::NotFound,
                other => ReadError::Store(other.to_string()),
            })?;
            if got.meta.size > max as u64 {
                return Err(ReadError::TooLarge {
                    size: got.meta.size,
                    max,
                });
            }
            got.bytes()
                .await
                .map_err(|e| ReadError::Store(e.to_string()))
        };
        let bytes = match tokio::time::timeout(self.read_timeout, read).await {
            Ok(r) => r?,
            Err(_) => return Err(ReadError::Timeout(self.read_timeout)),
        };
        if bytes.len() > max {
            return Err(ReadError::TooLarge {
                size: bytes.len() as u64,
                max,
            });
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(o)) => Ok(o),
            Ok(_) => Err(ReadError::Corrupt("not an object".into())),
            Err(e) => Err(ReadError::Corrupt(e.to_string())),
        }
    }

    /// Writes raw bytes under a key, bypassing the tenant layout (tests use it to plant corrupt
    /// or oversized blobs).
    pub async fn put_raw(&self, key: &str, bytes: Bytes) -> Result<(), OffloadError> {
        let path = StorePath::parse(key).map_err(|e| OffloadError::Store(e.to_string()))?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| OffloadError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_inside_the_tenant_are_accepted() {
        validate_ref("t1", "t1/0190c3a4-0000-7000-8000-000000000000.json").unwrap();
        validate_ref("t1", "t1/sub/x.json").unwrap();
    }

    #[test]
    fn escaping_refs_are_refused() {
        let cases = [
            ("", RefError::Empty),
            ("/etc/passwd", RefError::Absolute),
            ("C:/x", RefError::Absolute),
            ("t1/../t2/x.json", RefError::Traversal),
            ("../t1/x.json", RefError::Traversal),
            ("t1//x.json", RefError::Traversal),
            ("t1/./x.json", RefError::Traversal),
            ("t1\\..\\x", RefError::Traversal),
            ("t2/x.json", RefError::OtherTenant),
            ("t1", RefError::OtherTenant),
            ("t10/x.json", RefError::OtherTenant),
            ("t1/x%2e%2e.json", RefError::BadCharacter),
        ];
        for (r, want) in cases {
            assert_eq!(validate_ref("t1", r), Err(want), "{r}");
        }
        assert!(matches!(
            validate_ref("t1", &format!("t1/{}", "a".repeat(600))),
            Err(RefError::TooLong(_))
        ));
    }

    #[tokio::test]
    async fn the_memory_store_keeps_within_its_byte_budget_oldest_out_first() {
        let cfg = PayloadsSection {
            memory_max_bytes: 1000,
            ..Default::default()
        };
        let store = PayloadStore::memory(&cfg);
        let payload = |n: usize| Bytes::from(format!(r#"{{"x":"{}"}}"#, "y".repeat(n - 8)));
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let mut refs = Vec::new();
        for id in &ids {
            refs.push(store.put("t", id, payload(400)).await.unwrap());
        }
        // 3 x 400 > 1000: the first one went, the later two are held.
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.get("t", &refs[0]).await, Err(ReadError::NotFound));
        assert!(store.get("t", &refs[1]).await.is_ok());
        assert!(store.get("t", &refs[2]).await.is_ok());
        // A payload larger than the whole budget is not stored at all.
        let err = store.put("t", &Uuid::now_v7(), payload(1001)).await;
        assert!(
            matches!(&err, Err(OffloadError::Store(m)) if m.contains("payloads.memory_max_bytes")),
            "{err:?}"
        );
        assert_eq!(store.evicted(), 1, "nothing evicted for a refused payload");
    }

    #[tokio::test]
    async fn put_then_get_round_trips_and_bounds_hold() {
        let cfg = PayloadsSection {
            max_read_bytes: 64,
            ..Default::default()
        };
        let store = PayloadStore::new(Arc::new(InMemory::new()), &cfg);
        let id = Uuid::now_v7();
        let r = store
            .put("t1", &id, Bytes::from_static(br#"{"a":1}"#))
            .await
            .unwrap();
        assert_eq!(r, format!("t1/{id}.json"));
        assert_eq!(store.get("t1", &r).await.unwrap()["a"], 1);
        assert_eq!(
            store.get("t2", &r).await,
            Err(ReadError::Refused(RefError::OtherTenant))
        );
        assert_eq!(
            store.get("t1", "t1/missing.json").await,
            Err(ReadError::NotFound)
        );
        store
            .put_raw("t1/corrupt.json", Bytes::from_static(b"\x80\x04pickle"))
            .await
            .unwrap();
        assert!(matches!(
            store.get("t1", "t1/corrupt.json").await,
            Err(ReadError::Corrupt(_))
        ));
        store
            .put_raw("t1/big.json", Bytes::from(vec![b' '; 100]))
            .await
            .unwrap();
        assert!(matches!(
            store.get("t1", "t1/big.json").await,
            Err(ReadError::TooLarge { size: 100, max: 64 })
        ));
    }
}
