//! Which Configuration an app uses: the `dapr.io/config` annotation of its pods, read
//! server-side (the ConfigurationUpdate request does not name it).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

/// Label the injector puts on every pod it injects: the app id.
pub const LABEL_APP_ID: &str = "dapr.io/app-id";

/// Finds an app's Configuration name.
#[async_trait::async_trait]
pub trait PodDirectory: Send + Sync + 'static {
    /// The `dapr.io/config` of a pod of `app_id` in `namespace`; `None` when no pod names one.
    async fn config_of(&self, namespace: &str, app_id: &str) -> Result<Option<String>, String>;
}

/// Reads pod metadata from the API server (metadata only: no specs in memory).
#[derive(Clone)]
pub struct KubePods {
    pub client: kube::Client,
}

#[async_trait::async_trait]
impl PodDirectory for KubePods {
    async fn config_of(&self, namespace: &str, app_id: &str) -> Result<Option<String>, String> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().labels(&format!("{LABEL_APP_ID}={app_id}"));
        let pods = api
            .list_metadata(&params)
            .await
            .map_err(|e| format!("failed to list the pods of app {app_id}: {e}"))?;
        Ok(pods.items.iter().find_map(|pod| {
            pod.metadata
                .annotations
                .as_ref()?
                .get(daprs_api::names::ANNOTATION_CONFIG)
                .filter(|c| !c.is_empty())
                .cloned()
        }))
    }
}

/// A fixed answer (self-hosted mode and tests).
#[derive(Clone, Debug, Default)]
pub struct StaticPods(pub std::collections::HashMap<(String, String), String>);

#[async_trait::async_trait]
impl PodDirectory for StaticPods {
    async fn config_of(&self, namespace: &str, app_id: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .get(&(namespace.to_owned(), app_id.to_owned()))
            .cloned())
    }
}
