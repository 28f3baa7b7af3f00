//! Inlining `secretKeyRef`s as Dapr's operator does, so sidecars need no Secret access.
//!
//! For Components and HTTPEndpoints whose `auth.secretStore` is empty or `kubernetes`, each
//! entry with `secretKeyRef.name` gets `value` = standard base64 of the Secret's bytes under
//! `secretKeyRef.key` (or, when empty, under the Secret's name); the sidecar decodes it. A
//! Configuration's `tracing.otel.headers[]` get the plain text instead. A missing key leaves
//! the entry as it was. A missing Secret does too, with a warning: the component that needs
//! it fails alone in its sidecar (and says so in its status) rather than every component of
//! the namespace failing to list, which is where Dapr differs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde_json::Value;

/// The bytes of one Secret, by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// How long a fetched Secret serves concurrent requests (all streams receiving one change).
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(1);

/// What failed while reading a Secret.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SecretError {
    #[error("failed to read secret {namespace}/{name}: {message}")]
    Read {
        namespace: String,
        name: String,
        message: String,
    },
}

/// How each kind encodes an inlined secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inline {
    /// Components, HTTPEndpoints: base64 (the sidecar decodes it).
    Base64,
    /// Configuration OTel headers: the text itself.
    Raw,
    /// Nothing to inline.
    None,
}

/// Where Secrets come from.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync + 'static {
    /// The Secret `name` of `namespace`; `None` when it does not exist.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<SecretData>, SecretError>;
}

/// Secrets read from the API server.
#[derive(Clone)]
pub struct KubeSecrets {
    pub client: kube::Client,
}

#[async_trait::async_trait]
impl SecretSource for KubeSecrets {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<SecretData>, SecretError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(secret) => Ok(secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            })),
            Err(e) => Err(SecretError::Read {
                namespace: namespace.into(),
                name: name.into(),
                message: e.to_string(),
            }),
        }
    }
}

type Pending = Shared<BoxFuture<'static, Result<Option<Arc<SecretData>>, SecretError>>>;

/// A [`SecretSource`] in front of another that makes concurrent requests for one Secret share
/// one read (a change fanned out to many streams reads each Secret once).
pub struct CoalescingSecrets {
    inner: Arc<dyn SecretSource>,
    recent: Mutex<HashMap<(String, String), (Instant, Pending)>>,
}

impl CoalescingSecrets {
    pub fn new(inner: Arc<dyn SecretSource>) -> Self {
        Self {
            inner,
            recent: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SecretData>>, SecretError> {
        let key = (namespace.to_owned(), name.to_owned());
        let pending = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recent.retain(|_, (at, _)| now.duration_since(*at) < SECRET_CACHE_TTL);
            match recent.get(&key) {
                Some((_, pending)) => pending.clone(),
                None => {
                    let inner = self.inner.clone();
                    let (ns, n) = key.clone();
                    let pending: Pending =
                        async move { inner.get(&ns, &n).await.map(|d| d.map(Arc::new)) }
                            .boxed()
                            .shared();
                    recent.insert(key, (now, pending.clone()));
                    pending
                }
            }
        };
        pending.await
    }
}

/// The entries of `object` whose values may come from a secret.
fn entries_mut(object: &mut Value, inline: Inline) -> Vec<&mut Value> {
    let mut out = Vec::new();
    match inline {
        Inline::Base64 => {
            if !daprs_api::crd::Auth::is_kubernetes(
                serde_json::from_value(object["auth"].clone()).ok().as_ref(),
            ) {
                return out;
            }
            let spec = &mut object["spec"];
            let Some(spec) = spec.as_object_mut() else {
                return out;
            };
            for (key, field) in spec.iter_mut() {
                match key.as_str() {
                    "metadata" | "headers" => {
                        if let Some(items) = field.as_array_mut() {
                            out.extend(items.iter_mut());
                        }
                    }
                    "clientTLS" => {
                        if let Some(tls) = field.as_object_mut() {
                            for (name, doc) in tls.iter_mut() {
                                if matches!(name.as_str(), "rootCA" | "certificate" | "privateKey")
                                {
                                    out.push(doc);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Inline::Raw => {
            if let Some(items) = object
                .pointer_mut("/spec/tracing/otel/headers")
                .and_then(Value::as_array_mut)
            {
                out.extend(items.iter_mut());
            }
        }
        Inline::None => {}
    }
    out
}

fn reference(entry: &Value) -> Option<(String, String)> {
    let r = entry.get("secretKeyRef")?;
    let name = r.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let key = r
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .unwrap_or(name);
    Some((name.to_owned(), key.to_owned()))
}

/// The Secrets `object` needs, by name, in order of first use.
pub fn secret_names(object: &Value, inline: Inline) -> Vec<String> {
    let mut copy = object.clone();
    let mut names: Vec<String> = Vec::new();
    for entry in entries_mut(&mut copy, inline) {
        if let Some((name, _)) = reference(entry)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// Sets `value` of every entry whose Secret and key are in `secrets`.
pub fn inline_secrets(
    object: &mut Value,
    inline: Inline,
    secrets: &HashMap<String, Arc<SecretData>>,
) {
    for entry in entries_mut(object, inline) {
        let Some((name, key)) = reference(entry) else {
            continue;
        };
        let Some(bytes) = secrets.get(&name).and_then(|s| s.get(&key)) else {
            continue;
        };
        let value = match inline {
            Inline::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            _ => String::from_utf8_lossy(bytes).into_owned(),
        };
        entry["value"] = Value::String(value);
    }
}

/// `object` with its secrets inlined, as JSON bytes. Missing Secrets are left unresolved with
/// a warning; a failed read fails the call.
pub async fn resolve(
    object: &crate::hub::Object,
    inline: Inline,
    source: &CoalescingSecrets,
) -> Result<bytes::Bytes, SecretError> {
    let names = secret_names(&object.value, inline);
    if names.is_empty() {
        return Ok(object.encoded.clone());
    }
    let mut secrets = HashMap::new();
    for name in names {
        match source.get(&object.namespace, &name).await? {
            Some(data) => {
                secrets.insert(name, data);
            }
            None => tracing::warn!(
                namespace = %object.namespace,
                resource = %object.name,
                secret = %name,
                "a referenced secret does not exist; create it, or fix secretKeyRef.name"
            ),
        }
    }
    let mut value = object.value.clone();
    inline_secrets(&mut value, inline, &secrets);
    Ok(bytes::Bytes::from(
        serde_json::to_vec(&value).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets() -> HashMap<String, Arc<SecretData>> {
        let mut redis = SecretData::new();
        redis.insert("password".into(), b"s3cret".to_vec());
        let mut token = SecretData::new();
        token.insert("token".into(), b"Bearer abc".to_vec());
        HashMap::from([
            ("redis".into(), Arc::new(redis)),
            ("token".into(), Arc::new(token)),
        ])
    }

    #[test]
    fn component_secrets_are_inlined_as_base64_and_the_key_defaults_to_the_name() {
        let mut component = json!({
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisHost", "value": "redis:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
                {"name": "token", "secretKeyRef": {"name": "token"}},
                {"name": "missingKey", "secretKeyRef": {"name": "redis", "key": "nope"}},
                {"name": "missingSecret", "secretKeyRef": {"name": "absent", "key": "x"}}
            ]}
        });
        assert_eq!(
            secret_names(&component, Inline::Base64),
            ["redis", "token", "absent"]
        );
        inline_secrets(&mut component, Inline::Base64, &secrets());
        let items = component["spec"]["metadata"].as_array().unwrap();
        assert_eq!(items[0]["value"], "redis:6379");
        assert_eq!(items[1]["value"], "czNjcmV0", "base64 of s3cret");
        assert_eq!(items[2]["value"], "QmVhcmVyIGFiYw==");
        assert!(
            items[3].get("value").is_none(),
            "a missing key is left as is"
        );
        assert!(items[4].get("value").is_none());
        assert_eq!(
            items[1]["secretKeyRef"]["name"], "redis",
            "the reference stays"
        );
    }

    #[test]
    fn another_secret_store_is_left_to_the_sidecar() {
        let mut component = json!({
            "auth": {"secretStore": "vault"},
            "spec": {"metadata": [{"name": "p", "secretKeyRef": {"name": "redis", "key": "password"}}]}
        });
        assert!(secret_names(&component, Inline::Base64).is_empty());
        inline_secrets(&mut component, Inline::Base64, &secrets());
        assert!(component["spec"]["metadata"][0].get("value").is_none());
        let mut explicit = json!({
            "auth": {"secretStore": "kubernetes"},
            "spec": {"metadata": [{"name": "p", "secretKeyRef": {"name": "redis", "key": "password"}}]}
        });
        inline_secrets(&mut explicit, Inline::Base64, &secrets());
        assert_eq!(explicit["spec"]["metadata"][0]["value"], "czNjcmV0");
    }

    #[test]
    fn http_endpoint_headers_and_tls_documents_are_inlined() {
        let mut endpoint = json!({
            "spec": {"baseUrl": "https://x", "headers": [
                {"name": "Authorization", "secretKeyRef": {"name": "token", "key": "token"}}
            ], "clientTLS": {"privateKey": {"secretKeyRef": {"name": "redis", "key": "password"}}}}
        });
        inline_secrets(&mut endpoint, Inline::Base64, &secrets());
        assert_eq!(endpoint["spec"]["headers"][0]["value"], "QmVhcmVyIGFiYw==");
        assert_eq!(
            endpoint["spec"]["clientTLS"]["privateKey"]["value"],
            "czNjcmV0"
        );
    }

    #[test]
    fn configuration_otel_headers_are_inlined_as_text() {
        let mut config = json!({"spec": {"tracing": {"otel": {"headers": [
            {"name": "api-key", "secretKeyRef": {"name": "token", "key": "token"}}
        ]}}}});
        assert_eq!(secret_names(&config, Inline::Raw), ["token"]);
        inline_secrets(&mut config, Inline::Raw, &secrets());
        assert_eq!(
            config["spec"]["tracing"]["otel"]["headers"][0]["value"],
            "Bearer abc"
        );
    }

    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl SecretSource for Counting {
        async fn get(&self, _: &str, _: &str) -> Result<Option<SecretData>, SecretError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Some(SecretData::new()))
        }
    }

    #[tokio::test]
    async fn concurrent_reads_of_one_secret_share_one_request() {
        let counting = Arc::new(Counting(Default::default()));
        let secrets = Arc::new(CoalescingSecrets::new(counting.clone()));
        let reads = (0..100).map(|_| {
            let secrets = secrets.clone();
            async move { secrets.get("ns", "redis").await }
        });
        for result in futures::future::join_all(reads).await {
            assert!(result.unwrap().is_some());
        }
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        secrets.get("ns", "other").await.unwrap();
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
