//! What every daprs binary does before its own work: parse flags (exit 64 with one clear line on
//! a bad flag) and set up logging.

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Exit code for invalid configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Parses the process arguments; on a bad flag prints one line naming the flag, the value and
/// what is allowed, and exits 64. `--help` and `--version` print and exit 0.
///
/// Like Go's `flag` package (and so Dapr), a flag may be written with one dash: `-app-id x`.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse_from(go_style_args(std::env::args_os())) {
        Ok(args) => args,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => err.exit(),
            _ => {
                eprintln!("{}", one_line(&err));
                std::process::exit(EXIT_USAGE);
            }
        },
    }
}

/// Rewrites Go-style single-dash long flags (`-app-id`) to `--app-id`; short flags (`-h`),
/// negative numbers (`-1`) and everything after `--` are left alone.
pub fn go_style_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut after_separator = false;
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if after_separator || text == "--" {
                after_separator = true;
                return arg;
            }
            let single_dash_long = text.len() > 2
                && text.starts_with('-')
                && !text.starts_with("--")
                && text[1..].starts_with(|c: char| c.is_ascii_alphabetic())
                && text[1..]
                    .split('=')
                    .next()
                    .is_some_and(|name| name.len() > 1);
            if single_dash_long {
                format!("-{text}").into()
            } else {
                arg
            }
        })
        .collect()
}

/// The first line of clap's message plus what is allowed or suggested.
pub fn one_line(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let mut line = rendered.lines().next().unwrap_or_default().to_owned();
    let list = |kind| match err.get(kind) {
        Some(ContextValue::Strings(values)) if !values.is_empty() => Some(values.join(", ")),
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    if let Some(allowed) = list(ContextKind::ValidValue) {
        line.push_str(&format!(" (allowed: {allowed})"));
    }
    if err.kind() == ErrorKind::MissingRequiredArgument
        && let Some(missing) = list(ContextKind::InvalidArg)
    {
        line.push_str(&format!(": {missing}"));
    }
    if let Some(suggested) = list(ContextKind::SuggestedArg) {
        line.push_str(&format!(" (did you mean {suggested}?)"));
    }
    line
}

/// Log output settings shared by every binary (`--log-level`, `--log-as-json`).
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log level: debug, info, warn, error (or a tracing filter such as `daprs_sentry=debug`).
    #[arg(long = "log-level", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log as JSON lines (`--log-as-json`, or Go-style `--log-as-json=true|false`).
    #[arg(long = "log-as-json", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub log_as_json: bool,
}

fn parse_log_level(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    // Dapr's `fatal` has no tracing level; it logs errors.
    let level = |l: &str| {
        let l = l.to_ascii_lowercase();
        LEVELS
            .contains(&l.as_str())
            .then(|| if l == "fatal" { "error".to_owned() } else { l })
    };
    if let Some(level) = level(value) {
        return Ok(level);
    }
    // Or per-module directives: `daprs_sentry=debug,kube=warn`.
    let directives: Option<Vec<String>> = value
        .split(',')
        .map(|d| {
            let (target, l) = d.split_once('=')?;
            (!target.is_empty()).then_some(())?;
            Some(format!("{target}={}", level(l)?))
        })
        .collect();
    directives
        .map(|d| d.join(","))
        .ok_or_else(|| format!("use one of {} (or target=level,...)", LEVELS.join(", ")))
}

impl LogArgs {
    /// Installs the global tracing subscriber. Call once, early.
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false);
        if self.log_as_json {
            builder.json().flatten_event(true).init();
        } else {
            builder.init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, default_value_t = 1)]
        port: u16,
        #[arg(long, value_enum, default_value = "standalone")]
        mode: Mode,
    }

    #[derive(Clone, Debug, clap::ValueEnum)]
    enum Mode {
        Standalone,
        Kubernetes,
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let args = go_style_args(
            [
                "daprd", "-app-id", "orders", "-port=1", "-h", "-1", "--", "-x-y",
            ]
            .map(Into::into),
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "daprd", "--app-id", "orders", "--port=1", "-h", "-1", "--", "-x-y"
            ]
        );
        let parsed =
            Demo::try_parse_from(go_style_args(["x", "-port", "7"].map(Into::into))).unwrap();
        assert_eq!(parsed.port, 7);
    }

    #[test]
    fn log_as_json_takes_go_style_values() {
        for (args, want) in [
            (vec!["x"], false),
            (vec!["x", "--log-as-json"], true),
            (vec!["x", "--log-as-json=true"], true),
            (vec!["x", "--log-as-json=false"], false),
        ] {
            assert_eq!(
                LogDemo::try_parse_from(&args).unwrap().log.log_as_json,
                want,
                "{args:?}"
            );
        }
    }

    #[test]
    fn missing_required_flags_are_named() {
        #[derive(Debug, Parser)]
        struct Needs {
            #[arg(long)]
            app_id: String,
        }
        let line = one_line(&Needs::try_parse_from(["x"]).unwrap_err());
        assert!(line.contains("--app-id"), "{line}");
    }

    #[derive(Debug, Parser)]
    struct LogDemo {
        #[command(flatten)]
        log: LogArgs,
    }

    fn error(args: &[&str]) -> String {
        one_line(&Demo::try_parse_from(args).unwrap_err())
    }

    #[test]
    fn bad_values_name_the_flag_and_what_is_allowed() {
        let line = error(&["x", "--mode", "cloud"]);
        assert!(
            line.contains("--mode") && line.contains("allowed: standalone, kubernetes"),
            "{line}"
        );
        let line = error(&["x", "--port", "abc"]);
        assert!(line.contains("--port") && line.contains("abc"), "{line}");
        let line = one_line(&LogDemo::try_parse_from(["x", "--log-level", "loud!"]).unwrap_err());
        assert!(
            line.contains("--log-level") && line.contains("debug, info"),
            "{line}"
        );
        let line = error(&["x", "--prot", "1"]);
        assert!(
            line.contains("--prot") && line.contains("did you mean --port"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
