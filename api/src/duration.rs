//! Go-style durations (`24h`, `15m`, `1h30m`, `500ms`, `1.5h`), as Dapr's Configuration uses them.

use std::time::Duration;

/// A duration string that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {why}; use a Go duration such as \"24h\", \"15m\" or \"1h30m\""
)]
pub struct DurationError {
    input: String,
    why: &'static str,
}

/// Parses a non-negative Go duration. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.starts_with('-') {
        return Err(err("it is negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number has no unit"))?;
        if number_len == 0 {
            return Err(err("a unit has no number"));
        }
        let value: f64 = rest[..number_len]
            .parse()
            .map_err(|_| err("a number is malformed"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err("the unit is unknown")),
        };
        rest = &rest[unit_len..];
        total += value * nanos_per_unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err("it is too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("24h", 86_400_000),
            ("15m", 900_000),
            ("1h30m", 5_400_000),
            ("1h30m0s", 5_400_000),
            ("500ms", 500),
            ("1.5h", 5_400_000),
            ("0", 0),
            ("2s", 2000),
        ];
        for (input, millis) in cases {
            assert_eq!(
                parse_go_duration(input).unwrap(),
                Duration::from_millis(millis),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects_with_a_hint() {
        for bad in ["", "5", "h", "5d", "-1h", "1h-5m", "abc"] {
            let err = parse_go_duration(bad).unwrap_err();
            assert!(
                err.to_string().contains("use a Go duration"),
                "{bad}: {err}"
            );
        }
    }
}
