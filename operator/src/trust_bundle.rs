//! Publishes the trust anchors into every namespace that has Dapr apps, as the ConfigMap
//! `dapr-trust-bundle` the injector mounts into each sidecar (`DAPR_TRUST_ANCHORS_FILE`).
//!
//! A pod can only mount ConfigMaps of its own namespace, and sentry's `dapr-trust-bundle` lives
//! in the control-plane namespace; this copy is what lets sidecars pick up a rotated root from
//! a file instead of an environment variable frozen at admission (pain point S-4). The source
//! is the operator's own trust-anchors file (the same anchors it trusts), re-read every
//! [`crate::ANCHORS_POLL`]; the namespaces are those holding an `<app-id>-dapr` Service.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use daprs_api::names::{TRUST_ANCHORS_KEY, TRUST_BUNDLE_NAME};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use tokio::sync::watch;

use crate::service::FIELD_MANAGER;

/// Label on the copies, so they can be found (and told apart from sentry's own).
pub const COPY_LABEL: &str = "dapr.io/trust-bundle-copy";

/// What failed while publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the trust anchors {path}: {source}")]
    ReadAnchors {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to list the namespaces with Dapr apps: {0}")]
    ListNamespaces(#[source] kube::Error),
    #[error("failed to publish the trust anchors in namespace {namespace}: {source}")]
    Publish {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// The ConfigMap for `namespace` holding `anchors`.
pub fn desired(namespace: &str, anchors: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(TRUST_BUNDLE_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                ),
                (COPY_LABEL.to_owned(), "true".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            TRUST_ANCHORS_KEY.to_owned(),
            anchors.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// Keeps the copies current until `stop`; runs on the leader.
pub async fn run(
    client: kube::Client,
    anchors_file: PathBuf,
    control_plane_namespace: String,
    watch_namespace: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    // namespace → anchors last written there.
    let mut published: HashMap<String, String> = HashMap::new();
    loop {
        match sync(
            &client,
            &anchors_file,
            &control_plane_namespace,
            watch_namespace.as_deref(),
            &mut published,
        )
        .await
        {
            Ok(0) => {}
            Ok(written) => tracing::info!(namespaces = written, "trust anchors published"),
            Err(error) => tracing::warn!(%error, "failed to publish the trust anchors; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(crate::ANCHORS_POLL) => {}
            () = crate::api::stopped(&mut stop) => return,
        }
    }
}

/// One pass: writes the anchors where they are missing or stale; returns how many were written.
pub async fn sync(
    client: &kube::Client,
    anchors_file: &std::path::Path,
    control_plane_namespace: &str,
    watch_namespace: Option<&str>,
    published: &mut HashMap<String, String>,
) -> Result<usize, Error> {
    let anchors = tokio::fs::read_to_string(anchors_file)
        .await
        .map_err(|source| Error::ReadAnchors {
            path: anchors_file.display().to_string(),
            source,
        })?;
    let services: Api<Service> = match watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = services
        .list_metadata(&ListParams::default().labels("dapr.io/enabled=true"))
        .await
        .map_err(Error::ListNamespaces)?;
    let namespaces: std::collections::BTreeSet<String> = list
        .items
        .into_iter()
        .filter_map(|s| s.metadata.namespace)
        // sentry publishes the original in its own namespace.
        .filter(|ns| ns != control_plane_namespace)
        .collect();
    let mut written = 0;
    for namespace in namespaces {
        if published.get(&namespace) == Some(&anchors) {
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        api.patch(
            TRUST_BUNDLE_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired(&namespace, &anchors)),
        )
        .await
        .map_err(|source| Error::Publish {
            namespace: namespace.clone(),
            source,
        })?;
        published.insert(namespace, anchors.clone());
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_holds_the_anchors_under_the_name_the_injector_mounts() {
        let cm = desired("shop", "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(cm.metadata.name.as_deref(), Some("dapr-trust-bundle"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(cm.data.unwrap()["ca.crt"], "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(cm.metadata.labels.unwrap()[COPY_LABEL], "true");
        // Must serialise as a complete object for server-side apply.
        let json = serde_json::to_value(desired("shop", "x")).unwrap();
        assert_eq!(json["metadata"]["name"], "dapr-trust-bundle");
        assert_eq!(
            (json["apiVersion"].as_str(), json["kind"].as_str()),
            (Some("v1"), Some("ConfigMap"))
        );
    }
}
