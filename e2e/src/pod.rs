//! "Running" an admitted Pod without a kubelet: one container's command line and environment
//! as a kubelet would build them, with its volumes as local directories, started as a local
//! process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::{Api, ResourceExt};

use crate::cluster::{Connection, KEEP_DIR_ENV};
use crate::tokens::pod_service_account;

/// Variables of the test process that the started process inherits; everything else in its
/// environment comes from the container spec, as in a real container.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "RUST_LOG", "RUST_BACKTRACE"];

/// What a field reference to the pod's or the host's IP resolves to.
const LOOPBACK: &str = "127.0.0.1";

/// Builder for running one container of a Pod as a local process; see [`RunPod::new`].
#[derive(Debug)]
pub struct RunPod {
    connection: Connection,
    pod: Pod,
    container: Option<String>,
    program: PathBuf,
    address_map: Vec<(String, String)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl RunPod {
    /// Prepares to run a container of `pod` (the object as the API server admitted it, with
    /// its `uid`, after mutating webhooks) as the local executable `program`:
    ///
    /// - argv is `command[1..]` then `args` (the image's entrypoint is `program`), with
    ///   `$(VAR)` expanded from the container's environment;
    /// - the environment is `envFrom` then `env`, with `fieldRef` (`metadata.name`,
    ///   `metadata.namespace`, `metadata.uid`, labels, annotations, `spec.serviceAccountName`,
    ///   `spec.nodeName`, and `status.podIP`/`hostIP` as 127.0.0.1), `configMapKeyRef` and
    ///   `secretKeyRef` resolved through the API server, plus `PATH`, `HOME`, `RUST_LOG` and
    ///   `RUST_BACKTRACE` from the test process;
    /// - each mounted volume becomes a directory: a projected `serviceAccountToken` gets a
    ///   real pod-bound token from the TokenRequest API with the audience and lifetime the
    ///   volume asks for; `configMap`, `secret` and `downwardAPI` sources are written out;
    ///   `emptyDir` is empty. Mount paths in argv and env values are rewritten to those
    ///   directories, and [`PodProcess::host_path`] maps any other path;
    /// - [`RunPod::map_address`] rewrites in-cluster addresses to where the test serves them.
    ///
    /// Tokens are not refreshed: a test lives far shorter than the 10 minute minimum lifetime.
    pub fn new(connection: &Connection, pod: &Pod, program: impl Into<PathBuf>) -> Self {
        Self {
            connection: connection.clone(),
            pod: pod.clone(),
            container: None,
            program: program.into(),
            address_map: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The container to run, by name; by default the first one (init containers count, so a
    /// native sidecar can be named).
    pub fn container(mut self, name: impl Into<String>) -> Self {
        self.container = Some(name.into());
        self
    }

    /// Replaces `from` with `to` in argv and env values, e.g.
    /// `map_address("dapr-sentry.dapr-system.svc.cluster.local:443", "127.0.0.1:41234")`.
    pub fn map_address(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.address_map.push((from.into(), to.into()));
        self
    }

    /// Sets an environment variable after the container's own (overriding one of them).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets each `(name, value)` as [`RunPod::env`] does.
    pub fn envs<N: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        for (name, value) in vars {
            self = self.env(name, value);
        }
        self
    }

    /// Appends an argument after the container's.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Materialises the volumes, resolves the environment and starts the process, its
    /// stdout and stderr going to [`PodProcess::log_path`]. The process is killed when the
    /// returned handle is dropped.
    pub async fn start(self) -> Result<PodProcess> {
        let pod_name = self.pod.name_any();
        let namespace = self.pod.namespace().context("the pod has no namespace")?;
        let spec = self.pod.spec.as_ref().context("the pod has no spec")?;
        let container = find_container(&self.pod, self.container.as_deref())?;
        let root_guard = tempfile::Builder::new()
            .prefix(&format!("daprs-e2e-pod-{pod_name}-"))
            .tempdir()
            .context("failed to create the pod's directory")?;
        let root = root_guard.path().to_owned();
        let data = DataSource {
            connection: &self.connection,
            namespace: &namespace,
        };

        // Volumes, each materialised once however often it is mounted.
        let mut volume_dirs: HashMap<&str, PathBuf> = HashMap::new();
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .with_context(|| format!("the pod has no volume {} to mount", mount.name))?;
            let dir = match volume_dirs.get(volume.name.as_str()) {
                Some(dir) => dir.clone(),
                None => {
                    let dir = root.join("volumes").join(&volume.name);
                    self.materialize(&data, volume, &dir).await?;
                    volume_dirs.insert(&volume.name, dir.clone());
                    dir
                }
            };
            let host = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                Some(sub) => dir.join(sub),
                None => dir,
            };
            mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), host));
        }
        // Longest first, so that a nested mount wins over its parent.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));

        let mut env = self.container_env(&data, container).await?;
        for (name, value) in &self.env {
            set_env(&mut env, name, value.clone());
        }
        let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let mut args: Vec<String> = container
            .command
            .iter()
            .flatten()
            .skip(1)
            .chain(container.args.iter().flatten())
            .map(|a| expand(a, lookup))
            .collect();
        args.extend(self.args.iter().cloned());

        let rewrite = |s: &str| {
            let mut s = rewrite_paths(s, &mounts);
            for (from, to) in &self.address_map {
                s = s.replace(from.as_str(), to);
            }
            s
        };
        let args: Vec<String> = args.iter().map(|a| rewrite(a)).collect();
        let env: Vec<(String, String)> = env.iter().map(|(n, v)| (n.clone(), rewrite(v))).collect();

        let log = root.join(format!("{}.log", container.name));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(env.iter().map(|(n, v)| (n, v)))
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", self.program.display()))?;
        tracing::info!(pod = %pod_name, %namespace, container = %container.name, log = %log.display(), "pod process started");
        let keep = std::env::var_os(KEEP_DIR_ENV).is_some();
        Ok(PodProcess {
            child,
            root,
            // Kept: the guard is released rather than dropped (dropping deletes it at once).
            _root_guard: if keep {
                let _ = root_guard.keep();
                None
            } else {
                Some(root_guard)
            },
            log,
            mounts,
            args,
            env,
        })
    }

    async fn container_env(
        &self,
        data: &DataSource<'_>,
        container: &Container,
    ) -> Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = Vec::new();
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.as_deref().unwrap_or("");
            let values = if let Some(cm) = &from.config_map_ref {
                data.read(Kind::ConfigMap, &cm.name, cm.optional).await?
            } else if let Some(secret) = &from.secret_ref {
                data.read(Kind::Secret, &secret.name, secret.optional)
                    .await?
            } else {
                None
            };
            for (key, value) in values.unwrap_or_default() {
                set_env(&mut env, &format!("{prefix}{key}"), utf8(value, &key)?);
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => {
                    let lookup =
                        |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
                    expand(value, lookup)
                }
                (None, None) => String::new(),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        resolve_field(&self.pod, &field.field_path)?
                    } else if let Some(key) = &from.config_map_key_ref {
                        data.read_key(Kind::ConfigMap, &key.name, &key.key, key.optional)
                            .await?
                            .unwrap_or_default()
                    } else if let Some(key) = &from.secret_key_ref {
                        data.read_key(Kind::Secret, &key.name, &key.key, key.optional)
                            .await?
                            .unwrap_or_default()
                    } else {
                        bail!(
                            "env {} of container {}: only fieldRef, configMapKeyRef and secretKeyRef are supported",
                            var.name,
                            container.name
                        )
                    }
                }
            };
            set_env(&mut env, &var.name, value);
        }
        Ok(env)
    }

    async fn materialize(&self, data: &DataSource<'_>, volume: &Volume, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let audiences: Vec<&str> = token.audience.as_deref().into_iter().collect();
                    let value = self
                        .connection
                        .pod_token(&self.pod, &audiences, token.expiration_seconds)
                        .await?;
                    write_file(&dir.join(&token.path), value.as_bytes())?;
                } else if let Some(cm) = &source.config_map {
                    let values = data.read(Kind::ConfigMap, &cm.name, cm.optional).await?;
                    write_items(dir, values, cm.items.as_deref())?;
                } else if let Some(secret) = &source.secret {
                    let values = data
                        .read(Kind::Secret, &secret.name, secret.optional)
                        .await?;
                    write_items(dir, values, secret.items.as_deref())?;
                } else if let Some(downward) = &source.downward_api {
                    for item in downward.items.iter().flatten() {
                        self.write_downward(
                            dir,
                            &item.path,
                            item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                        )?;
                    }
                } else {
                    bail!(
                        "volume {}: only serviceAccountToken, configMap, secret and downwardAPI projections are supported",
                        volume.name
                    );
                }
            }
        } else if let Some(cm) = &volume.config_map {
            let values = data.read(Kind::ConfigMap, &cm.name, cm.optional).await?;
            write_items(dir, values, cm.items.as_deref())?;
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let values = data.read(Kind::Secret, name, secret.optional).await?;
            write_items(dir, values, secret.items.as_deref())?;
        } else if let Some(downward) = &volume.downward_api {
            for item in downward.items.iter().flatten() {
                self.write_downward(
                    dir,
                    &item.path,
                    item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                )?;
            }
        } else if volume.empty_dir.is_none() {
            bail!(
                "volume {}: only projected, configMap, secret, downwardAPI and emptyDir volumes are supported",
                volume.name
            );
        }
        Ok(())
    }

    fn write_downward(&self, dir: &Path, path: &str, field: Option<&str>) -> Result<()> {
        let field = field
            .with_context(|| format!("downwardAPI item {path}: only fieldRef is supported"))?;
        write_file(&dir.join(path), resolve_field(&self.pod, field)?.as_bytes())
    }
}

/// A container of a Pod running as a local process, killed when this is dropped. Its
/// directory (volumes, log) is removed then too, unless `DAPRS_E2E_KEEP` is set.
#[derive(Debug)]
pub struct PodProcess {
    child: tokio::process::Child,
    root: PathBuf,
    _root_guard: Option<tempfile::TempDir>,
    log: PathBuf,
    mounts: Vec<(String, PathBuf)>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl PodProcess {
    /// Where `container_path` (a path inside one of the container's mounts, e.g.
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`) is on this machine.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, host)| {
            let rest = container_path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                rest.strip_prefix('/').map(|rest| host.join(rest))
            }
        })
    }

    /// The process's directory: `volumes/<volume>/...` and the log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file with the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The arguments it was started with (after expansion and rewriting).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The environment it was started with, from the container spec and [`RunPod::env`].
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The child process, e.g. to wait for its exit.
    pub fn child(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }

    /// Waits until the log contains `needle`; fails when the process exits first or after
    /// `timeout`, quoting the log.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the process exited ({status}) before logging {needle:?}; its log:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the process did not log {needle:?} within {timeout:?}; its log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn find_container<'a>(pod: &'a Pod, name: Option<&str>) -> Result<&'a Container> {
    let spec = pod.spec.as_ref().context("the pod has no spec")?;
    let mut all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    match name {
        Some(name) => all.find(|c| c.name == name).with_context(|| {
            let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
            format!(
                "pod {} has no container {name}; it has {names:?}",
                pod.name_any()
            )
        }),
        None => all.next().context("the pod has no containers"),
    }
}

/// A downward-API field of the pod, as the kubelet resolves it.
fn resolve_field(pod: &Pod, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
    };
    let map_lines = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => map_lines(&meta.labels),
        "metadata.annotations" => map_lines(&meta.annotations),
        "spec.serviceAccountName" => pod_service_account(pod).to_owned(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
            LOOPBACK.to_owned()
        }
        _ => {
            if let Some(key) = keyed("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = keyed("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                bail!("fieldRef {path} is not supported by run_pod")
            }
        }
    })
}

/// Expands `$(NAME)` from `lookup` the way the kubelet does: `$$` is a literal `$`, and a
/// reference to an undefined variable is left as it is.
fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|s| s.split_once(')')) {
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Replaces a container path that starts with a mount path (`mounts` longest first) by the
/// mount's directory on this machine, wherever it occurs in `s` (`--flag=/path/...`).
fn rewrite_paths(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut s = s.to_owned();
    for (mount, host) in mounts {
        let host = host.display().to_string();
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find(mount.as_str()) {
            let end = i + mount.len();
            let boundary = rest[end..]
                .chars()
                .next()
                .is_none_or(|c| c == '/' || !is_path_char(c));
            let starts = rest[..i].chars().last().is_none_or(|c| !is_path_char(c));
            out.push_str(&rest[..i]);
            out.push_str(if boundary && starts { &host } else { mount });
            rest = &rest[end..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')
}

fn set_env(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_owned(), value)),
    }
}

fn utf8(bytes: Vec<u8>, key: &str) -> Result<String> {
    String::from_utf8(bytes).with_context(|| format!("the value of {key} is not UTF-8"))
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

fn write_items(
    dir: &Path,
    values: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
) -> Result<()> {
    let Some(values) = values else { return Ok(()) };
    match items {
        Some(items) => {
            for item in items {
                let value = values
                    .get(&item.key)
                    .with_context(|| format!("no key {} to project to {}", item.key, item.path))?;
                write_file(&dir.join(&item.path), value)?;
            }
        }
        None => {
            for (key, value) in &values {
                write_file(&dir.join(key), value)?;
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    ConfigMap,
    Secret,
}

/// ConfigMaps and Secrets of the pod's namespace, read as admin.
struct DataSource<'a> {
    connection: &'a Connection,
    namespace: &'a str,
}

impl DataSource<'_> {
    /// All keys of a ConfigMap or Secret; `None` when it is missing and `optional`.
    async fn read(
        &self,
        kind: Kind,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let client = self.connection.client();
        let found = match kind {
            Kind::ConfigMap => Api::<ConfigMap>::namespaced(client, self.namespace)
                .get_opt(name)
                .await?
                .map(|cm| {
                    let mut values: BTreeMap<String, Vec<u8>> = cm
                        .binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    values.extend(
                        cm.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    values
                }),
            Kind::Secret => Api::<Secret>::namespaced(client, self.namespace)
                .get_opt(name)
                .await?
                .map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                }),
        };
        match found {
            Some(values) => Ok(Some(values)),
            None if optional == Some(true) => Ok(None),
            None => bail!(
                "{kind:?} {}/{name} does not exist (a kubelet would not start the container)",
                self.namespace
            ),
        }
    }

    async fn read_key(
        &self,
        kind: Kind,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<String>> {
        let Some(values) = self.read(kind, name, optional).await? else {
            return Ok(None);
        };
        match values.get(key) {
            Some(value) => Ok(Some(utf8(value.clone(), key)?)),
            None if optional == Some(true) => Ok(None),
            None => bail!("{kind:?} {}/{name} has no key {key}", self.namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_follows_the_kubelet() {
        let env = [("A", "1"), ("B", "two")];
        let lookup = |n: &str| env.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(expand("x$(A)y$(B)", lookup), "x1ytwo");
        assert_eq!(expand("$(C) stays", lookup), "$(C) stays");
        assert_eq!(expand("$$(A) is escaped", lookup), "$(A) is escaped");
        assert_eq!(
            expand("lone $ and $(unclosed", lookup),
            "lone $ and $(unclosed"
        );
    }

    #[test]
    fn mount_paths_are_rewritten_only_as_whole_path_prefixes() {
        let mounts = vec![
            (
                "/var/run/secrets/dapr.io/sentrytoken".to_owned(),
                PathBuf::from("/tmp/p/volumes/sentry"),
            ),
            (
                "/var/run/secrets".to_owned(),
                PathBuf::from("/tmp/p/volumes/secrets"),
            ),
        ];
        assert_eq!(
            rewrite_paths(
                "--token=/var/run/secrets/dapr.io/sentrytoken/token",
                &mounts
            ),
            "--token=/tmp/p/volumes/sentry/token"
        );
        assert_eq!(
            rewrite_paths("/var/run/secrets/x", &mounts),
            "/tmp/p/volumes/secrets/x"
        );
        assert_eq!(
            rewrite_paths("/var/run/secretsX/x", &mounts),
            "/var/run/secretsX/x"
        );
        assert_eq!(
            rewrite_paths("/opt/var/run/secrets/x", &mounts),
            "/opt/var/run/secrets/x"
        );
    }

    #[test]
    fn fields_resolve_like_the_downward_api() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "a"}},
            "spec": {"containers": [], "serviceAccountName": "sa"}
        }))
        .expect("a valid pod");
        assert_eq!(
            resolve_field(&pod, "metadata.name").expect("supported"),
            "p"
        );
        assert_eq!(
            resolve_field(&pod, "metadata.namespace").expect("supported"),
            "n"
        );
        assert_eq!(
            resolve_field(&pod, "metadata.labels['app']").expect("supported"),
            "a"
        );
        assert_eq!(
            resolve_field(&pod, "spec.serviceAccountName").expect("supported"),
            "sa"
        );
        assert_eq!(
            resolve_field(&pod, "status.podIP").expect("supported"),
            "127.0.0.1"
        );
        assert!(resolve_field(&pod, "spec.nope").is_err());
    }
}
