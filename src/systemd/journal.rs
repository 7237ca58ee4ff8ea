//! Reading a unit's journal. journald has no D-Bus API for entries, so this runs `journalctl`, the
//! tool that owns the journal's file format, rather than parsing journal files by hand.

use std::process::Command;

use super::supervisor::Bus;

#[derive(Debug, thiserror::Error)]
#[error("cannot read the journal of {unit} with journalctl: {reason}")]
pub struct JournalError {
    unit: String,
    reason: String,
}

fn journalctl(unit: &str, bus: Bus) -> Command {
    let mut command = Command::new("journalctl");
    if bus == Bus::User {
        command.arg("--user");
    }
    command.args(["--no-pager", "--quiet", "-o", "short-iso", "-u", unit]);
    command
}

/// The unit's last `lines` journal lines, oldest first.
pub fn recent(unit: &str, bus: Bus, lines: usize) -> Result<Vec<String>, JournalError> {
    let output = journalctl(unit, bus)
        .args(["-n", &lines.to_string()])
        .output()
        .map_err(|e| JournalError {
            unit: unit.to_owned(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(JournalError {
            unit: unit.to_owned(),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Replaces this process with `journalctl` (following when asked), so the user gets its paging,
/// colours and Ctrl-C behaviour unchanged. Returns only if journalctl cannot be started.
pub fn show(unit: &str, bus: Bus, lines: usize, follow: bool) -> JournalError {
    use std::os::unix::process::CommandExt as _;
    let mut command = journalctl(unit, bus);
    command.args(["-n", &lines.to_string()]);
    if follow {
        command.arg("--follow");
    }
    let error = command.exec();
    JournalError {
        unit: unit.to_owned(),
        reason: error.to_string(),
    }
}

/// journald's native socket (systemd.journal-fields(7), "native protocol").
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// syslog priority of an incident of `severity` in the journal: critical 2 (crit), high 3 (err),
/// medium 4 (warning), low 5 (notice). `journalctl -p err` then lists high and critical ones.
pub fn priority(severity: crate::vocabulary::Severity) -> u8 {
    use crate::vocabulary::Severity;
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
    }
}

/// Writes one entry with our own PRIORITY and fields straight to journald; tracing's levels stop
/// at "error", and a critical incident deserves `crit`. Values with a newline use the protocol's
/// length-prefixed form.
pub fn send(priority: u8, message: &str, fields: &[(&str, &str)]) -> std::io::Result<()> {
    let mut entry = Vec::new();
    let mut field = |name: &str, value: &str| {
        if value.contains('\n') {
            entry.extend_from_slice(name.as_bytes());
            entry.push(b'\n');
            entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
            entry.extend_from_slice(value.as_bytes());
            entry.push(b'\n');
        } else {
            entry.extend_from_slice(format!("{name}={value}\n").as_bytes());
        }
    };
    field("PRIORITY", &priority.to_string());
    field("MESSAGE", message);
    for (name, value) in fields {
        field(name, value);
    }
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to(&entry, JOURNAL_SOCKET)?;
    Ok(())
}
