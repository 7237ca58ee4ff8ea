//! Logging setup: straight to the journal with structured fields when stderr is the journal (the
//! worker runs as a unit), plain lines on stderr otherwise (a terminal, `butler run`, tests).

use std::io::IsTerminal as _;
use std::os::fd::AsFd;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go, decided once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journal,
    Stderr,
}

/// systemd sets JOURNAL_STREAM to the device:inode of the stream it connected to stderr; only when
/// they still match is stderr really the journal (a child whose stderr was redirected inherits the
/// variable but not the stream). See systemd.exec(5).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

/// Installs the global subscriber. `component` (a worker's name, or "cli") is attached to every
/// journal entry as BUTLER_WORKER so `journalctl BUTLER_WORKER=recovery` finds one worker's lines
/// even under `butler run`. `RUST_LOG` overrides the default level (info).
pub fn init(component: &str) -> LogTarget {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // journald's own levels: info is informational (6), not notice (5) as the crate's
                // default would have it, so `journalctl -p notice` stays quiet on a healthy host.
                let priorities = PriorityMappings {
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    ..PriorityMappings::new()
                };
                let layer = layer
                    .with_priority_mappings(priorities)
                    .with_field_prefix(None)
                    .with_syslog_identifier(format!("butler-{component}"))
                    .with_custom_fields([("BUTLER_WORKER", component)]);
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                return LogTarget::Journal;
            }
            // Fall through to stderr, which systemd still forwards to the journal.
            Err(error) => eprintln!("journald socket unavailable ({error}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    LogTarget::Stderr
}
