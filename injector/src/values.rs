//! Checks of annotation values and keys: what parses, and the nearest known key for a typo.

use daprs_api::annotations::{self, ANNOTATIONS};

/// `dapr.io/*` keys that are not injector annotations but are legitimately found on pods.
const OTHER_KNOWN_KEYS: &[&str] = &[
    annotations::LABEL_SIDECAR_INJECTED,
    annotations::LABEL_METRICS_ENABLED,
    annotations::LABEL_WATCHDOG_PATCHED,
];

/// Old or invented names users are known to write, and what they mean.
const LEGACY_KEYS: &[(&str, &str)] = &[
    ("dapr.io/id", annotations::APP_ID),
    ("dapr.io/port", annotations::APP_PORT),
    ("dapr.io/protocol", annotations::APP_PROTOCOL),
    ("dapr.io/profiling", annotations::ENABLE_PROFILING),
    ("dapr.io/logLevel", annotations::LOG_LEVEL),
    ("dapr.io/max-concurrency", annotations::APP_MAX_CONCURRENCY),
    ("dapr.io/enable", annotations::ENABLED),
];

/// True for a `dapr.io/*` key the injector knows.
pub fn is_known_key(key: &str) -> bool {
    annotations::find(key).is_some() || OTHER_KNOWN_KEYS.contains(&key)
}

/// The known key an unknown `key` most likely meant, if any is close enough.
pub fn nearest_key(key: &str) -> Option<&'static str> {
    if let Some((_, meant)) = LEGACY_KEYS
        .iter()
        .find(|(legacy, _)| legacy.eq_ignore_ascii_case(key))
    {
        return Some(meant);
    }
    let lower = key.to_ascii_lowercase();
    let wanted = lower.strip_prefix(annotations::PREFIX).unwrap_or(&lower);
    let (best, distance) = ANNOTATIONS
        .iter()
        .map(|a| a.key)
        .map(|known| {
            let suffix = &known[annotations::PREFIX.len()..];
            (known, levenshtein(wanted, suffix))
        })
        .min_by_key(|(_, d)| *d)?;
    // Close enough to be a typo: a few edits, more for long keys.
    (distance <= (wanted.chars().count() / 4).max(2)).then_some(best)
}

/// Edit distance (insertions, deletions, substitutions).
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A Kubernetes resource quantity: a signed decimal number and an optional suffix
/// (`Ki`..`Ei`, `n`, `u`, `m`, `k`, `M`..`E`, or an exponent `e3`/`E-2`).
pub fn is_quantity(value: &str) -> bool {
    let s = value.strip_prefix(['+', '-']).unwrap_or(value);
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exp) => {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            }
            None => false,
        },
    }
}

/// True for a name that is a DNS-1123 label (lowercase alphanumerics and `-`, starting and
/// ending alphanumeric, at most 63 characters).
pub fn is_dns_label(name: &str) -> bool {
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 63
        && ok_end(name.chars().next())
        && ok_end(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An environment variable name as Kubernetes accepts it (C identifier; Kubernetes allows a
/// little more, Dapr's splitter expects this).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `dapr.io/env` (`K=V,K2=V2`) as Dapr does: at a comma only when what follows is a
/// name and `=`, so values may contain commas. `Err` names the part that is not `K=V`.
pub fn split_env(value: &str) -> Result<Vec<(String, String)>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut parts: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_pair = piece
            .split_once('=')
            .is_some_and(|(name, _)| is_env_name(name.trim()));
        match parts.last_mut() {
            Some(last) if !starts_pair => {
                last.push(',');
                last.push_str(piece);
            }
            _ => parts.push(piece.to_owned()),
        }
    }
    parts
        .into_iter()
        .map(|part| match part.split_once('=') {
            Some((name, v)) if is_env_name(name.trim()) => {
                Ok((name.trim().to_owned(), v.trim().to_owned()))
            }
            _ => Err(format!("{part:?} is not NAME=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_key() {
        let cases = [
            ("dapr.io/app-prot", Some("dapr.io/app-port")),
            ("dapr.io/appport", Some("dapr.io/app-port")),
            ("dapr.io/App-Id", Some("dapr.io/app-id")),
            ("dapr.io/id", Some("dapr.io/app-id")),
            ("dapr.io/port", Some("dapr.io/app-port")),
            ("dapr.io/enabeld", Some("dapr.io/enabled")),
            (
                "dapr.io/sidecar-cpu-limits",
                Some("dapr.io/sidecar-cpu-limit"),
            ),
            ("dapr.io/log-levle", Some("dapr.io/log-level")),
            ("dapr.io/something-else-entirely", None),
        ];
        for (key, want) in cases {
            assert_eq!(nearest_key(key), want, "{key}");
        }
        assert!(is_known_key("dapr.io/app-port"));
        assert!(is_known_key("dapr.io/sidecar-injected"));
        assert!(!is_known_key("dapr.io/app-prot"));
    }

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        for ok in [
            "1", "0.5", ".5", "100m", "1Gi", "512Mi", "1e3", "1E-2", "+2k", "-1", "1.5G",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "abc", "1GB", "1 Gi", "1..5", "1e", "m", "1gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("orders"));
        assert!(is_dns_label("a-1"));
        for bad in ["", "Orders", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn env_splits_only_before_a_name() {
        assert_eq!(
            split_env("A=1,B=x,y,C_2= z ").unwrap(),
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "x,y".to_owned()),
                ("C_2".to_owned(), "z".to_owned())
            ]
        );
        assert_eq!(split_env("").unwrap(), []);
        assert!(split_env("novalue").is_err());
        assert!(split_env("1A=b").is_err());
    }
}
