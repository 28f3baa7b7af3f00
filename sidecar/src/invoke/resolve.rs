//! Name resolution: where another app's sidecar listens for sidecar-to-sidecar calls.
//!
//! - `kubernetes` (kubernetes mode): `<id>-dapr.<namespace>.svc.<cluster-domain>:<port>`, the
//!   port being our own internal port (every sidecar uses the same, 50002 from the injector);
//!   the cluster domain is `cluster.local` unless Configuration
//!   `spec.nameResolution.configuration.clusterDomain` says otherwise.
//! - `registry` (self-hosted, daprs): a directory every daprd on the machine shares (default
//!   `$HOME/.dapr/registry`), one file per app, `<namespace>/<app-id>.json` holding
//!   `{"address": "127.0.0.1:47321", "pid": 1234}`. Each daprd writes its own file when its
//!   internal server listens and removes it when it stops; an entry whose process is gone is
//!   ignored. No multicast is needed, so it works on any laptop. A resolved entry is
//!   remembered for [`REGISTRY_CACHE_TTL`] (reading and parsing the file and checking the
//!   process cost several system calls per call otherwise). The registry directory is watched
//!   (inotify on Linux): any change in it (a daprd starting, stopping or re-registering)
//!   forgets everything remembered, so a call needs no system call at all and still sees a
//!   rewritten entry as soon as the file system reports it. Where the directory cannot be
//!   watched, each call looks at the entry file's metadata instead, and a changed length or
//!   modification time makes it read again. Either way an entry is forgotten when a call to
//!   it fails ([`Resolver::forget`]).
//! - `mdns` (self-hosted, by Configuration `spec.nameResolution.component: mdns`): Dapr's
//!   default self-hosted resolver, on the wire as Dapr does it (see [`super::mdns`]), so a
//!   real Dapr daprd and ours find each other. Namespaces play no part in it (as in Dapr).
//!
//! **Testing aid, never for production:** with `DAPRS_TESTING_RESOLVE_MAP` set to
//! comma-separated `<name>:<port>=<address>:<port>` pairs, the `kubernetes` resolver dials the
//! address instead of a name it resolved to exactly `<name>:<port>` (logged once per name).
//! The e2e harness runs pods as local processes without cluster DNS, so a test maps
//! `<id>-dapr.<ns>.svc.cluster.local:50002` to the loopback address where that pod's daprd
//! listens. A malformed value fails every kubernetes resolution with an error saying so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// How long a registry entry, once read, is used without reading it again.
pub const REGISTRY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Registry entries recently read, by namespace and app id, and the watch on the registry
/// directory that tells when to forget them. Cloning shares it.
#[derive(Clone)]
pub struct RegistryCache(Arc<CacheInner>);

struct CacheInner {
    entries: Mutex<HashMap<String, HashMap<String, Cached>>>,
    /// Set up at the first call that finds the directory: `Some` while it is watched, `None`
    /// where it cannot be (entries are then checked against their file's metadata).
    watch: OnceLock<Option<Watch>>,
    /// How long an entry is used without reading it again ([`REGISTRY_CACHE_TTL`]).
    ttl: Duration,
    /// Entry files read so far.
    reads: AtomicU64,
}

impl Default for RegistryCache {
    fn default() -> Self {
        Self::with_ttl(REGISTRY_CACHE_TTL)
    }
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCache")
            .field("watched", &self.0.watch.get().map(Option::is_some))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Cached {
    address: String,
    /// What the entry was read under.
    valid: Validity,
    read: Instant,
}

/// What shows a remembered entry still matches its file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Validity {
    /// The watch's count of changes in the directory (where the directory is watched).
    Generation(u64),
    /// The file's length and modification time (where it is not).
    File {
        modified: Option<SystemTime>,
        len: u64,
    },
}

impl Validity {
    fn of_file(file: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(file)?;
        Ok(Validity::File {
            modified: m.modified().ok(),
            len: m.len(),
        })
    }
}

/// The registry directory's watcher and the count of changes it has seen.
struct Watch {
    _watcher: notify::RecommendedWatcher,
    generation: Arc<AtomicU64>,
}

impl Watch {
    /// Watches `dir` and everything below it; every event but a read bumps the generation
    /// (an error too: events may have been lost).
    fn start(dir: &Path) -> notify::Result<Watch> {
        use notify::Watcher as _;
        let generation = Arc::new(AtomicU64::new(0));
        let bump = generation.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if !event.is_ok_and(|e| e.kind.is_access()) {
                    bump.fetch_add(1, Ordering::SeqCst);
                }
            })?;
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(Watch {
            _watcher: watcher,
            generation,
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl RegistryCache {
    fn with_ttl(ttl: Duration) -> Self {
        RegistryCache(Arc::new(CacheInner {
            entries: Mutex::default(),
            watch: OnceLock::new(),
            ttl,
            reads: AtomicU64::new(0),
        }))
    }

    /// The watch on `dir`, set up at the first call that finds `dir`; `None` if it cannot be
    /// (logged once).
    fn watch(&self, dir: &Path) -> Option<&Watch> {
        if self.0.watch.get().is_none() && !dir.is_dir() {
            return None;
        }
        self.0
            .watch
            .get_or_init(|| match Watch::start(dir) {
                Ok(watch) => Some(watch),
                Err(error) => {
                    tracing::info!(dir = %dir.display(), %error, "cannot watch the registry directory; each invocation checks its peer's entry file instead");
                    None
                }
            })
            .as_ref()
    }

    /// A remembered address read within the cache time under what is `current` now.
    fn get(&self, app_id: &str, namespace: &str, current: &Validity) -> Option<String> {
        let map = self.0.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(namespace)?
            .get(app_id)
            .filter(|c| c.read.elapsed() < self.0.ttl && c.valid == *current)
            .map(|c| c.address.clone())
    }

    fn put(&self, app_id: &str, namespace: &str, address: &str, valid: Validity) {
        self.0
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(namespace.to_owned())
            .or_default()
            .insert(
                app_id.to_owned(),
                Cached {
                    address: address.to_owned(),
                    valid,
                    read: Instant::now(),
                },
            );
    }

    fn forget(&self, app_id: &str, namespace: &str) {
        if let Some(apps) = self
            .0
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(namespace)
        {
            apps.remove(app_id);
        }
    }
}

/// Dapr's default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Why an app id could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "app id {app_id:?} in namespace {namespace:?} is not registered in {dir} (is its daprd running on this machine?)"
    )]
    NotRegistered {
        app_id: String,
        namespace: String,
        dir: String,
    },
    #[error("the registry entry {file} is unreadable: {error}")]
    BadEntry { file: String, error: String },
    #[error(transparent)]
    Mdns(#[from] super::mdns::MdnsError),
    #[error(
        "{TESTING_MAP_ENV} (a testing aid) is malformed: {0}; expected comma-separated <name>:<port>=<address>:<port> pairs, or unset it"
    )]
    BadTestingMap(String),
}

/// The testing aid's environment variable (see the module docs).
pub const TESTING_MAP_ENV: &str = "DAPRS_TESTING_RESOLVE_MAP";

/// Parses the testing aid's value: `name:port=address:port` pairs, comma-separated.
fn parse_testing_map(value: &str) -> Result<Vec<(String, String)>, String> {
    let has_port = |s: &str| {
        s.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((from, to)) if has_port(from.trim()) && has_port(to.trim()) => {
                Ok((from.trim().to_owned(), to.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not <name>:<port>=<address>:<port>")),
        })
        .collect()
}

fn testing_map() -> &'static Result<Vec<(String, String)>, String> {
    static MAP: OnceLock<Result<Vec<(String, String)>, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let value = std::env::var(TESTING_MAP_ENV).unwrap_or_default();
        let map = parse_testing_map(&value);
        if matches!(&map, Ok(pairs) if !pairs.is_empty()) {
            tracing::warn!(
                "{TESTING_MAP_ENV} is set: a testing aid that redirects resolved names; never use it in production"
            );
        }
        map
    })
}

/// `address`, or where the testing aid redirects it.
fn apply_testing_map(address: String) -> Result<String, ResolveError> {
    let map = testing_map()
        .as_ref()
        .map_err(|e| ResolveError::BadTestingMap(e.clone()))?;
    match map.iter().find(|(from, _)| *from == address) {
        Some((_, to)) => {
            tracing::info!(name = %address, dial = %to, "{TESTING_MAP_ENV}: dialing the mapped address");
            Ok(to.clone())
        }
        None => Ok(address),
    }
}

/// One registry entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub address: String,
    pub pid: u32,
}

/// How to find other sidecars.
#[derive(Debug, Clone)]
pub enum Resolver {
    Kubernetes { cluster_domain: String, port: u16 },
    Registry { dir: PathBuf, cache: RegistryCache },
    Mdns(Arc<super::mdns::Mdns>),
}

impl Resolver {
    /// The self-hosted registry resolver over `dir`.
    pub fn registry(dir: PathBuf) -> Self {
        Resolver::Registry {
            dir,
            cache: RegistryCache::default(),
        }
    }

    /// Forgets what is remembered about `app_id` (after a failed call to it), so the next
    /// call reads its registry entry again.
    pub fn forget(&self, app_id: &str, namespace: &str) {
        match self {
            Resolver::Registry { cache, .. } => cache.forget(app_id, namespace),
            Resolver::Mdns(mdns) => mdns.forget(app_id),
            Resolver::Kubernetes { .. } => {}
        }
    }

    /// The default registry directory: `$HOME/.dapr/registry` (or `./.dapr/registry`).
    pub fn default_registry_dir() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".dapr")
            .join("registry")
    }

    /// `host:port` of the sidecar of `app_id` in `namespace`.
    pub async fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, ResolveError> {
        match self {
            Resolver::Mdns(mdns) => Ok(mdns.resolve(app_id).await?),
            Resolver::Kubernetes {
                cluster_domain,
                port,
            } => apply_testing_map(format!(
                "{app_id}-dapr.{namespace}.svc.{cluster_domain}:{port}"
            )),
            Resolver::Registry { dir, cache } => {
                let not_registered = || ResolveError::NotRegistered {
                    app_id: app_id.to_owned(),
                    namespace: namespace.to_owned(),
                    dir: dir.display().to_string(),
                };
                // Taken before the file is read: a change while reading it leaves what is
                // remembered stale at once.
                let current = match cache.watch(dir) {
                    Some(watch) => Validity::Generation(watch.generation()),
                    None => Validity::of_file(&entry_path(dir, app_id, namespace))
                        .map_err(|_| not_registered())?,
                };
                if let Some(address) = cache.get(app_id, namespace, &current) {
                    return Ok(address);
                }
                let file = entry_path(dir, app_id, namespace);
                cache.0.reads.fetch_add(1, Ordering::Relaxed);
                let text = std::fs::read(&file).map_err(|_| not_registered())?;
                let entry: Entry =
                    serde_json::from_slice(&text).map_err(|e| ResolveError::BadEntry {
                        file: file.display().to_string(),
                        error: e.to_string(),
                    })?;
                if !process_alive(entry.pid) {
                    return Err(not_registered());
                }
                cache.put(app_id, namespace, &entry.address, current);
                Ok(entry.address)
            }
        }
    }

    /// Announces our own address (registry only); returns the file to remove at shutdown.
    pub fn register(
        &self,
        app_id: &str,
        namespace: &str,
        address: &str,
    ) -> std::io::Result<Option<PathBuf>> {
        let dir = match self {
            Resolver::Registry { dir, .. } => dir,
            Resolver::Mdns(mdns) => {
                let address = address.parse().map_err(|e| {
                    std::io::Error::other(format!("announced address {address:?}: {e}"))
                })?;
                mdns.announce(app_id, address)?;
                return Ok(None);
            }
            Resolver::Kubernetes { .. } => return Ok(None),
        };
        let file = entry_path(dir, app_id, namespace);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let entry = Entry {
            address: address.to_owned(),
            pid: std::process::id(),
        };
        // Written to a temporary file and renamed, so readers never see half an entry.
        let tmp = file.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default())?;
        std::fs::rename(&tmp, &file)?;
        Ok(Some(file))
    }
}

/// Removes our entry if it is still ours (another daprd with the same id may have replaced it).
pub fn unregister(file: &Path) {
    if let Ok(text) = std::fs::read(file)
        && let Ok(entry) = serde_json::from_slice::<Entry>(&text)
        && entry.pid == std::process::id()
    {
        let _ = std::fs::remove_file(file);
    }
}

fn entry_path(dir: &Path, app_id: &str, namespace: &str) -> PathBuf {
    dir.join(namespace).join(format!("{app_id}.json"))
}

/// True unless the process is known to be gone (Linux `/proc`; elsewhere always true).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kubernetes_names() {
        let r = Resolver::Kubernetes {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            port: 50002,
        };
        assert_eq!(
            r.resolve("orders", "shop").await.unwrap(),
            "orders-dapr.shop.svc.cluster.local:50002"
        );
    }

    #[test]
    fn testing_map_parses_and_refuses_bad_pairs() {
        assert_eq!(parse_testing_map("").unwrap(), vec![]);
        assert_eq!(
            parse_testing_map("a-dapr.ns.svc.cluster.local:50002=127.0.0.2:50002, b:1=[::1]:2")
                .unwrap(),
            vec![
                (
                    "a-dapr.ns.svc.cluster.local:50002".to_owned(),
                    "127.0.0.2:50002".to_owned()
                ),
                ("b:1".to_owned(), "[::1]:2".to_owned()),
            ]
        );
        for bad in ["a=b", "a:1", "a:1=b", ":1=b:2", "a:x=b:2"] {
            let err = parse_testing_map(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn registry_round_trip_and_stale_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RegistryCache::default();
        let r = Resolver::Registry {
            dir: dir.path().to_owned(),
            cache: cache.clone(),
        };
        let err = r
            .resolve("orders", "default")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not registered"), "{err}");
        let file = r
            .register("orders", "default", "127.0.0.1:47001")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.1:47001"
        );
        // A dead process's entry is ignored.
        let generation = cache.generation().unwrap();
        std::fs::write(&file, r#"{"address":"127.0.0.1:1","pid":4000000000}"#).unwrap();
        changed_since(&cache, generation).await;
        assert!(r.resolve("orders", "default").await.is_err());
        // Only our own entry is removed.
        unregister(&file);
        assert!(file.exists());
        r.register("orders", "default", "127.0.0.1:47001").unwrap();
        unregister(&file);
        assert!(!file.exists());
    }

    impl RegistryCache {
        /// The watch's count of changes, or `None` while the directory is not (yet) watched.
        fn generation(&self) -> Option<u64> {
            self.0.watch.get()?.as_ref().map(Watch::generation)
        }
    }

    /// An entry of this process at `address`, as `register` writes it.
    fn entry(address: &str) -> String {
        format!(r#"{{"address":"{address}","pid":{}}}"#, std::process::id())
    }

    /// Rewrites the entry `file` with `address`, then sets its modification time back to
    /// `modified`.
    fn rewrite_keeping_time(file: &Path, address: &str, modified: SystemTime) {
        std::fs::write(file, entry(address)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }

    /// Waits (up to 10 s) until the registry's watch has reported a change since `before`.
    async fn changed_since(cache: &RegistryCache, before: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.generation() == Some(before) {
            assert!(
                Instant::now() < deadline,
                "the watch never reported the change"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn watched_registry_entries_are_remembered_until_the_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        // A cache time far longer than the test: only the watch can make it read again.
        let cache = RegistryCache::with_ttl(Duration::from_secs(3600));
        let r = Resolver::Registry {
            dir: dir.path().to_owned(),
            cache: cache.clone(),
        };
        let file = r
            .register("orders", "default", "127.0.0.1:47001")
            .unwrap()
            .unwrap();
        let resolve = || r.resolve("orders", "default");
        assert_eq!(resolve().await.unwrap(), "127.0.0.1:47001");
        let reads = || cache.0.reads.load(Ordering::Relaxed);
        assert_eq!(reads(), 1);
        assert!(cache.generation().is_some(), "the directory is watched");

        // Nothing changed: the remembered address, without reading the file.
        for _ in 0..3 {
            assert_eq!(resolve().await.unwrap(), "127.0.0.1:47001");
        }
        assert_eq!(reads(), 1);

        // A rewritten entry is read again once the watch reports it, even with the same
        // length and modification time.
        let generation = cache.generation().unwrap();
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        rewrite_keeping_time(&file, "127.0.0.2:47001", modified);
        changed_since(&cache, generation).await;
        assert_eq!(resolve().await.unwrap(), "127.0.0.2:47001");
        assert_eq!(reads(), 2);

        // A change anywhere in the registry (another app in another namespace registering)
        // is enough to read it again; a removed entry is then no longer found.
        let generation = cache.generation().unwrap();
        let other = r
            .register("billing", "shop", "127.0.0.3:47001")
            .unwrap()
            .unwrap();
        changed_since(&cache, generation).await;
        assert_eq!(resolve().await.unwrap(), "127.0.0.2:47001");
        assert_eq!(reads(), 3);
        assert_eq!(
            r.resolve("billing", "shop").await.unwrap(),
            "127.0.0.3:47001"
        );
        let generation = cache.generation().unwrap();
        unregister(&file);
        changed_since(&cache, generation).await;
        let err = resolve().await.unwrap_err().to_string();
        assert!(err.contains("not registered"), "{err}");
        unregister(&other);

        // A failed call forgets the entry too.
        r.register("orders", "default", "127.0.0.4:47001").unwrap();
        let read = reads();
        assert_eq!(resolve().await.unwrap(), "127.0.0.4:47001");
        r.forget("orders", "default");
        assert_eq!(resolve().await.unwrap(), "127.0.0.4:47001");
        assert!(reads() > read + 1, "read again after forget");
    }

    #[tokio::test]
    async fn unwatched_registry_entries_are_remembered_until_their_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RegistryCache::default();
        // As where the directory cannot be watched.
        assert!(cache.0.watch.set(None).is_ok());
        let r = Resolver::Registry {
            dir: dir.path().to_owned(),
            cache,
        };
        let file = r
            .register("orders", "default", "127.0.0.1:47001")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.1:47001"
        );

        // A rewritten entry (new length or time) is read again at once.
        std::fs::write(&file, entry("127.0.0.10:47001")).unwrap();
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.10:47001"
        );

        // Same length and time as what was read: the remembered address is used...
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        rewrite_keeping_time(&file, "127.0.0.20:47001", modified);
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.10:47001"
        );
        // ...until a failed call forgets it,
        r.forget("orders", "default");
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.20:47001"
        );
        // or the cache time passes.
        rewrite_keeping_time(&file, "127.0.0.30:47001", modified);
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.20:47001"
        );
        std::thread::sleep(REGISTRY_CACHE_TTL + Duration::from_millis(50));
        assert_eq!(
            r.resolve("orders", "default").await.unwrap(),
            "127.0.0.30:47001"
        );
    }
}
