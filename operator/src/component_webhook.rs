//! Keeps the `caBundle` of the Component `ValidatingWebhookConfiguration` equal to what the
//! API server must trust to call the operator's webhooks: the trust anchors (the webhooks serve
//! the operator's sentry-issued SVID), or `ca.crt` of `--webhook-tls-dir`.
//!
//! The chart renders the configuration without a `caBundle`; the leader applies it
//! (server-side apply, field manager [`FIELD_MANAGER`], owning only
//! `webhooks[*].clientConfig.caBundle`) at start, after every change of the anchors, and
//! whenever a check every [`crate::ANCHORS_POLL`] finds it different (a `helm upgrade` from a
//! chart that rendered it, a reinstalled configuration). So Helm and Argo CD never fight over
//! the field, and no `helm upgrade` is needed after install or after a root rotation.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

/// The field manager of the caBundle (the operator's, as for its other writes).
pub const FIELD_MANAGER: &str = crate::service::FIELD_MANAGER;
/// The configuration's name in the Helm chart (`--component-webhook-name`).
pub const DEFAULT_NAME: &str = "daprs-component-validator";

/// What failed while keeping the caBundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to read the ValidatingWebhookConfiguration {name}: {source} (the operator needs get and patch on validatingwebhookconfigurations named {name}; the Helm chart grants them)"
    )]
    GetWebhook {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "failed to apply the caBundle of the ValidatingWebhookConfiguration {name}: {source} (the operator needs patch on validatingwebhookconfigurations named {name})"
    )]
    ApplyCaBundle {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a pass found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The caBundle was applied.
    Applied,
    /// Every webhook already had it.
    Current,
    /// There is no such configuration (Component validation is not installed, yet).
    Missing,
}

/// The webhooks of `config` whose caBundle is not `bundle`; empty when all are current.
pub fn stale_webhooks(config: &ValidatingWebhookConfiguration, bundle: &[u8]) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle))
        .map(|w| w.name.clone())
        .collect()
}

/// The apply patch setting the caBundle of each of `webhook_names` to `bundle`, and nothing
/// else (the webhooks are a list keyed by name, so only these fields become ours).
pub fn ca_bundle_patch(name: &str, webhook_names: &[String], bundle: &[u8]) -> serde_json::Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": webhook_names
            .iter()
            .map(|w| serde_json::json!({ "name": w, "clientConfig": { "caBundle": encoded } }))
            .collect::<Vec<_>>(),
    })
}

/// One pass: applies `bundle` to every webhook of the configuration `name` unless all have it.
/// Never creates the configuration.
pub async fn sync(client: &kube::Client, name: &str, bundle: &[u8]) -> Result<Outcome, Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let current = api
        .get_opt(name)
        .await
        .map_err(|source| Error::GetWebhook {
            name: name.to_owned(),
            source,
        })?;
    let Some(current) = current else {
        return Ok(Outcome::Missing);
    };
    if stale_webhooks(&current, bundle).is_empty() {
        return Ok(Outcome::Current);
    }
    // Every webhook is listed, so the field manager owns the caBundle of each.
    let all: Vec<String> = current
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.name.clone())
        .collect();
    // Forced: the caBundle is the operator's, whoever (an older chart) wrote it before.
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&ca_bundle_patch(name, &all, bundle)),
    )
    .await
    .map_err(|source| Error::ApplyCaBundle {
        name: name.to_owned(),
        source,
    })?;
    Ok(Outcome::Applied)
}

/// Keeps the caBundle of `name` equal to `bundle` until `stop`; runs on the leader.
pub async fn run(
    client: kube::Client,
    name: String,
    mut bundle: watch::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reported_missing = false;
    loop {
        let current = bundle.borrow_and_update().clone();
        match sync(&client, &name, &current).await {
            Ok(Outcome::Applied) => {
                reported_missing = false;
                tracing::info!(webhook = %name, "Component webhook caBundle set to the trust anchors");
            }
            Ok(Outcome::Current) => reported_missing = false,
            Ok(Outcome::Missing) if !reported_missing => {
                reported_missing = true;
                tracing::info!(webhook = %name, "no ValidatingWebhookConfiguration of this name (Component validation not installed); checking again later");
            }
            Ok(Outcome::Missing) => {}
            Err(error) => {
                tracing::warn!(%error, "failed to update the Component webhook; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(crate::ANCHORS_POLL) => {}
            changed = bundle.changed() => if changed.is_err() { return },
            () = crate::api::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(bundles: &[Option<&[u8]>]) -> ValidatingWebhookConfiguration {
        let webhooks: Vec<serde_json::Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client_config =
                    json!({"service": {"namespace": "ns", "name": "dapr-webhook"}});
                if let Some(b) = b {
                    client_config["caBundle"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(b));
                }
                json!({"name": format!("w{i}.daprs.dev"), "admissionReviewVersions": ["v1"],
                       "sideEffects": "None", "clientConfig": client_config})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": DEFAULT_NAME},
            "webhooks": webhooks,
        }))
        .unwrap()
    }

    #[test]
    fn only_webhooks_without_the_bundle_are_stale() {
        assert_eq!(stale_webhooks(&config(&[None]), b"PEM"), ["w0.daprs.dev"]);
        assert_eq!(
            stale_webhooks(&config(&[Some(b"PEM"), Some(b"OLD")]), b"PEM"),
            ["w1.daprs.dev"]
        );
        assert!(stale_webhooks(&config(&[Some(b"PEM"), Some(b"PEM")]), b"PEM").is_empty());
    }

    #[test]
    fn the_apply_patch_owns_only_the_ca_bundles() {
        let patch = ca_bundle_patch(
            DEFAULT_NAME,
            &["components.operator.daprs.dev".into()],
            b"PEM",
        );
        assert_eq!(
            patch,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "daprs-component-validator"},
                "webhooks": [{"name": "components.operator.daprs.dev", "clientConfig": {"caBundle": "UEVN"}}]
            })
        );
        // The applied object parses as the typed configuration (a valid apply body).
        let typed: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": patch["metadata"], "webhooks": [{"name": "x", "admissionReviewVersions": [], "sideEffects": "None",
                "clientConfig": patch["webhooks"][0]["clientConfig"]}]
        }))
        .unwrap();
        assert_eq!(
            typed.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .as_ref()
                .unwrap()
                .0,
            b"PEM"
        );
    }
}
