//! The butler's units and the short names users type for them (`dynamic-proxy` →
//! `butler-dynamic-proxy.service`). Pure: no D-Bus here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the butler's long-running workers; each is one systemd service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Worker {
    DynamicProxy,
    HealthMonitor,
    Recovery,
    Dashboard,
}

impl Worker {
    pub const ALL: [Worker; 4] = [
        Worker::DynamicProxy,
        Worker::HealthMonitor,
        Worker::Recovery,
        Worker::Dashboard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Worker::DynamicProxy => "dynamic-proxy",
            Worker::HealthMonitor => "health-monitor",
            Worker::Recovery => "recovery",
            Worker::Dashboard => "dashboard",
        }
    }

    pub fn unit(self) -> String {
        format!("butler-{}.service", self.name())
    }
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The target that groups every worker: `systemctl start butler.target` starts them all.
pub const TARGET: &str = "butler.target";

/// A unit the user may name in `butler services ...`: a worker or the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ButlerUnit {
    Worker(Worker),
    Target,
}

impl ButlerUnit {
    pub fn unit_name(self) -> String {
        match self {
            ButlerUnit::Worker(worker) => worker.unit(),
            ButlerUnit::Target => TARGET.to_owned(),
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            ButlerUnit::Worker(worker) => worker.name(),
            ButlerUnit::Target => "butler",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown service '{0}': valid names are dynamic-proxy, health-monitor, recovery, dashboard \
     (or their unit names butler-<name>.service), and butler.target for all of them"
)]
pub struct UnknownService(pub String);

impl FromStr for ButlerUnit {
    type Err = UnknownService;

    fn from_str(text: &str) -> Result<Self, UnknownService> {
        let name = text.trim();
        if matches!(name, "butler" | "butler.target" | "all") {
            return Ok(ButlerUnit::Target);
        }
        let short = name
            .strip_prefix("butler-")
            .unwrap_or(name)
            .trim_end_matches(".service");
        Worker::ALL
            .into_iter()
            .find(|worker| worker.name() == short)
            .map(ButlerUnit::Worker)
            .ok_or_else(|| UnknownService(text.to_owned()))
    }
}

impl FromStr for Worker {
    type Err = UnknownService;

    fn from_str(text: &str) -> Result<Self, UnknownService> {
        match text.parse()? {
            ButlerUnit::Worker(worker) => Ok(worker),
            ButlerUnit::Target => Err(UnknownService(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_names_map_to_units() {
        let cases = [
            ("dynamic-proxy", "butler-dynamic-proxy.service"),
            ("butler-dynamic-proxy", "butler-dynamic-proxy.service"),
            (
                "butler-dynamic-proxy.service",
                "butler-dynamic-proxy.service",
            ),
            ("health-monitor", "butler-health-monitor.service"),
            ("recovery", "butler-recovery.service"),
            ("dashboard.service", "butler-dashboard.service"),
            ("butler.target", "butler.target"),
            ("all", "butler.target"),
        ];
        for (input, unit) in cases {
            let parsed: ButlerUnit = input.parse().unwrap();
            assert_eq!(parsed.unit_name(), unit, "{input}");
        }
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        for bad in ["nginx", "", "dynamic", "butler-foo.service", "sshd.service"] {
            let error = bad.parse::<ButlerUnit>().unwrap_err().to_string();
            assert!(error.contains(&format!("'{bad}'")), "{error}");
            for worker in Worker::ALL {
                assert!(error.contains(worker.name()), "{error}");
            }
        }
        assert!("butler.target".parse::<Worker>().is_err());
    }
}
