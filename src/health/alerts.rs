//! Telling people: `[alerts]` rules pick incidents by severity, kind and app, and run a command or
//! POST JSON to a webhook. Each rule fires at most once per `min_interval` for one problem (kind
//! and component), across processes and restarts (the store keeps when it last fired). Every
//! incident event is also a journal entry whose PRIORITY follows the severity.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::component_app;
use crate::config::AlertRule;
use crate::http;
use crate::store::{Incident, Store};
use crate::systemd::{journal, logging};

/// How long one command or webhook may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new incident.
    Opened,
    /// Recovery gave up, or there is nothing it may do: a person must act.
    Escalated,
    Resolved,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Opened => "opened",
            AlertEvent::Escalated => "escalated",
            AlertEvent::Resolved => "resolved",
        }
    }
}

/// What a command gets on stdin and a webhook in its body.
#[derive(Debug, Clone, Serialize)]
pub struct AlertPayload<'a> {
    pub event: AlertEvent,
    pub host: String,
    pub incident: &'a Incident,
}

/// Whether `rule` selects `incident`. Rules fire on opened and escalated incidents.
pub fn matches(rule: &AlertRule, event: AlertEvent, incident: &Incident) -> bool {
    event != AlertEvent::Resolved
        && rule.min_severity.is_none_or(|min| incident.severity >= min)
        && rule.kind.as_ref().is_none_or(|kind| *kind == incident.kind)
        && rule
            .app
            .as_ref()
            .is_none_or(|app| component_app(&incident.component) == Some(app.as_str()))
}

/// Runs the alert rules and writes the journal entry for incident events.
#[derive(Clone)]
pub struct Alerter {
    rules: Vec<AlertRule>,
    store: Store,
    /// Worker name for the journal's BUTLER_WORKER field.
    worker: &'static str,
}

impl Alerter {
    pub fn new(rules: Vec<AlertRule>, store: Store, worker: &'static str) -> Self {
        Self {
            rules,
            store,
            worker,
        }
    }

    /// Logs the event (journal PRIORITY from severity) and fires every matching rule that its
    /// rate limit allows. Delivery failures are logged, never returned: an alert that cannot be
    /// sent must not stop a health round or a repair.
    pub async fn notify(&self, event: AlertEvent, incident: &Incident) {
        self.log(event, incident);
        for (index, rule) in self.rules.iter().enumerate() {
            if !matches(rule, event, incident) {
                continue;
            }
            let target = rule
                .webhook
                .clone()
                .or_else(|| rule.command.as_ref().map(|c| c.join(" ")))
                .unwrap_or_default();
            let key = format!(
                "{} {} {}",
                event.as_str(),
                incident.kind,
                incident.component
            );
            let claimed = self
                .store
                .claim_alert(
                    format!("{index}:{target}"),
                    key,
                    crate::clock::now_ms(),
                    rule.min_interval.0.as_millis() as i64,
                )
                .await;
            match claimed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(rule = index, incident = incident.id, "alert rate-limited");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot check the alert rate limit; sending anyway");
                }
            }
            let payload = AlertPayload {
                event,
                host: hostname(),
                incident,
            };
            let result = match (&rule.command, &rule.webhook) {
                (Some(argv), _) => run_command(argv, &payload).await,
                (None, Some(url)) => post_webhook(url, &payload).await,
                (None, None) => Ok(()),
            };
            match result {
                Ok(()) => {
                    tracing::info!(rule = index, %target, incident = incident.id, event = event.as_str(), "alert sent")
                }
                Err(error) => {
                    tracing::warn!(rule = index, %target, incident = incident.id, "alert not delivered: {error}")
                }
            }
        }
    }

    fn log(&self, event: AlertEvent, incident: &Incident) {
        let message = format!(
            "incident {} {}: {} {} at {}: {}",
            incident.id,
            event.as_str(),
            incident.severity,
            incident.kind,
            incident.component,
            incident.summary
        );
        let priority = if event == AlertEvent::Resolved {
            6
        } else {
            journal::priority(incident.severity)
        };
        if logging::stderr_is_journal() {
            let id = incident.id.to_string();
            let sent = journal::send(
                priority,
                &message,
                &[
                    ("SYSLOG_IDENTIFIER", &format!("butler-{}", self.worker)),
                    ("BUTLER_WORKER", self.worker),
                    ("BUTLER_EVENT", event.as_str()),
                    ("BUTLER_INCIDENT_ID", &id),
                    ("BUTLER_INCIDENT_KIND", &incident.kind),
                    ("BUTLER_SEVERITY", incident.severity.as_str()),
                    ("BUTLER_COMPONENT", &incident.component),
                ],
            );
            if sent.is_ok() {
                return;
            }
        }
        match priority {
            0..=3 => tracing::error!(incident = incident.id, "{message}"),
            4 => tracing::warn!(incident = incident.id, "{message}"),
            _ => tracing::info!(incident = incident.id, "{message}"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` exited with {status}")]
    Exit { program: String, status: String },
    #[error("{target} did not finish within {DELIVERY_TIMEOUT:?}")]
    Timeout { target: String },
    #[error("webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
}

/// Runs the rule's command with the payload as JSON on stdin and the main facts in the
/// environment (BUTLER_ALERT_EVENT, BUTLER_INCIDENT_ID, _KIND, _SEVERITY, _COMPONENT, _SUMMARY).
async fn run_command(argv: &[String], payload: &AlertPayload<'_>) -> Result<(), DeliveryError> {
    let program = argv[0].clone();
    let incident = payload.incident;
    let mut child = tokio::process::Command::new(&program)
        .args(&argv[1..])
        .env("BUTLER_ALERT_EVENT", payload.event.as_str())
        .env("BUTLER_INCIDENT_ID", incident.id.to_string())
        .env("BUTLER_INCIDENT_KIND", &incident.kind)
        .env("BUTLER_INCIDENT_SEVERITY", incident.severity.as_str())
        .env("BUTLER_INCIDENT_COMPONENT", &incident.component)
        .env("BUTLER_INCIDENT_SUMMARY", &incident.summary)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DeliveryError::Spawn {
            program: program.clone(),
            source,
        })?;
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(&body).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(DeliveryError::Exit {
            program,
            status: status.to_string(),
        }),
        Ok(Err(source)) => Err(DeliveryError::Spawn { program, source }),
        Err(_) => Err(DeliveryError::Timeout { target: program }),
    }
}

/// POSTs the payload as JSON; any 2xx answer is delivered.
async fn post_webhook(url: &str, payload: &AlertPayload<'_>) -> Result<(), DeliveryError> {
    let fail = |reason: String| DeliveryError::Webhook {
        url: url.to_owned(),
        reason,
    };
    let (host, port, path) =
        http::parse_url(url).ok_or_else(|| fail("not an http:// URL".into()))?;
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let send = async { http::post_json(http::resolve(&host, port)?, &host, &path, &body).await };
    let answer = match tokio::time::timeout(DELIVERY_TIMEOUT, send).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return Err(fail(error.to_string())),
        Err(_) => {
            return Err(DeliveryError::Timeout {
                target: url.to_owned(),
            });
        }
    };
    if answer.status_text().starts_with('2') {
        Ok(())
    } else {
        Err(fail(format!(
            "answered {:?}",
            answer.first_line().unwrap_or("nothing")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::health::{IncidentState, Severity};
    use tokio::io::AsyncReadExt as _;

    fn incident(kind: &str, component: &str, severity: Severity) -> Incident {
        Incident {
            id: 7,
            kind: kind.into(),
            severity,
            component: component.into(),
            summary: "s".into(),
            state: IncidentState::Open,
            first_seen: String::new(),
            last_seen: String::new(),
            count: 1,
            attempts: 0,
            resolved_at: None,
        }
    }

    fn rule(min: Option<Severity>, kind: Option<&str>, app: Option<&str>) -> AlertRule {
        AlertRule {
            min_severity: min,
            kind: kind.map(Into::into),
            app: app.map(Into::into),
            command: Some(vec!["true".into()]),
            webhook: None,
            min_interval: HumanDuration::from_secs(60),
        }
    }

    #[test]
    fn rules_select_by_severity_kind_and_app() {
        let down = incident("container_down", "app:shop", Severity::High);
        let disk = incident("disk_low", "host", Severity::Medium);
        let cases = [
            (rule(None, None, None), &down, AlertEvent::Opened, true),
            (rule(None, None, None), &down, AlertEvent::Resolved, false),
            (
                rule(Some(Severity::High), None, None),
                &down,
                AlertEvent::Opened,
                true,
            ),
            (
                rule(Some(Severity::High), None, None),
                &disk,
                AlertEvent::Opened,
                false,
            ),
            (
                rule(Some(Severity::Critical), None, None),
                &down,
                AlertEvent::Escalated,
                false,
            ),
            (
                rule(None, Some("disk_low"), None),
                &disk,
                AlertEvent::Opened,
                true,
            ),
            (
                rule(None, Some("disk_low"), None),
                &down,
                AlertEvent::Opened,
                false,
            ),
            (
                rule(None, None, Some("shop")),
                &down,
                AlertEvent::Escalated,
                true,
            ),
            (
                rule(None, None, Some("blog")),
                &down,
                AlertEvent::Opened,
                false,
            ),
            (
                rule(None, None, Some("shop")),
                &disk,
                AlertEvent::Opened,
                false,
            ),
        ];
        for (i, (rule, incident, event, expected)) in cases.iter().enumerate() {
            assert_eq!(matches(rule, *event, incident), *expected, "case {i}");
        }
    }

    #[tokio::test]
    async fn a_webhook_gets_the_incident_as_json_and_a_command_runs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if n == 0 || text.contains("\"summary\"") && text.ends_with('}') {
                    break;
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let down = incident("container_down", "app:shop", Severity::High);
        let payload = AlertPayload {
            event: AlertEvent::Opened,
            host: "h".into(),
            incident: &down,
        };
        post_webhook(&format!("http://127.0.0.1:{port}/hook"), &payload)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(request.contains("\"kind\":\"container_down\""), "{request}");

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "cat > {}; echo $BUTLER_INCIDENT_KIND >> {}",
                out.display(),
                out.display()
            ),
        ];
        run_command(&argv, &payload).await.unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(written.contains("\"event\":\"opened\"") && written.ends_with("container_down\n"));
        let error = run_command(&["/nonexistent/alert".to_owned()], &payload)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/alert"), "{error}");
    }
}
