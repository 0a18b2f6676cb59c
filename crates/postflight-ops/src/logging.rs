//! Log output on stderr: readable text on a terminal, or one JSON object per line for a log
//! pipeline. Fields such as `run_id`, `probe` and `check` become JSON keys, so one run can be
//! followed across the coordinator and its probes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Installs the global subscriber. `POSTFLIGHT_LOG` (an `EnvFilter` directive such as
/// `debug` or `postflight_coordinator=debug`) overrides `default_filter`. Quietly does nothing
/// when a subscriber is already installed (tests that call `main` twice).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_env("POSTFLIGHT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
