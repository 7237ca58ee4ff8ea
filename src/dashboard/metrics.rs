//! `/metrics` in the Prometheus text format (0.0.4), rendered by hand from the store at scrape
//! time. Every figure already lives in the store (written by other processes), so there is no
//! in-process registry to keep: a scrape reads a few grouped rows and writes them out.

use std::fmt::Write as _;

use crate::health::IncidentState;
use crate::store::{CheckResult, IncidentCount, RecoveryCount, VersionStats};

use super::view::{AppView, ServicesView, Status};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the duration histograms: render is milliseconds, a reload on a busy
/// engine can take seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one scrape reports.
pub struct Input<'a> {
    pub apps: &'a [AppView],
    pub versions: &'a VersionStats,
    pub incidents: &'a [IncidentCount],
    pub recoveries: &'a [RecoveryCount],
    pub checks: &'a [CheckResult],
    pub services: &'a ServicesView,
}

pub fn render(input: &Input<'_>) -> String {
    let mut out = Exposition::default();
    let routed = input.apps.iter().filter(|a| a.routed).count();
    out.family(
        "butler_routes",
        "gauge",
        "Apps routed through the proxy now.",
    );
    out.sample("butler_routes", &[], routed as f64);
    out.family(
        "butler_route_servers",
        "gauge",
        "Upstream servers (app instances) behind the proxy now.",
    );
    let servers: usize = input.apps.iter().map(|a| a.servers.len()).sum();
    out.sample("butler_route_servers", &[], servers as f64);
    out.family("butler_apps", "gauge", "Apps by health status.");
    for status in Status::ALL {
        let n = input.apps.iter().filter(|a| a.status == status).count();
        out.sample("butler_apps", &[("status", status.as_str())], n as f64);
    }
    out.family(
        "butler_app_response_seconds",
        "gauge",
        "Each app's last response time through the proxy.",
    );
    for app in input.apps {
        if let Some(ms) = app.latency_ms {
            out.sample(
                "butler_app_response_seconds",
                &[("app", &app.name)],
                seconds(ms),
            );
        }
    }

    let v = input.versions;
    out.counter(
        "butler_config_versions_total",
        "Config versions rendered and recorded.",
        v.versions,
    );
    out.counter(
        "butler_config_applied_total",
        "Config versions that went live.",
        v.applied,
    );
    out.counter(
        "butler_nginx_reloads_total",
        "nginx reloads (SIGHUP), including ones rolled back after a failed probe.",
        v.reloads,
    );
    out.counter(
        "butler_config_validation_failures_total",
        "Config versions nginx -t refused.",
        v.failed_validations,
    );
    out.histogram(
        "butler_config_render_seconds",
        "Time to plan and render a config version.",
        v.timings.iter().filter_map(|t| t.render_ms.map(seconds)),
    );
    out.histogram(
        "butler_config_validate_seconds",
        "Time nginx -t took on a config version.",
        v.timings.iter().filter_map(|t| t.validate_ms.map(seconds)),
    );
    out.histogram(
        "butler_nginx_reload_seconds",
        "Time from SIGHUP until nginx served the new config.",
        v.timings.iter().filter_map(|t| t.reload_ms.map(seconds)),
    );

    out.family(
        "butler_incidents_total",
        "counter",
        "Incidents recorded, by kind and severity.",
    );
    let mut by_kind: std::collections::BTreeMap<(&str, &str), (i64, i64)> = Default::default();
    for c in input.incidents {
        let entry = by_kind
            .entry((c.kind.as_str(), c.severity.as_str()))
            .or_default();
        entry.0 += c.count;
        if c.state != IncidentState::Resolved {
            entry.1 += c.count;
        }
    }
    for ((kind, severity), (all, _)) in &by_kind {
        out.sample(
            "butler_incidents_total",
            &[("kind", kind), ("severity", severity)],
            *all as f64,
        );
    }
    out.family(
        "butler_incidents_open",
        "gauge",
        "Incidents not resolved yet (open, recovering or escalated), by kind and severity.",
    );
    for ((kind, severity), (_, open)) in &by_kind {
        out.sample(
            "butler_incidents_open",
            &[("kind", kind), ("severity", severity)],
            *open as f64,
        );
    }
    out.family(
        "butler_recoveries_total",
        "counter",
        "Recovery actions, by incident kind and outcome.",
    );
    for r in input.recoveries {
        out.sample(
            "butler_recoveries_total",
            &[("kind", &r.kind), ("outcome", r.outcome.as_str())],
            r.count as f64,
        );
    }

    out.family(
        "butler_check_latency_seconds",
        "gauge",
        "How long each check's latest run took.",
    );
    for c in input.checks {
        if let Some(ms) = c.latency_ms {
            out.sample(
                "butler_check_latency_seconds",
                &[("subject", &c.subject), ("check", &c.name)],
                seconds(ms),
            );
        }
    }
    out.family(
        "butler_check_up",
        "gauge",
        "1 when a check's latest run passed, else 0.",
    );
    for c in input.checks {
        out.sample(
            "butler_check_up",
            &[("subject", &c.subject), ("check", &c.name)],
            f64::from(u8::from(c.ok)),
        );
    }

    let s = input.services;
    out.family(
        "butler_systemd_available",
        "gauge",
        "1 when systemd answered for the butler's units, 0 without systemd.",
    );
    out.sample(
        "butler_systemd_available",
        &[],
        f64::from(u8::from(s.available)),
    );
    let units = s
        .units
        .iter()
        .filter(|u| u.unit.ends_with(".service") && u.load_state != "not-found");
    out.family(
        "butler_unit_restarts_total",
        "counter",
        "Automatic restarts of each butler unit (systemd's NRestarts).",
    );
    for u in units.clone() {
        out.sample(
            "butler_unit_restarts_total",
            &[("unit", &u.unit)],
            f64::from(u.restarts.unwrap_or(0)),
        );
    }
    out.family(
        "butler_unit_active",
        "gauge",
        "1 when the unit is active, else 0.",
    );
    for u in units.clone() {
        out.sample(
            "butler_unit_active",
            &[("unit", &u.unit)],
            f64::from(u8::from(u.is_active())),
        );
    }
    out.family(
        "butler_unit_memory_bytes",
        "gauge",
        "Memory each running unit uses (systemd's MemoryCurrent).",
    );
    for u in units {
        if let Some(bytes) = u.memory_bytes {
            out.sample(
                "butler_unit_memory_bytes",
                &[("unit", &u.unit)],
                bytes as f64,
            );
        }
    }
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn counter(&mut self, name: &str, help: &str, value: i64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    fn histogram(&mut self, name: &str, help: &str, values: impl Iterator<Item = f64>) {
        self.family(name, "histogram", help);
        let mut counts = [0u64; BUCKETS.len()];
        let (mut sum, mut total) = (0.0, 0u64);
        for value in values {
            sum += value;
            total += 1;
            for (bound, count) in BUCKETS.iter().zip(counts.iter_mut()) {
                if value <= *bound {
                    *count += 1;
                }
            }
        }
        let bucket = format!("{name}_bucket");
        for (bound, count) in BUCKETS.iter().zip(counts) {
            self.sample(&bucket, &[("le", &number(*bound))], count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], total as f64);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], total as f64);
    }
}

/// Milliseconds as seconds, to the microsecond: `4.2` ms is `0.0042`, not `0.004200000000000001`.
fn seconds(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e6
}

/// Label values escape backslash, double quote and newline (and nothing else).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Severity;
    use crate::store::{RecoveryOutcome, VersionTimings};

    #[test]
    fn histograms_are_cumulative_and_labels_are_escaped() {
        let versions = VersionStats {
            versions: 3,
            applied: 2,
            reloads: 2,
            failed_validations: 1,
            timings: vec![
                VersionTimings {
                    render_ms: Some(2.0),
                    validate_ms: Some(40.0),
                    reload_ms: Some(120.0),
                },
                VersionTimings {
                    render_ms: Some(8.0),
                    validate_ms: Some(60.0),
                    reload_ms: None,
                },
            ],
        };
        let incidents = vec![
            IncidentCount {
                kind: "app_down".into(),
                severity: Severity::High,
                state: IncidentState::Open,
                count: 2,
            },
            IncidentCount {
                kind: "app_down".into(),
                severity: Severity::High,
                state: IncidentState::Resolved,
                count: 3,
            },
        ];
        let recoveries = vec![RecoveryCount {
            kind: "app_down".into(),
            outcome: RecoveryOutcome::Success,
            count: 4,
        }];
        let checks = vec![CheckResult {
            subject: "app:\"odd\"\\name".into(),
            name: "tcp".into(),
            ok: false,
            latency_ms: Some(1.5),
            detail: String::new(),
            checked_at: String::new(),
        }];
        let services = ServicesView {
            available: false,
            reason: None,
            units: Vec::new(),
        };
        let text = render(&Input {
            apps: &[],
            versions: &versions,
            incidents: &incidents,
            recoveries: &recoveries,
            checks: &checks,
            services: &services,
        });
        for line in [
            "butler_config_validation_failures_total 1",
            "butler_nginx_reloads_total 2",
            "butler_config_render_seconds_bucket{le=\"0.005\"} 1",
            "butler_config_render_seconds_bucket{le=\"0.01\"} 2",
            "butler_config_render_seconds_bucket{le=\"+Inf\"} 2",
            "butler_config_render_seconds_count 2",
            "butler_nginx_reload_seconds_count 1",
            "butler_incidents_total{kind=\"app_down\",severity=\"high\"} 5",
            "butler_incidents_open{kind=\"app_down\",severity=\"high\"} 2",
            "butler_recoveries_total{kind=\"app_down\",outcome=\"success\"} 4",
            "butler_check_latency_seconds{subject=\"app:\\\"odd\\\"\\\\name\",check=\"tcp\"} 0.0015",
            "butler_check_up{subject=\"app:\\\"odd\\\"\\\\name\",check=\"tcp\"} 0",
            "butler_systemd_available 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
