//! Configuration `spec.api.allowed` / `spec.api.denied`: which Dapr APIs the sidecar serves.
//!
//! Dapr's rules, per protocol (a rule's `protocol` is `http` or `grpc`; a rule with another or
//! no protocol applies to neither):
//! - An API in `denied` is off, even when `allowed` lists it too.
//! - When `allowed` has rules, only the APIs it lists are on; when it has none, every API not
//!   denied is on.
//! - The health routes (`/v1.0/healthz`, `/v1.0/healthz/outbound`) are always on.
//! - HTTP: a rule `{name, version}` matches an API group (`state` `v1`, `state` `v1alpha1`,
//!   ...), or, in Dapr's older form, any route whose `<url version>/<route>` starts with
//!   `<version>/<name>` (`v1.0/state`). A route that is off is not served at all: its path
//!   falls through to service invocation, as unknown paths do (404 `ERR_DIRECT_INVOKE`), and
//!   to a plain 404 when the `invoke` API is off too.
//! - gRPC: a rule names a group of `dapr.proto.runtime.v1.Dapr` methods (`state` `v1` is
//!   `GetState`, `SaveState`, ...); its protocol must be `grpc` exactly. A method that is off
//!   answers `Unimplemented` ("Not Implemented", ErrorInfo `http.code: 501`,
//!   `http.error_message: requested endpoint is not available`). Rules that name no gRPC group
//!   count for nothing, so an allow list of only such rules leaves gRPC open.

use std::collections::{HashMap, HashSet};
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use daprs_api::crd::configuration::{ApiAccessRule, ApiSpec};
use futures::future::Either;
use tonic_types::{ErrorDetails, StatusExt};

/// Dapr's HTTP API group names (`endpoints/endpointgroup.go`).
pub const GROUPS: &[&str] = &[
    "invoke",
    "state",
    "publish",
    "bindings",
    "secrets",
    "actors",
    "metadata",
    "configuration",
    "lock",
    "unlock",
    "crypto",
    "subtlecrypto",
    "workflows",
    "healthz",
    "jobs",
    "shutdown",
    "conversation",
];

/// Group versions and the URL version each stands for.
const VERSIONS: &[(&str, &str)] = &[
    ("v1", "v1.0"),
    ("v1alpha1", "v1.0-alpha1"),
    ("v1alpha2", "v1.0-alpha2"),
    ("v1beta1", "v1.0-beta1"),
];

/// The path template of service invocation: the fall-through of every unmatched path.
pub const INVOKE_ROUTE: &str = "/v1.0/invoke/{*rest}";

const GRPC_PREFIX: &str = "/dapr.proto.runtime.";
const GRPC_SERVICE: &str = "/dapr.proto.runtime.v1.Dapr/";

/// The `dapr.proto.runtime.v1.Dapr` methods of each gRPC API group (`<name>.<version>`).
const GRPC_GROUPS: &[(&str, &[&str])] = &[
    ("invoke.v1", &["InvokeService"]),
    (
        "state.v1",
        &[
            "GetState",
            "GetBulkState",
            "SaveState",
            "DeleteState",
            "DeleteBulkState",
            "ExecuteStateTransaction",
        ],
    ),
    ("state.v1alpha1", &["QueryStateAlpha1"]),
    ("publish.v1", &["PublishEvent", "BulkPublishEvent"]),
    ("publish.v1alpha1", &["BulkPublishEventAlpha1"]),
    ("bindings.v1", &["InvokeBinding"]),
    ("secrets.v1", &["GetSecret", "GetBulkSecret"]),
    (
        "actors.v1",
        &[
            "RegisterActorTimer",
            "UnregisterActorTimer",
            "RegisterActorReminder",
            "GetActorReminder",
            "UnregisterActorReminder",
            "UnregisterActorRemindersByType",
            "ListActorReminders",
            "GetActorState",
            "ExecuteActorStateTransaction",
            "InvokeActor",
        ],
    ),
    ("actors.v1alpha1", &["SubscribeActorEventsAlpha1"]),
    ("metadata.v1", &["GetMetadata", "SetMetadata"]),
    (
        "configuration.v1alpha1",
        &[
            "GetConfigurationAlpha1",
            "SubscribeConfigurationAlpha1",
            "UnsubscribeConfigurationAlpha1",
        ],
    ),
    (
        "configuration.v1",
        &[
            "GetConfiguration",
            "SubscribeConfiguration",
            "UnsubscribeConfiguration",
        ],
    ),
    ("lock.v1alpha1", &["TryLockAlpha1"]),
    ("unlock.v1alpha1", &["UnlockAlpha1"]),
    (
        "subtlecrypto.v1alpha1",
        &[
            "SubtleGetKeyAlpha1",
            "SubtleEncryptAlpha1",
            "SubtleDecryptAlpha1",
            "SubtleSignAlpha1",
            "SubtleVerifyAlpha1",
            "SubtleWrapKeyAlpha1",
            "SubtleUnwrapKeyAlpha1",
        ],
    ),
    ("crypto.v1alpha1", &["EncryptAlpha1", "DecryptAlpha1"]),
    (
        "workflows.v1alpha1",
        &[
            "StartWorkflowAlpha1",
            "GetWorkflowAlpha1",
            "TerminateWorkflowAlpha1",
            "RaiseEventWorkflowAlpha1",
            "PurgeWorkflowAlpha1",
            "PauseWorkflowAlpha1",
            "ResumeWorkflowAlpha1",
        ],
    ),
    (
        "workflows.v1beta1",
        &[
            "StartWorkflowBeta1",
            "GetWorkflowBeta1",
            "TerminateWorkflowBeta1",
            "RaiseEventWorkflowBeta1",
            "PurgeWorkflowBeta1",
            "PauseWorkflowBeta1",
            "ResumeWorkflowBeta1",
        ],
    ),
    (
        "jobs.v1alpha1",
        &[
            "ScheduleJobAlpha1",
            "DeleteJobAlpha1",
            "GetJobAlpha1",
            "DeleteJobsByPrefixAlpha1",
            "ListJobsAlpha1",
        ],
    ),
    (
        "jobs.v1",
        &[
            "ScheduleJob",
            "DeleteJob",
            "GetJob",
            "DeleteJobsByPrefix",
            "ListJobs",
        ],
    ),
    ("shutdown.v1", &["Shutdown"]),
    ("subscribe.v1alpha1", &["SubscribeTopicEventsAlpha1"]),
    ("conversation.v1alpha1", &["ConverseAlpha1"]),
    ("conversation.v1alpha2", &["ConverseAlpha2"]),
];

fn grpc_group(name: &str, version: &str) -> Option<&'static [&'static str]> {
    let key = format!("{name}.{version}");
    GRPC_GROUPS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, methods)| *methods)
}

/// The API allow and deny lists of one Configuration, ready to check requests against.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// `<version>/<name>` of the HTTP rules.
    http_allowed: HashSet<String>,
    http_denied: HashSet<String>,
    /// Full gRPC method paths.
    grpc_allowed: HashSet<String>,
    grpc_denied: HashSet<String>,
}

impl ApiAccess {
    pub fn new(spec: Option<&ApiSpec>) -> Self {
        let Some(spec) = spec else {
            return ApiAccess::default();
        };
        let http = |rules: &[ApiAccessRule]| -> HashSet<String> {
            rules
                .iter()
                .filter(|r| r.protocol.eq_ignore_ascii_case("http"))
                .map(|r| format!("{}/{}", r.version, r.name))
                .collect()
        };
        let grpc = |rules: &[ApiAccessRule]| -> HashSet<String> {
            rules
                .iter()
                .filter(|r| r.protocol == "grpc")
                .filter_map(|r| grpc_group(&r.name, &r.version))
                .flatten()
                .map(|m| format!("{GRPC_SERVICE}{m}"))
                .collect()
        };
        ApiAccess {
            http_allowed: http(&spec.allowed),
            http_denied: http(&spec.denied),
            grpc_allowed: grpc(&spec.allowed),
            grpc_denied: grpc(&spec.denied),
        }
    }

    /// Whether the HTTP route with this path template (`/v1.0/state/{store}/{key}`) is on.
    pub fn http_allows(&self, template: &str) -> bool {
        if self.http_allowed.is_empty() && self.http_denied.is_empty() {
            return true;
        }
        let path = template.trim_start_matches('/');
        let (url_version, route) = path.split_once('/').unwrap_or((path, ""));
        let name = route.split('/').next().unwrap_or_default();
        if name == "healthz" {
            return true;
        }
        let version = VERSIONS
            .iter()
            .find(|(_, url)| *url == url_version)
            .map(|(v, _)| *v)
            .unwrap_or(url_version);
        let group = format!("{version}/{name}");
        let matches = |rules: &HashSet<String>| {
            rules.contains(&group) || rules.iter().any(|rule| path.starts_with(rule.as_str()))
        };
        if matches(&self.http_denied) {
            return false;
        }
        self.http_allowed.is_empty() || matches(&self.http_allowed)
    }

    /// Whether the gRPC method with this full path (`/dapr.proto.runtime.v1.Dapr/GetState`)
    /// is on.
    pub fn grpc_allows(&self, method: &str) -> bool {
        if !method.starts_with(GRPC_PREFIX) {
            return true;
        }
        if self.grpc_denied.contains(method) {
            return false;
        }
        self.grpc_allowed.is_empty() || self.grpc_allowed.contains(method)
    }
}

/// Rules Dapr ignores, each with why and how to fix it (logged when the Configuration loads).
pub fn ignored_rules(spec: &ApiSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (list, rules) in [("allowed", &spec.allowed), ("denied", &spec.denied)] {
        for rule in rules {
            let what = format!(
                "spec.api.{list} rule {{name: {:?}, version: {:?}, protocol: {:?}}}",
                rule.name, rule.version, rule.protocol
            );
            if rule.protocol.eq_ignore_ascii_case("grpc") {
                if rule.protocol != "grpc" {
                    problems.push(format!(
                        "{what} is ignored: gRPC rules need protocol \"grpc\" in lower case"
                    ));
                } else if grpc_group(&rule.name, &rule.version).is_none() {
                    problems.push(format!(
                        "{what} is ignored: no gRPC API has that name and version; names are {} and versions v1, v1alpha1, v1alpha2, v1beta1",
                        GROUPS.join(", ")
                    ));
                }
            } else if rule.protocol.eq_ignore_ascii_case("http") {
                let group = GROUPS.contains(&rule.name.as_str())
                    && VERSIONS.iter().any(|(v, _)| *v == rule.version);
                let first = rule.name.split('/').next().unwrap_or_default();
                let legacy =
                    VERSIONS.iter().any(|(_, url)| *url == rule.version) && GROUPS.contains(&first);
                if !group && !legacy {
                    problems.push(format!(
                        "{what} matches no HTTP API; names are {} and versions v1, v1alpha1, v1alpha2, v1beta1",
                        GROUPS.join(", ")
                    ));
                }
            } else {
                problems.push(format!("{what} is ignored: set protocol to http or grpc"));
            }
        }
    }
    problems
}

/// What a gRPC call to a method that is off gets (Dapr's answer).
pub fn blocked_grpc() -> tonic::Status {
    tonic::Status::with_error_details(
        tonic::Code::Unimplemented,
        "Not Implemented",
        ErrorDetails::with_error_info(
            "Not Implemented",
            crate::errors::DOMAIN,
            HashMap::from([
                ("http.code".to_owned(), "501".to_owned()),
                (
                    "http.error_message".to_owned(),
                    "requested endpoint is not available".to_owned(),
                ),
            ]),
        ),
    )
}

/// A gRPC service that answers [`blocked_grpc`] for the methods that are off and passes the
/// rest to `inner`.
#[derive(Debug, Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    access: Arc<ApiAccess>,
}

impl<S> GrpcGuard<S> {
    pub fn new(inner: S, access: Arc<ApiAccess>) -> Self {
        GrpcGuard { inner, access }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.access.grpc_allows(request.uri().path()) {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(ready(Ok(blocked_grpc().into_http())))
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcGuard<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, version: &str, protocol: &str) -> ApiAccessRule {
        ApiAccessRule {
            name: name.into(),
            version: version.into(),
            protocol: protocol.into(),
        }
    }

    fn access(allowed: Vec<ApiAccessRule>, denied: Vec<ApiAccessRule>) -> ApiAccess {
        ApiAccess::new(Some(&ApiSpec { allowed, denied }))
    }

    const GET_STATE: &str = "/v1.0/state/{store}/{key}";
    const QUERY: &str = "/v1.0-alpha1/state/{store}/query";
    const SECRET: &str = "/v1.0/secrets/{store}/{key}";

    #[test]
    fn no_rules_allow_everything() {
        let a = ApiAccess::new(None);
        assert!(a.http_allows(GET_STATE) && a.http_allows(INVOKE_ROUTE));
        assert!(a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetState"));
    }

    #[test]
    fn an_allow_list_turns_off_what_it_does_not_name_but_health() {
        let a = access(vec![rule("state", "v1", "http")], vec![]);
        assert!(a.http_allows(GET_STATE));
        assert!(!a.http_allows(QUERY), "state v1alpha1 is another group");
        assert!(!a.http_allows(SECRET));
        assert!(!a.http_allows(INVOKE_ROUTE));
        assert!(!a.http_allows("/v1.0/metadata"));
        assert!(a.http_allows("/v1.0/healthz"));
        assert!(a.http_allows("/v1.0/healthz/outbound"));
        assert!(
            a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetSecret"),
            "HTTP rules leave gRPC alone"
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let a = access(
            vec![rule("state", "v1", "http"), rule("secrets", "v1", "http")],
            vec![rule("secrets", "v1", "http")],
        );
        assert!(a.http_allows(GET_STATE));
        assert!(!a.http_allows(SECRET));
        let a = access(vec![], vec![rule("state", "v1alpha1", "http")]);
        assert!(a.http_allows(GET_STATE) && !a.http_allows(QUERY));
    }

    #[test]
    fn legacy_rules_match_the_path_prefix() {
        let a = access(vec![rule("state", "v1.0", "HTTP")], vec![]);
        assert!(a.http_allows(GET_STATE));
        assert!(!a.http_allows(QUERY));
        let a = access(vec![], vec![rule("state", "v1.0-alpha1", "http")]);
        assert!(a.http_allows(GET_STATE) && !a.http_allows(QUERY));
    }

    #[test]
    fn rules_without_a_protocol_apply_to_neither() {
        let a = access(vec![rule("state", "v1", "")], vec![]);
        assert!(a.http_allows(SECRET));
        assert!(a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetSecret"));
    }

    #[test]
    fn grpc_rules_name_method_groups() {
        let a = access(
            vec![rule("state", "v1", "grpc"), rule("metadata", "v1", "grpc")],
            vec![rule("state", "v1alpha1", "grpc")],
        );
        assert!(a.grpc_allows("/dapr.proto.runtime.v1.Dapr/SaveState"));
        assert!(a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetMetadata"));
        assert!(!a.grpc_allows("/dapr.proto.runtime.v1.Dapr/QueryStateAlpha1"));
        assert!(!a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetSecret"));
        assert!(!a.grpc_allows("/dapr.proto.runtime.v1.Dapr/Shutdown"));
        assert!(a.grpc_allows("/grpc.health.v1.Health/Check"));
        assert!(a.http_allows(SECRET), "gRPC rules leave HTTP alone");
        // Protocol "GRPC" and unknown groups count for nothing: gRPC stays open.
        let a = access(
            vec![rule("state", "v1", "GRPC"), rule("stat", "v1", "grpc")],
            vec![],
        );
        assert!(a.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetSecret"));
    }

    #[test]
    fn ignored_rules_are_explained() {
        let spec = ApiSpec {
            allowed: vec![
                rule("state", "v1", "http"),
                rule("state", "v1.0", "http"),
                rule("stat", "v1", "http"),
                rule("state", "v1", ""),
                rule("state", "v1", "GRPC"),
                rule("state", "v2", "grpc"),
            ],
            denied: vec![],
        };
        let problems = ignored_rules(&spec);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("\"stat\"") && problems[0].contains("matches no HTTP API"));
        assert!(problems[1].contains("set protocol to http or grpc"));
        assert!(problems[2].contains("lower case"));
        assert!(problems[3].contains("no gRPC API"));
    }

    #[test]
    fn blocked_grpc_matches_dapr() {
        let status = blocked_grpc();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(status.message(), "Not Implemented");
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "Not Implemented");
        assert_eq!(info.metadata["http.code"], "501");
    }
}
