//! What the injector keeps in step with the cluster: the trust anchors (from the mounted
//! `dapr-trust-bundle` ConfigMap), the `MutatingWebhookConfiguration`'s `caBundle` (server-side
//! apply under its own field manager) and the `daprsystem` Configuration's mTLS switch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use tokio::sync::watch;

use crate::router::Live;

/// The field manager of every write the injector makes.
pub const FIELD_MANAGER: &str = "daprs-injector";
/// How often the trust-anchor file is read for a change (a ConfigMap volume is updated by the
/// kubelet within about a minute; reading a small file is cheap).
pub const ANCHORS_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often the `daprsystem` Configuration is read for `spec.mtls.enabled`.
pub const MTLS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Delay before re-applying a caBundle that failed to apply.
pub const CA_BUNDLE_RETRY: Duration = Duration::from_secs(2);
/// Longest a single API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the MutatingWebhookConfiguration {name}: {source}")]
    GetWebhook {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the MutatingWebhookConfiguration {0} has no webhooks; install it first (the Helm chart does)"
    )]
    NoWebhooks(String),
    #[error("failed to apply the caBundle of {name}: {source}")]
    ApplyCaBundle {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("timed out talking to the Kubernetes API server")]
    Timeout,
}

/// The apply patch that sets every webhook's `clientConfig.caBundle` to `anchors_pem`, and
/// nothing else: the injector's field manager owns only these fields, so Helm and GitOps tools
/// keep theirs and see no drift.
pub fn ca_bundle_patch(
    name: &str,
    webhook_names: &[String],
    anchors_pem: &str,
) -> serde_json::Value {
    let bundle = base64::engine::general_purpose::STANDARD.encode(anchors_pem);
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": webhook_names
            .iter()
            .map(|w| serde_json::json!({ "name": w, "clientConfig": { "caBundle": bundle } }))
            .collect::<Vec<_>>(),
    })
}

/// Sets the caBundle of every webhook of the configuration `name` by server-side apply.
pub async fn apply_ca_bundle(
    client: &kube::Client,
    name: &str,
    anchors_pem: &str,
) -> Result<(), Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let current = tokio::time::timeout(API_TIMEOUT, api.get(name))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|source| Error::GetWebhook {
            name: name.to_owned(),
            source,
        })?;
    let webhooks: Vec<String> = current
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.name)
        .collect();
    if webhooks.is_empty() {
        return Err(Error::NoWebhooks(name.to_owned()));
    }
    let patch = ca_bundle_patch(name, &webhooks, anchors_pem);
    // Forced: the caBundle is the injector's to own, whoever wrote it before.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    tokio::time::timeout(API_TIMEOUT, api.patch(name, &params, &Patch::Apply(&patch)))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|source| Error::ApplyCaBundle {
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Reads the trust-anchor file now and whenever it changes, publishing it in `live`; bumps
/// `changed` after each change. A missing or empty file keeps the anchors already read.
pub async fn watch_trust_anchors(
    path: PathBuf,
    live: Arc<Live>,
    changed: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(pem) if daprs_api::tls::certs_from_pem(pem.as_bytes()).is_ok() => {
                warned = false;
                if live.set_trust_anchors(&pem) {
                    tracing::info!(file = %path.display(), "trust anchors loaded");
                    changed.send_modify(|n| *n += 1);
                }
            }
            Ok(_) if !warned => {
                warned = true;
                tracing::warn!(file = %path.display(), "the trust-anchor file holds no certificate yet");
            }
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(file = %path.display(), %error, "cannot read the trust-anchor file");
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(ANCHORS_POLL_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Applies the caBundle at start and after every change of the trust anchors, retrying until
/// it succeeds; `applied` becomes true after the first success (readiness).
pub async fn keep_ca_bundle(
    client: kube::Client,
    name: String,
    live: Arc<Live>,
    mut anchors_changed: watch::Receiver<u64>,
    applied: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // What is applied now covers every change seen so far.
        anchors_changed.borrow_and_update();
        if let Some(anchors) = live.trust_anchors() {
            match apply_ca_bundle(&client, &name, &anchors).await {
                Ok(()) => {
                    tracing::info!(webhook = %name, "caBundle set to the current trust anchors");
                    applied.send_replace(true);
                }
                Err(error) => {
                    tracing::warn!(%error, "failed to apply the caBundle; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(CA_BUNDLE_RETRY) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
        tokio::select! {
            changed = anchors_changed.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// `spec.mtls.enabled` of a Configuration; absent means enabled (Dapr's default).
pub fn mtls_enabled(configuration: &serde_json::Value) -> bool {
    configuration["spec"]["mtls"]["enabled"]
        .as_bool()
        .unwrap_or(true)
}

/// Follows the `daprsystem` Configuration's mTLS switch; a missing Configuration means
/// enabled, an unreadable one keeps the last value.
pub async fn watch_mtls(
    client: kube::Client,
    namespace: String,
    live: Arc<Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration"),
        "configurations",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
    loop {
        let read = tokio::time::timeout(
            API_TIMEOUT,
            api.get_opt(daprs_api::names::CONTROL_PLANE_CONFIGURATION),
        )
        .await;
        match read {
            Ok(Ok(Some(doc))) => live.set_mtls_enabled(mtls_enabled(&doc.data)),
            Ok(Ok(None)) => live.set_mtls_enabled(true),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot read the daprsystem Configuration; keeping the mTLS setting")
            }
            Err(_) => tracing::debug!("reading the daprsystem Configuration timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(MTLS_REFRESH_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Longest the listing of a namespace's Components may take during an admission (the API
/// server waits 10 s for the whole webhook by default).
pub const COMPONENT_LIST_TIMEOUT: Duration = Duration::from_secs(4);

/// What `dapr.io/inject-pluggable-components` needs of each Component in `namespace`: its
/// name, scopes and `dapr.io/component-container` annotation. Read as raw objects, so a
/// Component whose spec the injector would not parse does not fail the listing.
pub async fn list_components(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<crate::mutate::ComponentInfo>, String> {
    let resource = kube::api::ApiResource::erase::<daprs_api::crd::Component>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let list = tokio::time::timeout(
        COMPONENT_LIST_TIMEOUT,
        api.list(&kube::api::ListParams::default()),
    )
    .await
    .map_err(|_| format!("timed out after {}s", COMPONENT_LIST_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .map(|item| crate::mutate::ComponentInfo {
            name: item.metadata.name.clone().unwrap_or_default(),
            scopes: daprs_api::crd::scopes_of(&item.data),
            container: item
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(daprs_api::annotations::COMPONENT_CONTAINER))
                .cloned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apply_patch_owns_only_the_ca_bundles() {
        let patch = ca_bundle_patch(
            "dapr-sidecar-injector",
            &["sidecar-injector.dapr.io".into()],
            "PEM",
        );
        assert_eq!(
            patch,
            serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "dapr-sidecar-injector"},
                "webhooks": [{"name": "sidecar-injector.dapr.io", "clientConfig": {"caBundle": "UEVN"}}]
            })
        );
    }

    #[test]
    fn mtls_defaults_to_enabled() {
        assert!(mtls_enabled(&serde_json::json!({"spec": {}})));
        assert!(mtls_enabled(
            &serde_json::json!({"spec": {"mtls": {"enabled": true}}})
        ));
        assert!(!mtls_enabled(
            &serde_json::json!({"spec": {"mtls": {"enabled": false}}})
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_anchor_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        std::fs::write(&path, &ca).unwrap();
        let live = Arc::new(Live::default());
        let (tx, mut rx) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_trust_anchors(path.clone(), live.clone(), tx, stop_rx));
        rx.changed().await.unwrap();
        assert_eq!(live.trust_anchors().as_deref(), Some(ca.as_str()));

        // Garbage keeps the anchors already read; a new root replaces them.
        std::fs::write(&path, "not a certificate").unwrap();
        tokio::time::sleep(ANCHORS_POLL_INTERVAL * 2).await;
        assert_eq!(live.trust_anchors().as_deref(), Some(ca.as_str()));
        let rotated = format!("{ca}{ca}");
        std::fs::write(&path, &rotated).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 2);
        assert_eq!(live.trust_anchors().as_deref(), Some(rotated.as_str()));
        stop.send_replace(true);
        task.await.unwrap();
    }
}
