//! `namespace:serviceaccount` patterns of callers allowed to get sidecars injected, with Go's
//! `path.Match` glob syntax (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), as Dapr matches them.

use std::fmt;

/// Controllers whose pods get sidecars: Dapr's built-in list.
pub const BUILT_IN_ALLOWED: &[&str] = &[
    "kube-system:replicaset-controller",
    "kube-system:replication-controller",
    "kube-system:deployment-controller",
    "kube-system:cronjob-controller",
    "kube-system:job-controller",
    "kube-system:statefulset-controller",
    "kube-system:daemon-set-controller",
    "openshift-operator-lifecycle-manager:olm-operator-serviceaccount",
    "tekton-pipelines:tekton-pipelines-controller",
    "mirrord:mirrord-operator",
];

/// Members of this group are always allowed.
pub const SYSTEM_MASTERS: &str = "system:masters";

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// One `namespace:name` glob pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountPattern {
    namespace: String,
    name: String,
}

impl ServiceAccountPattern {
    /// Parses `namespace:name`; both halves are globs and must be well-formed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (namespace, name) = match text.split_once(':') {
            Some((ns, name)) if !name.contains(':') && !ns.is_empty() && !name.is_empty() => {
                (ns, name)
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a service account pattern: expected exactly one ':' between a namespace and a name glob, such as \"team-*:builder\""
                ));
            }
        };
        for half in [namespace, name] {
            glob_match(half, "").map_err(|e| format!("{text:?}: {e}"))?;
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// True if `namespace`/`name` match both globs.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        glob_match(&self.namespace, namespace).unwrap_or(false)
            && glob_match(&self.name, name).unwrap_or(false)
    }
}

impl fmt::Display for ServiceAccountPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

/// Why a caller may get a sidecar: the allow-list entry it matched, or `system:masters`.
pub fn caller_allowed(
    username: &str,
    groups: &[String],
    extra: &[ServiceAccountPattern],
) -> Option<String> {
    if groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Some(SYSTEM_MASTERS.to_owned());
    }
    let (namespace, name) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')?;
    if let Some(hit) = BUILT_IN_ALLOWED
        .iter()
        .find(|p| p.split_once(':') == Some((namespace, name)))
    {
        return Some((*hit).to_owned());
    }
    extra
        .iter()
        .find(|p| p.matches(namespace, name))
        .map(ToString::to_string)
}

/// Go's `path.Match` for names without `/`: `Err` for a malformed pattern.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate the whole pattern first, so a bad pattern is an error even when matching fails
    // early (Go reports bad patterns the same way).
    let mut i = 0;
    while i < p.len() {
        i = match p[i] {
            '[' => class_end(&p, i)?,
            '\\' if i + 1 >= p.len() => return Err("pattern ends with '\\'".into()),
            '\\' => i + 2,
            _ => i + 1,
        };
    }
    Ok(match_from(&p, &n))
}

fn class_end(p: &[char], start: usize) -> Result<usize, String> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        match p.get(i) {
            None => return Err("unterminated '[' in pattern".into()),
            Some(']') if !first => return Ok(i + 1),
            Some('\\') => i += 2,
            Some(_) => i += 1,
        }
        first = false;
    }
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    let end = class_end(p, pi).unwrap_or(p.len());
                    if class_matches(&p[pi + 1..end - 1], n[ni]) {
                        pi = end;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '\\' && c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negated, class) = match class.first() {
        Some('^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < class.len() {
        let mut lo = class[i];
        if lo == '\\' && i + 1 < class.len() {
            i += 1;
            lo = class[i];
        }
        if i + 2 < class.len() && class[i + 1] == '-' {
            let mut hi = class[i + 2];
            i += 2;
            if hi == '\\' && i + 1 < class.len() {
                i += 1;
                hi = class[i];
            }
            hit |= lo <= c && c <= hi;
        } else {
            hit |= lo == c;
        }
        i += 1;
    }
    hit != negated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go_path_match() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*/b", "abc/b", true),
            ("a*b*c*d*e*", "axbxcxdxe", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("team-*", "team-a", true),
            ("team-*", "teams", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_match(pattern, name), Ok(want), "{pattern} {name}");
        }
        assert!(glob_match("[", "a").is_err());
        assert!(glob_match("a\\", "a").is_err());
        assert!(glob_match("[a-", "a").is_err());
    }

    #[test]
    fn callers_are_allowed_by_dapr_rules() {
        let sa = |s: &str| format!("system:serviceaccount:{s}");
        assert_eq!(
            caller_allowed(&sa("kube-system:replicaset-controller"), &[], &[]).as_deref(),
            Some("kube-system:replicaset-controller")
        );
        assert_eq!(caller_allowed(&sa("default:default"), &[], &[]), None);
        assert_eq!(caller_allowed("alice", &[], &[]), None);
        assert_eq!(
            caller_allowed("admin", &["system:masters".into()], &[]).as_deref(),
            Some("system:masters")
        );
        let extra = [ServiceAccountPattern::parse("ci-*:argo?").unwrap()];
        assert_eq!(
            caller_allowed(&sa("ci-1:argo1"), &[], &extra).as_deref(),
            Some("ci-*:argo?")
        );
        assert_eq!(caller_allowed(&sa("ci-1:argo12"), &[], &extra), None);
    }

    #[test]
    fn patterns_need_exactly_one_colon() {
        for bad in ["nocolon", "a:b:c", ":b", "a:", "a:[x"] {
            assert!(ServiceAccountPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ServiceAccountPattern::parse(" ns:sa ").unwrap().to_string(),
            "ns:sa"
        );
    }
}
