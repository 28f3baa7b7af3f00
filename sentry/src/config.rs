//! sentry's flags (Dapr's names and defaults) and the `daprsystem` Configuration it reads.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use daprs_api::cli::LogArgs;
use daprs_api::duration::parse_go_duration;
use serde::Deserialize;

use crate::ca::KeyAlgorithm;

/// Where sentry keeps its CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Files in `--issuer-credentials`; validator `insecure` by default.
    Standalone,
    /// The `dapr-trust-bundle` Secret and ConfigMap; validator `kubernetes` by default.
    Kubernetes,
}

fn go_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match go_duration(s)? {
        d if d.is_zero() => Err("it must be longer than zero".into()),
        d => Ok(d),
    }
}

fn trust_domain(s: &str) -> Result<String, String> {
    daprs_api::spiffe::validate_trust_domain_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// `sentry`: the daprs certificate authority.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "sentry", version, about)]
pub struct Args {
    /// Folder with the issuer credentials (standalone: read and written; kubernetes: the
    /// basenames below name the Secret's keys).
    #[arg(long, default_value = "/var/run/secrets/dapr.io/credentials")]
    pub issuer_credentials: PathBuf,
    /// File name of the trust anchors (root certificates).
    #[arg(long, default_value = "ca.crt")]
    pub issuer_ca_filename: String,
    /// File name of the issuer certificate chain.
    #[arg(long, default_value = "issuer.crt")]
    pub issuer_certificate_filename: String,
    /// File name of the issuer private key (PKCS#8 PEM).
    #[arg(long, default_value = "issuer.key")]
    pub issuer_key_filename: String,
    /// The control plane's trust domain (sentry's own id and generated CA subjects).
    #[arg(long, default_value = daprs_api::names::DEFAULT_CONTROL_PLANE_TRUST_DOMAIN, value_parser = trust_domain)]
    pub trust_domain: String,
    /// The cluster's DNS domain (for the scheduler's DNS names).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// gRPC port of the CA service.
    #[arg(long, default_value_t = daprs_api::names::SENTRY_GRPC_PORT)]
    pub port: u16,
    /// Address the CA service listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Port of `/healthz`.
    #[arg(long, default_value_t = daprs_api::names::HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// Address `/healthz` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub healthz_listen_address: IpAddr,
    /// Port of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value_t = daprs_api::names::METRICS_PORT)]
    pub metrics_port: u16,
    /// Address `/metrics` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_listen_address: IpAddr,
    /// Serve Prometheus metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// Where the CA lives and which validator is the default.
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// The control plane's Configuration: its name in kubernetes mode (`daprsystem`), a
    /// Configuration YAML file in standalone mode (ignored when the file does not exist).
    #[arg(long, default_value = daprs_api::names::CONTROL_PLANE_CONFIGURATION)]
    pub config: String,
    /// Workload certificate lifetime, unless the Configuration sets `spec.mtls.workloadCertTTL`.
    #[arg(long, default_value = "24h", value_parser = positive_duration)]
    pub workload_cert_ttl: Duration,
    /// Backdating of NotBefore, unless the Configuration sets `spec.mtls.allowedClockSkew`.
    #[arg(long, default_value = "15m", value_parser = go_duration)]
    pub allowed_clock_skew: Duration,
    /// Key algorithm of a CA sentry generates.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub ca_key_algorithm: KeyAlgorithm,
    /// Lifetime of a root and issuer sentry generates.
    #[arg(long, default_value = "8760h", value_parser = positive_duration)]
    pub ca_ttl: Duration,
    /// Rotate a generated CA this long before it expires (0 turns rotation off).
    #[arg(long, default_value = "1440h", value_parser = go_duration)]
    pub ca_rotate_before: Duration,
    /// Time between publishing a new root and signing with its issuer: how long clients may
    /// take to load new trust anchors.
    /// Must cover the time every client needs to pick up new anchors; workloads that read them
    /// only at start (Dapr sidecars with `DAPR_TRUST_ANCHORS`) must be restarted within it.
    #[arg(long, default_value = "168h", value_parser = go_duration)]
    pub ca_propagation_delay: Duration,
    /// How often sentry re-reads its CA from the store (changes on disk are also watched).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub ca_reload_interval: Duration,
    /// A JWKS (file path, https URL or inline JSON) that enables the `jwks` validator; the
    /// Configuration's `spec.mtls.tokenValidators` can also enable it.
    #[arg(long)]
    pub jwks_source: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// Where each credential lives.
    pub fn credential_names(&self) -> CredentialNames {
        CredentialNames {
            trust_anchors: self.issuer_ca_filename.clone(),
            issuer_cert: self.issuer_certificate_filename.clone(),
            issuer_key: self.issuer_key_filename.clone(),
        }
    }
}

/// File names (standalone) or Secret keys (kubernetes) of the three credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialNames {
    pub trust_anchors: String,
    pub issuer_cert: String,
    pub issuer_key: String,
}

impl Default for CredentialNames {
    fn default() -> Self {
        Self {
            trust_anchors: daprs_api::names::TRUST_ANCHORS_KEY.into(),
            issuer_cert: daprs_api::names::ISSUER_CERT_KEY.into(),
            issuer_key: daprs_api::names::ISSUER_KEY_KEY.into(),
        }
    }
}

/// What sentry reads from the `daprsystem` Configuration's `spec.mtls`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MtlsSettings {
    pub workload_cert_ttl: Option<Duration>,
    pub allowed_clock_skew: Option<Duration>,
    pub jwks_source: Option<String>,
}

/// A Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read the Configuration {0}: {1}")]
    Read(String, String),
    #[error("Configuration {name}: {field}: {detail}")]
    Field {
        name: String,
        field: &'static str,
        detail: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigurationDoc {
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    mtls: Mtls,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Mtls {
    #[serde(rename = "workloadCertTTL")]
    workload_cert_ttl: Option<String>,
    allowed_clock_skew: Option<String>,
    #[serde(default)]
    token_validators: Vec<TokenValidatorConfig>,
}

#[derive(Deserialize)]
struct TokenValidatorConfig {
    name: String,
    #[serde(default)]
    options: std::collections::BTreeMap<String, String>,
}

impl MtlsSettings {
    /// Reads `spec.mtls` of a Configuration (JSON or YAML value).
    pub fn from_configuration(name: &str, doc: serde_json::Value) -> Result<Self, ConfigError> {
        let doc: ConfigurationDoc = serde_json::from_value(doc)
            .map_err(|e| ConfigError::Read(name.into(), e.to_string()))?;
        let field = |field, detail: String| field_err(name, field, detail);
        let duration = |field, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| parse_go_duration(v).map_err(|e| field_err(name, field, e.to_string())))
                .transpose()
        };
        let mut jwks_source = None;
        for validator in doc.spec.mtls.token_validators {
            match validator.name.as_str() {
                "jwks" => {
                    jwks_source =
                        Some(validator.options.get("source").cloned().ok_or_else(|| {
                            field(
                                "spec.mtls.tokenValidators[jwks].options.source",
                                "is required: a JWKS file path, https URL or inline JSON".into(),
                            )
                        })?)
                }
                other => {
                    return Err(field(
                        "spec.mtls.tokenValidators",
                        format!(
                            "validator {other:?} cannot be listed (only \"jwks\"; kubernetes and insecure are built in)"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            workload_cert_ttl: duration(
                "spec.mtls.workloadCertTTL",
                &doc.spec.mtls.workload_cert_ttl,
            )?,
            allowed_clock_skew: duration(
                "spec.mtls.allowedClockSkew",
                &doc.spec.mtls.allowed_clock_skew,
            )?,
            jwks_source,
        })
    }

    /// Reads a Configuration YAML file (standalone mode).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(name.clone(), e.to_string()))?;
        let doc: serde_json::Value = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::Read(name.clone(), e.to_string()))?;
        Self::from_configuration(&name, doc)
    }
}

fn field_err(name: &str, field: &'static str, detail: String) -> ConfigError {
    ConfigError::Field {
        name: name.into(),
        field,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_are_daprs() {
        let args = Args::try_parse_from(["sentry"]).unwrap();
        assert_eq!(args.port, 50001);
        assert_eq!(args.healthz_port, 8080);
        assert_eq!(args.metrics_port, 9090);
        assert_eq!(args.trust_domain, "localhost");
        assert_eq!(args.config, "daprsystem");
        assert_eq!(args.mode, Mode::Standalone);
        assert_eq!(args.workload_cert_ttl, Duration::from_secs(86_400));
        assert_eq!(args.allowed_clock_skew, Duration::from_secs(900));
        assert_eq!(args.credential_names(), CredentialNames::default());
        assert_eq!(
            args.issuer_credentials,
            PathBuf::from("/var/run/secrets/dapr.io/credentials")
        );
    }

    #[test]
    fn bad_flags_are_one_clear_line() {
        let err = Args::try_parse_from(["sentry", "--mode", "cloud"]).unwrap_err();
        let line = daprs_api::cli::one_line(&err);
        assert!(
            line.contains("--mode") && line.contains("standalone, kubernetes"),
            "{line}"
        );
        for (flag, value, needle) in [
            ("--trust-domain", "Cluster.local", "lowercase"),
            ("--workload-cert-ttl", "0s", "longer than zero"),
        ] {
            let err = Args::try_parse_from(["sentry", flag, value]).unwrap_err();
            let line = daprs_api::cli::one_line(&err);
            assert!(line.contains(flag) && line.contains(needle), "{line}");
        }
        let err = Args::try_parse_from(["sentry", "--workload-cert-ttl", "1d"]).unwrap_err();
        let line = daprs_api::cli::one_line(&err);
        assert!(
            line.contains("--workload-cert-ttl") && line.contains("Go duration"),
            "{line}"
        );
    }

    #[test]
    fn reads_mtls_settings_from_a_configuration() {
        let doc = serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "daprsystem"},
            "spec": {"mtls": {
                "enabled": true,
                "workloadCertTTL": "1h",
                "allowedClockSkew": "2m",
                "tokenValidators": [{"name": "jwks", "options": {"source": "/jwks.json"}}]
            }}
        });
        let settings = MtlsSettings::from_configuration("daprsystem", doc).unwrap();
        assert_eq!(settings.workload_cert_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(settings.allowed_clock_skew, Some(Duration::from_secs(120)));
        assert_eq!(settings.jwks_source.as_deref(), Some("/jwks.json"));
        let empty = MtlsSettings::from_configuration("x", serde_json::json!({"spec": {}})).unwrap();
        assert_eq!(empty, MtlsSettings::default());
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let bad_ttl = serde_json::json!({"spec": {"mtls": {"workloadCertTTL": "1 day"}}});
        let err = MtlsSettings::from_configuration("daprsystem", bad_ttl).unwrap_err();
        assert!(
            err.to_string().contains("spec.mtls.workloadCertTTL"),
            "{err}"
        );
        let listed =
            serde_json::json!({"spec": {"mtls": {"tokenValidators": [{"name": "kubernetes"}]}}});
        let err = MtlsSettings::from_configuration("daprsystem", listed).unwrap_err();
        assert!(err.to_string().contains("built in"), "{err}");
    }
}
