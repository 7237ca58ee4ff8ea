//! The sd_notify protocol as the workers use it. Outside systemd (no NOTIFY_SOCKET, e.g. under
//! `butler run`) every call is a no-op, so worker code never asks where it runs.

use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends READY, WATCHDOG, STATUS and STOPPING to the service manager, once per change.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    last_status: Mutex<String>,
}

impl Notifier {
    /// Reads NOTIFY_SOCKET and WATCHDOG_USEC from the environment systemd gave this process.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
            last_status: Mutex::new(String::new()),
        }
    }

    /// For `butler run` and tests: nothing is sent.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            watchdog: None,
            last_status: Mutex::new(String::new()),
        }
    }

    /// How often the working loop must ping: half of WatchdogSec, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    pub fn ready(&self, status: &str) {
        self.remember_status(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Called by the loop that does the work, never by a side task: if the loop hangs, the pings
    /// stop and systemd kills and restarts the worker.
    pub fn heartbeat(&self, status: &str) {
        if self.remember_status(status) {
            self.send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
        } else {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Returns whether the status changed.
    fn remember_status(&self, status: &str) -> bool {
        let mut last = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        if *last == status {
            return false;
        }
        status.clone_into(&mut last);
        true
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }
}
