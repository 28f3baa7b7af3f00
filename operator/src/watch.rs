//! Kubernetes watches that feed the [`crate::hub::Hub`]s, with backoff. A CRD that is missing
//! is tolerated (a warning; its hub counts as synced and empty) as in Dapr.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::TypeMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::hub::Hub;

/// The resources the operator serves: (hub, kind, version, plural).
pub fn resource(kind: &str, version: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(daprs_api::crd::GROUP, version, kind),
        plural,
    )
}

fn to_value(mut object: DynamicObject, resource: &ApiResource) -> serde_json::Value {
    if object.types.is_none() {
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
    }
    // Sidecars read neither managedFields nor daprs' status (Dapr sends none); both would
    // only add memory and payload.
    object.metadata.managed_fields = None;
    if let Some(data) = object.data.as_object_mut() {
        data.remove("status");
    }
    serde_json::to_value(object).unwrap_or_default()
}

/// Watches `resource` (in `namespace`, or everywhere) into `hub` until `shutdown`.
pub async fn run(
    client: kube::Client,
    resource: ApiResource,
    namespace: Option<String>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: kube::Api<DynamicObject> = match &namespace {
        Some(ns) => kube::Api::namespaced_with(client, ns, &resource),
        None => kube::Api::all_with(client, &resource),
    };
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = crate::api::stopped(&mut shutdown) => return,
        };
        match event {
            Some(Ok(watcher::Event::Init)) => hub.relist_start(),
            Some(Ok(watcher::Event::InitApply(o))) => hub.relist_item(to_value(o, &resource)),
            Some(Ok(watcher::Event::InitDone)) => hub.relist_done(),
            Some(Ok(watcher::Event::Apply(o))) => hub.apply(to_value(o, &resource)),
            Some(Ok(watcher::Event::Delete(o))) => hub.delete(to_value(o, &resource)),
            Some(Err(error)) => {
                let missing = matches!(&error, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
                if missing && !hub.is_synced() {
                    tracing::warn!(resource = %resource.plural, "the CRD is not installed; serving none until it is");
                    hub.relist_start();
                    hub.relist_done();
                } else {
                    tracing::warn!(resource = %resource.plural, %error, "watch failed; retrying with backoff");
                }
            }
            None => return,
        }
    }
}
