//! Access control of incoming invocations: Configuration `spec.accessControl`, as Dapr's
//! `pkg/acl` applies it on the callee.
//!
//! - No `accessControl`: everything is allowed.
//! - The global `defaultAction` (deny when policies are given without one, allow otherwise)
//!   applies when the caller has no SPIFFE id (no mTLS), has no policy, or its trust domain or
//!   namespace differ from the policy's (the policy's trust domain defaults to `public`).
//! - A policy's operations match the method by path segments (`*` one segment, `**` the rest,
//!   a pattern also matches everything below it), case-insensitively for HTTP apps, and for
//!   HTTP apps the verb must be listed (or `*`). The longest matching operation wins; with none,
//!   the policy's `defaultAction` (or the global one) applies.

use daprs_api::SpiffeId;
use daprs_api::crd::configuration::AccessControlSpec;

/// The compiled access-control rules.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    spec: Option<AccessControlSpec>,
}

/// The outcome of a check, with the reason for logs and the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

fn allows(action: &str) -> Option<bool> {
    match action.to_ascii_lowercase().as_str() {
        "allow" => Some(true),
        "deny" => Some(false),
        _ => None,
    }
}

impl Acl {
    pub fn new(spec: Option<AccessControlSpec>) -> Self {
        Self { spec }
    }

    /// True when any rule is configured.
    pub fn is_configured(&self) -> bool {
        self.spec.is_some()
    }

    /// May `caller` call `method` with `verb` (`None` for gRPC apps)?
    pub fn check(&self, caller: Option<&SpiffeId>, method: &str, verb: Option<&str>) -> Decision {
        let Some(spec) = &self.spec else {
            return Decision::Allow;
        };
        let global = allows(&spec.default_action).unwrap_or(spec.policies.is_empty());
        let deny = |why: &str| {
            Decision::Deny(format!(
                "access control policy has denied access to id: {} operation: {method} verb: {} ({why})",
                caller
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                verb.unwrap_or("NONE"),
            ))
        };
        let by_global = |why: &str| if global { Decision::Allow } else { deny(why) };
        let Some(caller) = caller else {
            return by_global("the caller has no SPIFFE id; the default action applies");
        };
        let Some(policy) = spec.policies.iter().find(|p| p.app_id == caller.app_id()) else {
            return by_global("no policy for the caller; the default action applies");
        };
        let policy_td = if policy.trust_domain.is_empty() {
            daprs_api::names::DEFAULT_APP_TRUST_DOMAIN
        } else {
            policy.trust_domain.as_str()
        };
        let policy_ns = if policy.namespace.is_empty() {
            daprs_api::names::DEFAULT_NAMESPACE
        } else {
            policy.namespace.as_str()
        };
        if policy_td != caller.trust_domain() || policy_ns != caller.namespace() {
            return by_global("the caller's trust domain or namespace differ from the policy's");
        }
        let policy_default = allows(&policy.default_action).unwrap_or(global);
        let http = verb.is_some();
        let mut best: Option<((usize, usize), bool)> = None;
        for op in &policy.operations {
            let Some(len) = matches(&op.name, method, http) else {
                continue;
            };
            if let Some(verb) = verb {
                let listed = op
                    .http_verb
                    .iter()
                    .any(|v| v == "*" || v.eq_ignore_ascii_case(verb));
                if !listed {
                    continue;
                }
            }
            let action = allows(&op.action).unwrap_or(policy_default);
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, action));
            }
        }
        match best {
            Some((_, true)) => Decision::Allow,
            Some((_, false)) => deny("an operation rule denies it"),
            None if policy_default => Decision::Allow,
            None => deny("no operation rule matches; the policy's default action applies"),
        }
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// How specific a match of `pattern` on `method` is (segments, then literal segments, so
/// `/a/b` beats `/a/*`), or `None` when it does not match.
fn matches(pattern: &str, method: &str, case_insensitive: bool) -> Option<(usize, usize)> {
    let pattern = segments(pattern);
    let method = segments(method);
    let eq = |a: &str, b: &str| {
        if case_insensitive {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let literals = pattern.iter().filter(|p| **p != "*" && **p != "**").count();
    for (i, p) in pattern.iter().enumerate() {
        if *p == "**" {
            return Some((pattern.len(), literals));
        }
        let m = method.get(i)?;
        if *p != "*" && !eq(p, m) {
            return None;
        }
    }
    Some((pattern.len(), literals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daprs_api::crd::configuration::{AppOperationAction, AppPolicySpec};

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn acl() -> Acl {
        Acl::new(Some(AccessControlSpec {
            default_action: "deny".into(),
            trust_domain: "public".into(),
            policies: vec![AppPolicySpec {
                app_id: "frontend".into(),
                default_action: "deny".into(),
                namespace: "default".into(),
                trust_domain: "public".into(),
                operations: vec![
                    AppOperationAction {
                        name: "/orders/*".into(),
                        action: "allow".into(),
                        http_verb: vec!["GET".into(), "POST".into()],
                    },
                    AppOperationAction {
                        name: "/orders/admin".into(),
                        action: "deny".into(),
                        http_verb: vec!["*".into()],
                    },
                ],
            }],
        }))
    }

    #[test]
    fn operations_verbs_and_identities() {
        let acl = acl();
        let front = id("spiffe://public/ns/default/frontend");
        assert_eq!(
            acl.check(Some(&front), "orders/1", Some("GET")),
            Decision::Allow
        );
        assert_eq!(
            acl.check(Some(&front), "ORDERS/1/items", Some("post")),
            Decision::Allow
        );
        assert!(matches!(
            acl.check(Some(&front), "orders/1", Some("DELETE")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            acl.check(Some(&front), "orders/admin", Some("GET")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            acl.check(Some(&front), "payments", Some("GET")),
            Decision::Deny(_)
        ));
        let other_ns = id("spiffe://public/ns/prod/frontend");
        assert!(matches!(
            acl.check(Some(&other_ns), "orders/1", Some("GET")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            acl.check(None, "orders/1", Some("GET")),
            Decision::Deny(_)
        ));
        assert_eq!(
            Acl::default().check(None, "x", None),
            Decision::Allow,
            "no accessControl allows everything"
        );
        // Policies without a global defaultAction mean deny.
        let mut spec = acl.spec.clone().unwrap();
        spec.default_action = String::new();
        let acl = Acl::new(Some(spec));
        assert!(matches!(
            acl.check(Some(&id("spiffe://public/ns/default/x")), "a", None),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn patterns() {
        assert_eq!(matches("/a/*", "a/b", false), Some((2, 1)));
        assert_eq!(matches("/a/**", "a/b/c", false), Some((2, 1)));
        assert_eq!(matches("/a", "a/b", false), Some((1, 1)));
        assert_eq!(matches("/a/b", "a", false), None);
        assert_eq!(matches("/A", "a", false), None);
        assert_eq!(matches("/A", "a", true), Some((1, 1)));
    }
}
