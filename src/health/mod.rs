//! Health: what the health-monitor looks at and what it concludes. `observe` gathers plain
//! observations from Docker, nginx, the host and systemd (the effects); `classify` turns them into
//! findings, severities and app statuses (pure, table-tested); `forecast` projects disk use;
//! `monitor` runs one round and records it; `alerts` tells people.

pub mod alerts;
pub mod classify;
pub mod forecast;
pub mod host;
pub mod model;
pub mod monitor;
pub mod observe;
pub mod probe;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::vocabulary::{AppStatus, Finding, IncidentState, Severity};

/// What kind of problem an incident is. Stored as its snake_case name; one recovery strategy each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The route sends traffic to a port the app's container does not listen on.
    PortMismatch,
    /// A running app container has no address on the proxy network.
    NotOnNetwork,
    /// Every container of an app has stopped.
    ContainerDown,
    /// An app container keeps restarting.
    CrashLoop,
    /// The route points at an address no container of the app has any more.
    RouteStale,
    /// The app runs and is on the network but the applied config has no route for it.
    RouteMissing,
    /// Nothing accepts connections on the routed port, and no other port explains it.
    AppUnresponsive,
    /// The app accepts connections but answers 5xx or not at all.
    AppError,
    /// The proxy answers 502/503/504 for an app that answers directly.
    GatewayError,
    /// The nginx container is missing, stopped, crash-looping or does not answer.
    ProxyDown,
    /// nginx runs from another image, network or port than the config says.
    ProxyOutdated,
    /// `nginx -t` refuses the live config although it is the recorded one.
    ConfigInvalid,
    /// The live config differs from the last version the butler applied.
    ConfigDrift,
    /// A butler unit is in the failed state.
    UnitFailed,
    DiskLow,
    /// At the recent rate, the disk fills within the warning horizon.
    DiskFilling,
    MemoryLow,
    LoadHigh,
    /// The app's container name does not resolve inside the proxy network.
    DnsUnresolvable,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::PortMismatch,
        Kind::NotOnNetwork,
        Kind::ContainerDown,
        Kind::CrashLoop,
        Kind::RouteStale,
        Kind::RouteMissing,
        Kind::AppUnresponsive,
        Kind::AppError,
        Kind::GatewayError,
        Kind::ProxyDown,
        Kind::ProxyOutdated,
        Kind::ConfigInvalid,
        Kind::ConfigDrift,
        Kind::UnitFailed,
        Kind::DiskLow,
        Kind::DiskFilling,
        Kind::MemoryLow,
        Kind::LoadHigh,
        Kind::DnsUnresolvable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PortMismatch => "port_mismatch",
            Kind::NotOnNetwork => "not_on_network",
            Kind::ContainerDown => "container_down",
            Kind::CrashLoop => "crash_loop",
            Kind::RouteStale => "route_stale",
            Kind::RouteMissing => "route_missing",
            Kind::AppUnresponsive => "app_unresponsive",
            Kind::AppError => "app_error",
            Kind::GatewayError => "gateway_error",
            Kind::ProxyDown => "proxy_down",
            Kind::ProxyOutdated => "proxy_outdated",
            Kind::ConfigInvalid => "config_invalid",
            Kind::ConfigDrift => "config_drift",
            Kind::UnitFailed => "unit_failed",
            Kind::DiskLow => "disk_low",
            Kind::DiskFilling => "disk_filling",
            Kind::MemoryLow => "memory_low",
            Kind::LoadHigh => "load_high",
            Kind::DnsUnresolvable => "dns_unresolvable",
        }
    }

    /// The layer a kind belongs to, for `butler health`'s per-layer table.
    pub fn layer(self) -> Layer {
        match self {
            Kind::PortMismatch
            | Kind::ContainerDown
            | Kind::CrashLoop
            | Kind::AppUnresponsive
            | Kind::AppError => Layer::Apps,
            Kind::NotOnNetwork | Kind::DnsUnresolvable => Layer::Network,
            Kind::RouteStale
            | Kind::RouteMissing
            | Kind::GatewayError
            | Kind::ProxyDown
            | Kind::ProxyOutdated
            | Kind::ConfigInvalid
            | Kind::ConfigDrift => Layer::Proxy,
            Kind::DiskLow | Kind::DiskFilling | Kind::MemoryLow | Kind::LoadHigh => Layer::Host,
            Kind::UnitFailed => Layer::Units,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown incident kind {text:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// The layers `butler health` reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Apps,
    Network,
    Proxy,
    Host,
    Units,
}

impl Layer {
    pub const ALL: [Layer; 5] = [
        Layer::Apps,
        Layer::Network,
        Layer::Proxy,
        Layer::Host,
        Layer::Units,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Apps => "apps",
            Layer::Network => "network",
            Layer::Proxy => "proxy",
            Layer::Host => "host",
            Layer::Units => "units",
        }
    }
}

/// Component strings, as the store and the dashboard use them.
pub fn app_component(app: &str) -> String {
    format!("app:{app}")
}
pub const PROXY_COMPONENT: &str = "proxy";
pub const HOST_COMPONENT: &str = "host";
pub fn unit_component(unit: &str) -> String {
    format!("unit:{unit}")
}

/// The app named by an `app:<name>` component.
pub fn component_app(component: &str) -> Option<&str> {
    component.strip_prefix("app:")
}

/// The unit named by a `unit:<unit>` component.
pub fn component_unit(component: &str) -> Option<&str> {
    component.strip_prefix("unit:")
}

/// A finding of `kind` at `component`; the severity comes from [`classify::severity`]'s rules.
pub fn finding(kind: Kind, severity: Severity, component: &str, summary: String) -> Finding {
    Finding {
        kind: kind.as_str().to_owned(),
        severity,
        component: component.to_owned(),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_ones_list_the_valid_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), *kind);
            assert_eq!(
                serde_json::to_string(kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        let error = "port-mismatch".parse::<Kind>().unwrap_err();
        assert!(
            error.contains("port_mismatch") && error.contains("unit_failed"),
            "{error}"
        );
    }

    #[test]
    fn components_name_their_subject() {
        assert_eq!(component_app(&app_component("shop")), Some("shop"));
        assert_eq!(
            component_unit(&unit_component("butler-recovery.service")),
            Some("butler-recovery.service")
        );
        assert_eq!(component_app(PROXY_COMPONENT), None);
    }
}
