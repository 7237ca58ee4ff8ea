//! Everything systemd: the unit names the butler owns, the notify protocol (READY, WATCHDOG, STATUS,
//! STOPPING), journald logging, and the supervisor that speaks to org.freedesktop.systemd1 over
//! D-Bus. No other module talks to systemd.

pub mod journal;
pub mod logging;
pub mod notify;
pub mod supervisor;
pub mod units;
