//! A namespace per test, deleted when the test ends, and admission helpers.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Api, Client};
use rand::Rng as _;
use serde::Serialize;

use crate::cluster::{Cluster, Connection};
use crate::pod::RunPod;

/// Label on every namespace this module creates, to find leftovers: `kubectl get ns -l daprs.dev/e2e`.
pub const TEMP_NS_LABEL: &str = "daprs.dev/e2e";

/// How long a new namespace may take to get its `default` ServiceAccount (needed before a
/// Pod can be admitted there).
const DEFAULT_SA_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `test` with an admin client and a fresh namespace of the shared cluster
/// ([`Cluster::shared`]); the namespace is deleted when `test` returns or panics.
///
/// ```no_run
/// # async fn doc() {
/// use k8s_openapi::api::core::v1::ConfigMap;
/// daprs_e2e::with_temp_ns(|client, ns| async move {
///     let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, ns.name());
///     assert!(api.list(&Default::default()).await.unwrap().items.len() <= 1);
/// })
/// .await;
/// # }
/// ```
pub async fn with_temp_ns<F, Fut, T>(test: F) -> T
where
    F: FnOnce(Client, TempNs) -> Fut,
    Fut: Future<Output = T>,
{
    let cluster = Cluster::shared().await;
    let ns = TempNs::create(cluster.connection())
        .await
        .expect("failed to create a namespace for the test");
    test(ns.client(), ns).await
}

/// A namespace with a random name that exists until this guard is dropped, with its
/// `default` ServiceAccount in place. Dropping it (also while a test panics) deletes the
/// namespace; the namespace controller then deletes what it held.
pub struct TempNs {
    name: String,
    connection: Connection,
    client: Client,
}

impl std::fmt::Debug for TempNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempNs")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TempNs {
    /// Creates a namespace named after the current thread (the test's name under `cargo
    /// test`) plus a random suffix, and waits for its `default` ServiceAccount.
    pub async fn create(connection: &Connection) -> Result<Self> {
        let name = random_name(std::thread::current().name().unwrap_or("test"));
        let client = connection.client();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEMP_NS_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("failed to create namespace {name}"))?;
        let ns = Self {
            name,
            connection: connection.clone(),
            client,
        };
        ns.wait_for_default_service_account().await?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (bound to the runtime the namespace was created in).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// How to reach the cluster: tokens, TokenReview, clients as a service account.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A client acting as service account `name` of this namespace.
    pub async fn client_for_service_account(&self, name: &str) -> Result<Client> {
        self.connection
            .client_for_service_account(&self.name, name)
            .await
    }

    /// Prepares to run a container of `pod` (as created, with its `uid`) as the local
    /// executable `program`; see [`RunPod::new`].
    pub fn run_pod(&self, pod: &Pod, program: impl Into<PathBuf>) -> RunPod {
        RunPod::new(&self.connection, pod, program)
    }

    /// Creates `obj` (any Kubernetes object with `apiVersion` and `kind`; namespaced ones go
    /// into this namespace) as admin and returns it as stored.
    ///
    /// # Panics
    /// When the API server refuses it, with the API server's message.
    pub async fn accepts<K: Serialize>(&self, obj: &K) -> DynamicObject {
        match self.create_object(obj).await {
            Ok(Ok(created)) => created,
            Ok(Err(status)) => panic!(
                "expected the API server to accept {}, but it refused it ({} {}): {}",
                describe(obj),
                status.code,
                status.reason,
                status.message
            ),
            Err(e) => panic!("failed to create {}: {e:#}", describe(obj)),
        }
    }

    /// Creates `obj` as [`TempNs::accepts`] does, expecting the API server to refuse it (an
    /// admission webhook's or policy's denial, a validation error, ...), and returns the
    /// API server's message.
    ///
    /// # Panics
    /// When the object is created (it is deleted again first).
    pub async fn rejects<K: Serialize>(&self, obj: &K) -> String {
        match self.create_object(obj).await {
            Ok(Err(status)) => status.message,
            Ok(Ok(created)) => {
                let _ = self.delete_dynamic(&created).await;
                panic!(
                    "expected the API server to refuse {}, but it was created",
                    describe(obj)
                )
            }
            Err(e) => panic!("failed to create {}: {e:#}", describe(obj)),
        }
    }

    /// Creates `obj`: the created object, or the API server's refusal, or another failure.
    async fn create_object<K: Serialize>(
        &self,
        obj: &K,
    ) -> Result<std::result::Result<DynamicObject, kube::core::Status>> {
        let (api, obj) = self.dynamic_api(obj).await?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(created) => Ok(Ok(created)),
            Err(kube::Error::Api(status)) => Ok(Err(*status)),
            Err(e) => Err(e.into()),
        }
    }

    async fn dynamic_api<K: Serialize>(
        &self,
        obj: &K,
    ) -> Result<(Api<DynamicObject>, DynamicObject)> {
        let mut obj: DynamicObject = serde_json::from_value(serde_json::to_value(obj)?)
            .context("not a Kubernetes object")?;
        let types = obj
            .types
            .clone()
            .context("the object has no apiVersion and kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .with_context(|| format!("the API server does not serve {gvk:?}"))?;
        let api = if capabilities.scope == Scope::Namespaced {
            obj.metadata.namespace = Some(self.name.clone());
            Api::namespaced_with(self.client.clone(), &self.name, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        Ok((api, obj))
    }

    async fn delete_dynamic(&self, obj: &DynamicObject) -> Result<()> {
        let (api, obj) = self.dynamic_api(obj).await?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::default()).await?;
        Ok(())
    }

    async fn wait_for_default_service_account(&self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.name);
        let deadline = Instant::now() + DEFAULT_SA_TIMEOUT;
        while api.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "namespace {} got no default ServiceAccount within {DEFAULT_SA_TIMEOUT:?}: is the controller-manager running?",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down or single-threaded:
        // delete from a thread with a runtime of its own and wait for that request only.
        let name = self.name.clone();
        let connection = self.connection.clone();
        let deleted = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                Api::<Namespace>::all(connection.client())
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("failed to delete namespace {}: {e:#}", self.name),
            Err(_) => eprintln!(
                "failed to delete namespace {}: the deleting thread panicked",
                self.name
            ),
        }
    }
}

/// `e2e-<hint as a DNS label, shortened>-<6 random characters>`.
fn random_name(hint: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Under `cargo test` the thread is named after the test path; its last part is enough.
    let hint = hint.rsplit("::").next().unwrap_or(hint);
    let mut label: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    label = label.trim_matches('-').to_owned();
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    if label.is_empty() {
        format!("e2e-{suffix}")
    } else {
        format!("e2e-{label}-{suffix}")
    }
}

fn describe<K: Serialize>(obj: &K) -> String {
    let value = serde_json::to_value(obj).unwrap_or_default();
    let field = |path: &str| {
        value
            .pointer(path)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    format!("{} {}", field("/kind"), field("/metadata/name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_dns_labels_named_after_the_test() {
        let name =
            random_name("tests::TokenReview_of_a_pod_bound_token_with_a_really_long_name_indeed");
        assert!(
            name.starts_with("e2e-tokenreview-of-a-pod-bound-token-with-a-"),
            "{name}"
        );
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert_ne!(random_name("x"), random_name("x"));
        assert!(random_name("::--").starts_with("e2e-") && !random_name("--").contains("--"));
    }
}
