//! Which repair each kind of incident gets: a pure decision from the kind and a few facts, so the
//! rules can be read in one table. The effects live in `repair`.

use serde::Serialize;

use crate::health::Kind;

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Re-detect ports and addresses, re-render and apply (the dynamic proxy's own reconcile).
    Reconcile,
    /// Connect the app's containers to the proxy network, then reconcile for their new address.
    Reconnect,
    /// Recreate or restart the nginx container with the last good config, then reconcile.
    RecreateProxy,
    /// Put the last applied config back over whatever changed it, validate and reload.
    ReapplyLastGood,
    /// `systemctl reset-failed` and start the unit.
    ResetAndStartUnit,
    /// Start the app's stopped containers, restart the unresponsive ones.
    RestartApp,
    /// Nothing the butler may or can do; `why` tells the person what to do instead.
    None { why: String },
}

impl Action {
    /// One line for logs, tables and the recoveries table's `action` column.
    pub fn describe(&self) -> String {
        match self {
            Action::Reconcile => "re-detect the port and re-render the config".into(),
            Action::Reconnect => "reconnect to the proxy network and re-render".into(),
            Action::RecreateProxy => "recreate nginx with the last good config".into(),
            Action::ReapplyLastGood => "re-apply the last good config over the drift".into(),
            Action::ResetAndStartUnit => "reset-failed and start the unit".into(),
            Action::RestartApp => "restart the app's containers".into(),
            Action::None { why } => format!("no automatic repair: {why}"),
        }
    }
}

/// What a strategy depends on besides the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `recovery.restart_apps = true`.
    pub restart_apps: bool,
    /// A container of the app has the label `butler.autorestart=true`.
    pub opted_in: bool,
    /// The butler's units can be managed here (systemd is PID 1).
    pub systemd: bool,
}

/// The one strategy per kind.
pub fn strategy(kind: Kind, facts: &Facts) -> Action {
    let restart = |what: &str| {
        if facts.opted_in || facts.restart_apps {
            Action::RestartApp
        } else {
            Action::None {
                why: format!(
                    "{what}; the app has not opted in to restarts (label butler.autorestart=true) \
                     and recovery.restart_apps is false: look at `docker logs` and start it yourself"
                ),
            }
        }
    };
    match kind {
        Kind::PortMismatch | Kind::RouteStale | Kind::RouteMissing | Kind::GatewayError => {
            Action::Reconcile
        }
        Kind::ProxyOutdated => Action::Reconcile,
        Kind::NotOnNetwork => Action::Reconnect,
        Kind::ProxyDown => Action::RecreateProxy,
        Kind::ConfigDrift | Kind::ConfigInvalid => Action::ReapplyLastGood,
        Kind::UnitFailed if facts.systemd => Action::ResetAndStartUnit,
        Kind::UnitFailed => Action::None {
            why: "systemd is not reachable from here; run `butler services start NAME`".into(),
        },
        Kind::ContainerDown => restart("the app's container stopped"),
        Kind::AppUnresponsive | Kind::AppError => restart("the app does not answer"),
        Kind::CrashLoop => Action::None {
            why: "the container keeps crashing, and restarting it again will not help: read \
                  `docker logs` for why it exits"
                .into(),
        },
        Kind::DiskLow | Kind::DiskFilling => Action::None {
            why: "free disk space: `docker system df` shows what Docker uses, `docker image prune` \
                  removes unused images"
                .into(),
        },
        Kind::MemoryLow => Action::None {
            why: "free memory: `docker stats --no-stream` shows which containers use it".into(),
        },
        Kind::LoadHigh => Action::None {
            why: "the host is overloaded: `docker stats --no-stream` shows which containers use the CPU"
                .into(),
        },
        Kind::DnsUnresolvable => Action::None {
            why: "names do not resolve on the proxy network; the proxy uses addresses, so routing \
                  is unaffected: check the engine's embedded DNS"
                .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_strategy_per_kind() {
        let none = Facts::default();
        let opted = Facts {
            opted_in: true,
            ..Facts::default()
        };
        let allowed = Facts {
            restart_apps: true,
            ..Facts::default()
        };
        let systemd = Facts {
            systemd: true,
            ..Facts::default()
        };
        let cases: &[(Kind, &Facts, Option<Action>)] = &[
            (Kind::PortMismatch, &none, Some(Action::Reconcile)),
            (Kind::RouteStale, &none, Some(Action::Reconcile)),
            (Kind::RouteMissing, &none, Some(Action::Reconcile)),
            (Kind::GatewayError, &none, Some(Action::Reconcile)),
            (Kind::NotOnNetwork, &none, Some(Action::Reconnect)),
            (Kind::ProxyDown, &none, Some(Action::RecreateProxy)),
            (Kind::ConfigDrift, &none, Some(Action::ReapplyLastGood)),
            (Kind::ConfigInvalid, &none, Some(Action::ReapplyLastGood)),
            (Kind::UnitFailed, &systemd, Some(Action::ResetAndStartUnit)),
            (Kind::UnitFailed, &none, None),
            (Kind::ContainerDown, &none, None),
            (Kind::ContainerDown, &opted, Some(Action::RestartApp)),
            (Kind::ContainerDown, &allowed, Some(Action::RestartApp)),
            (Kind::AppUnresponsive, &none, None),
            (Kind::AppUnresponsive, &opted, Some(Action::RestartApp)),
            (Kind::CrashLoop, &opted, None),
            (Kind::DiskLow, &none, None),
            (Kind::DiskFilling, &none, None),
            (Kind::MemoryLow, &none, None),
            (Kind::LoadHigh, &none, None),
            (Kind::DnsUnresolvable, &none, None),
        ];
        for (kind, facts, expected) in cases {
            let action = strategy(*kind, facts);
            match expected {
                Some(expected) => assert_eq!(&action, expected, "{kind}"),
                None => assert!(
                    matches!(&action, Action::None { why } if !why.is_empty()),
                    "{kind}: {action:?}"
                ),
            }
        }
        let Action::None { why } = strategy(Kind::ContainerDown, &none) else {
            unreachable!()
        };
        assert!(why.contains("butler.autorestart=true") && why.contains("restart_apps"));
    }
}
