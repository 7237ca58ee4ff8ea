//! The supervisor: all D-Bus talk with org.freedesktop.systemd1. It reads the butler units' state
//! and runs start/stop/restart jobs, waiting for each job's JobRemoved signal so callers learn the
//! real outcome, not just that systemd accepted the request.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};
use zbus_systemd::systemd1::ManagerProxy;

use super::units::{ButlerUnit, Worker};

const SYSTEMD: &str = "org.freedesktop.systemd1";

/// Which service manager to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The system manager (PID 1), where the packaged units live.
    System,
    /// The calling user's manager (`systemctl --user`).
    User,
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bus::System => "system",
            Bus::User => "user",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "cannot reach systemd on the {bus} bus ({reason}); is this host running systemd? \
         Without it, run the workers in the foreground with `butler run`"
    )]
    Unreachable { bus: Bus, reason: String },
    #[error("systemd refused to {action} {unit}: {reason}")]
    Refused {
        action: JobKind,
        unit: String,
        reason: String,
    },
    #[error(
        "systemd denied {doing} ({reason}): only root may start, stop or reset units unless a polkit \
         rule allows it; run this as root (butler-recovery.service runs as root for this reason)"
    )]
    Denied { doing: String, reason: String },
    #[error("D-Bus call to systemd failed while {doing}: {source}")]
    Call {
        doing: String,
        #[source]
        source: zbus::Error,
    },
    #[error("the signal stream from systemd ended before job {job} for {unit} finished")]
    SignalsEnded { job: String, unit: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Start,
    Stop,
    Restart,
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
        })
    }
}

/// What systemd knows of one unit, as `butler services list|status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitStatus {
    pub name: String,
    pub unit: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// Why the unit last stopped or failed: "success", "exit-code", "watchdog", "start-limit-hit"...
    pub result: Option<String>,
    pub main_pid: Option<u32>,
    /// Seconds since the unit entered the active state.
    pub uptime_secs: Option<u64>,
    /// Automatic restarts since the unit was started by hand (systemd's NRestarts).
    pub restarts: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// WatchdogSec; `None` for units without a watchdog.
    pub watchdog_secs: Option<f64>,
    /// Seconds since the worker last pinged the watchdog.
    pub watchdog_last_ping_secs: Option<f64>,
    pub exit_status: Option<i32>,
}

impl UnitStatus {
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }
}

/// The outcome of a start/stop/restart job, from its JobRemoved signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub unit: String,
    pub action: JobKind,
    /// "done", "failed", "canceled", "timeout", "dependency", "skipped" or "invalid".
    pub result: String,
}

impl JobOutcome {
    pub fn succeeded(&self) -> bool {
        self.result == "done"
    }
}

pub struct Supervisor {
    connection: Connection,
    manager: ManagerProxy<'static>,
    bus: Bus,
}

impl Supervisor {
    pub async fn connect(bus: Bus) -> Result<Self, SupervisorError> {
        let unreachable = |reason: String| SupervisorError::Unreachable { bus, reason };
        let connection = match bus {
            Bus::System => Connection::system().await,
            Bus::User => Connection::session().await,
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let manager = ManagerProxy::new(&connection)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // A D-Bus daemon without systemd behind it (a container, a non-systemd init) answers the
        // connection but not the manager: ask it something cheap to tell the two apart.
        manager
            .version()
            .await
            .map_err(|e| unreachable(format!("no service manager answers: {e}")))?;
        Ok(Self {
            connection,
            manager,
            bus,
        })
    }

    pub fn bus(&self) -> Bus {
        self.bus
    }

    /// The four workers and the target, in a fixed order, whether or not they are installed.
    pub async fn list(&self) -> Result<Vec<UnitStatus>, SupervisorError> {
        let units = Worker::ALL
            .into_iter()
            .map(ButlerUnit::Worker)
            .chain([ButlerUnit::Target]);
        let lookups = units.map(|unit| self.status(unit));
        futures_util::future::try_join_all(lookups).await
    }

    pub async fn status(&self, unit: ButlerUnit) -> Result<UnitStatus, SupervisorError> {
        let unit_name = unit.unit_name();
        // LoadUnit (unlike GetUnit) answers for units that are not loaded yet and for units that do
        // not exist (LoadState "not-found"), so every butler unit gets a row.
        let path = self
            .manager
            .load_unit(unit_name.clone())
            .await
            .map_err(|source| self.call_error(format!("looking up {unit_name}"), source))?;
        let general = self
            .properties(&path, "org.freedesktop.systemd1.Unit")
            .await?;
        let service = match unit {
            ButlerUnit::Worker(_) => {
                self.properties(&path, "org.freedesktop.systemd1.Service")
                    .await?
            }
            ButlerUnit::Target => HashMap::new(),
        };
        Ok(unit_status(unit, &general, &service, SystemTime::now()))
    }

    async fn properties(
        &self,
        path: &OwnedObjectPath,
        interface: &'static str,
    ) -> Result<HashMap<String, OwnedVariant>, SupervisorError> {
        let doing = || format!("reading {interface} properties of {}", path.as_str());
        let proxy = PropertiesProxy::builder(&self.connection)
            .destination(SYSTEMD)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|source| self.call_error(doing(), source))?;
        let interface =
            InterfaceName::try_from(interface).map_err(|e| self.call_error(doing(), e))?;
        proxy
            .get_all(interface)
            .await
            .map_err(|source| self.call_error(doing(), source.into()))
    }

    /// Runs a job and waits for systemd to finish it. The signal stream is opened before the job is
    /// queued: a fast job's JobRemoved can otherwise arrive before anyone listens.
    pub async fn run_job(
        &self,
        action: JobKind,
        unit: ButlerUnit,
    ) -> Result<JobOutcome, SupervisorError> {
        let unit_name = unit.unit_name();
        self.manager
            .subscribe()
            .await
            .map_err(|source| self.call_error("subscribing to systemd signals".into(), source))?;
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(|source| self.call_error("listening for JobRemoved".into(), source))?;
        let mode = "replace".to_owned();
        let queued = match action {
            JobKind::Start => self.manager.start_unit(unit_name.clone(), mode).await,
            JobKind::Stop => self.manager.stop_unit(unit_name.clone(), mode).await,
            JobKind::Restart => self.manager.restart_unit(unit_name.clone(), mode).await,
        };
        let job = queued.map_err(|source| match &source {
            _ if denial(&source).is_some() => {
                self.call_error(format!("a {action} of {unit_name}"), source)
            }
            zbus::Error::MethodError(_, message, _) => SupervisorError::Refused {
                action,
                unit: unit_name.clone(),
                reason: message.clone().unwrap_or_else(|| source.to_string()),
            },
            _ => self.call_error(format!("asking systemd to {action} {unit_name}"), source),
        })?;
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job.as_str() == job.as_str() {
                return Ok(JobOutcome {
                    unit: unit_name,
                    action,
                    result: args.result.clone(),
                });
            }
        }
        Err(SupervisorError::SignalsEnded {
            job: job.to_string(),
            unit: unit_name,
        })
    }

    pub async fn reset_failed(&self, unit: ButlerUnit) -> Result<(), SupervisorError> {
        let unit_name = unit.unit_name();
        self.manager
            .reset_failed_unit(unit_name.clone())
            .await
            .map_err(|source| self.call_error(format!("resetting {unit_name}"), source))
    }

    fn call_error(&self, doing: String, source: zbus::Error) -> SupervisorError {
        match denial(&source) {
            Some(reason) => SupervisorError::Denied { doing, reason },
            None => SupervisorError::Call { doing, source },
        }
    }
}

/// What systemd said when it does not trust the caller: without polkit, AccessDenied; with polkit
/// but no agent to ask, InteractiveAuthorizationRequired. zbus turns the standard errors into
/// `fdo::Error`s, others stay method errors.
fn denial(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::FDO(fdo) => match &**fdo {
            zbus::fdo::Error::AccessDenied(reason)
            | zbus::fdo::Error::InteractiveAuthorizationRequired(reason) => Some(reason.clone()),
            _ => None,
        },
        zbus::Error::MethodError(name, message, _)
            if matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.AccessDenied"
                    | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            ) =>
        {
            Some(message.clone().unwrap_or_else(|| name.to_string()))
        }
        _ => None,
    }
}

fn unit_status(
    unit: ButlerUnit,
    general: &HashMap<String, OwnedVariant>,
    service: &HashMap<String, OwnedVariant>,
    now: SystemTime,
) -> UnitStatus {
    let text = |map: &HashMap<String, OwnedVariant>, key: &str| {
        map.get(key)
            .and_then(|value| <&str>::try_from(value).ok())
            .map(str::to_owned)
    };
    let number = |map: &HashMap<String, OwnedVariant>, key: &str| {
        map.get(key).and_then(|value| u64::try_from(value).ok())
    };
    let small = |map: &HashMap<String, OwnedVariant>, key: &str| {
        map.get(key).and_then(|value| u32::try_from(value).ok())
    };
    let now_usec = crate::clock::since_epoch(now).as_micros() as u64;
    let since = |usec: Option<u64>| {
        usec.filter(|&t| t > 0 && t <= now_usec)
            .map(|t| now_usec - t)
    };

    let active_state = text(general, "ActiveState").unwrap_or_else(|| "unknown".into());
    let running = matches!(
        active_state.as_str(),
        "active" | "reloading" | "deactivating"
    );
    // systemd reports "unknown" memory as u64::MAX.
    let memory_bytes = number(service, "MemoryCurrent").filter(|&bytes| bytes != u64::MAX);
    let watchdog_usec = number(service, "WatchdogUSec").filter(|&usec| usec > 0);
    UnitStatus {
        name: unit.short_name().to_owned(),
        unit: unit.unit_name(),
        description: text(general, "Description").unwrap_or_default(),
        load_state: text(general, "LoadState").unwrap_or_else(|| "unknown".into()),
        sub_state: text(general, "SubState").unwrap_or_else(|| "unknown".into()),
        result: text(service, "Result"),
        main_pid: small(service, "MainPID").filter(|&pid| pid > 0),
        uptime_secs: if running {
            since(number(general, "ActiveEnterTimestamp")).map(|usec| usec / 1_000_000)
        } else {
            None
        },
        restarts: small(service, "NRestarts"),
        memory_bytes: if running { memory_bytes } else { None },
        watchdog_secs: watchdog_usec.map(|usec| usec as f64 / 1e6),
        watchdog_last_ping_secs: if running && watchdog_usec.is_some() {
            since(number(service, "WatchdogTimestamp")).map(|usec| usec as f64 / 1e6)
        } else {
            None
        },
        exit_status: service
            .get("ExecMainStatus")
            .and_then(|value| i32::try_from(value).ok()),
        active_state,
    }
}

/// A compact uptime for tables: "45s", "12m", "3h20m", "2d4h".
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Memory in MiB with one decimal, as `systemctl status` shows it.
pub fn format_memory(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

/// How long to wait for one job before giving up on a manager that never answers.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn variant<'a>(value: impl Into<zbus::Variant<'a>>) -> OwnedVariant {
        value.into().try_into_owned().unwrap()
    }

    #[test]
    fn unit_status_reads_systemd_properties() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now_usec = 1_000_000u64 * 1_000_000;
        let general = HashMap::from([
            ("Description".to_owned(), variant("Butler dynamic proxy")),
            ("LoadState".to_owned(), variant("loaded")),
            ("ActiveState".to_owned(), variant("active")),
            ("SubState".to_owned(), variant("running")),
            (
                "ActiveEnterTimestamp".to_owned(),
                variant(now_usec - 90_000_000),
            ),
        ]);
        let service = HashMap::from([
            ("MainPID".to_owned(), variant(4242u32)),
            ("NRestarts".to_owned(), variant(1u32)),
            ("MemoryCurrent".to_owned(), variant(6u64 * 1024 * 1024)),
            ("WatchdogUSec".to_owned(), variant(10_000_000u64)),
            (
                "WatchdogTimestamp".to_owned(),
                variant(now_usec - 2_500_000),
            ),
            ("Result".to_owned(), variant("success")),
        ]);
        let status = unit_status(
            ButlerUnit::Worker(Worker::DynamicProxy),
            &general,
            &service,
            now,
        );
        assert_eq!(status.unit, "butler-dynamic-proxy.service");
        assert_eq!(status.name, "dynamic-proxy");
        assert!(status.is_active());
        assert_eq!(status.main_pid, Some(4242));
        assert_eq!(status.uptime_secs, Some(90));
        assert_eq!(status.restarts, Some(1));
        assert_eq!(status.memory_bytes, Some(6 * 1024 * 1024));
        assert_eq!(status.watchdog_secs, Some(10.0));
        assert_eq!(status.watchdog_last_ping_secs, Some(2.5));
    }

    #[test]
    fn stopped_and_missing_units_have_no_live_figures() {
        let general = HashMap::from([
            ("LoadState".to_owned(), variant("not-found")),
            ("ActiveState".to_owned(), variant("inactive")),
            ("SubState".to_owned(), variant("dead")),
            ("ActiveEnterTimestamp".to_owned(), variant(5u64)),
        ]);
        let service = HashMap::from([
            ("MainPID".to_owned(), variant(0u32)),
            ("MemoryCurrent".to_owned(), variant(u64::MAX)),
            ("WatchdogUSec".to_owned(), variant(0u64)),
        ]);
        let status = unit_status(
            ButlerUnit::Worker(Worker::Recovery),
            &general,
            &service,
            SystemTime::now(),
        );
        assert_eq!(status.load_state, "not-found");
        assert_eq!(status.main_pid, None);
        assert_eq!(status.uptime_secs, None);
        assert_eq!(status.memory_bytes, None);
        assert_eq!(status.watchdog_secs, None);
    }

    #[test]
    fn uptime_and_memory_read_like_systemctl() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(125), "2m05s");
        assert_eq!(format_uptime(3 * 3600 + 20 * 60), "3h20m");
        assert_eq!(format_uptime(2 * 86_400 + 4 * 3600 + 1), "2d4h");
        assert_eq!(format_memory(6 * 1024 * 1024 + 512 * 1024), "6.5M");
    }
}
