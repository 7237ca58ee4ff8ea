//! What the health and recovery tests (tests/health_faults.rs) read from a butler: incidents and
//! recoveries as the CLI shows them.

use std::path::Path;
use std::time::Duration;

use super::ButlerProcess;
use crate::{docker, wait_until_or};

impl ButlerProcess {
    /// `butler incidents ARGS --output json`, which must succeed: the incidents, newest first.
    pub fn incidents(&self, binary: &Path, args: &[&str]) -> Vec<serde_json::Value> {
        let mut argv = vec!["incidents"];
        argv.extend_from_slice(args);
        let (out, json) = self.cli_json(binary, &argv);
        assert!(out.success(), "butler incidents failed: {out:?}");
        json["incidents"].as_array().cloned().unwrap_or_default()
    }

    /// The recovery attempts of incident `id`, newest first (`butler incidents --id`).
    pub fn recoveries(&self, binary: &Path, id: i64) -> Vec<serde_json::Value> {
        let (out, json) = self.cli_json(binary, &["incidents", "--id", &id.to_string()]);
        assert!(out.success(), "butler incidents --id {id} failed: {out:?}");
        json["recoveries"].as_array().cloned().unwrap_or_default()
    }

    /// The id of the newest incident so far (0 when there is none): pass it to
    /// `wait_for_incident` to wait for one that a fault injected after this call opens.
    pub fn last_incident_id(&self, binary: &Path) -> i64 {
        self.incidents(binary, &["--limit", "10000"])
            .iter()
            .filter_map(|i| i["id"].as_i64())
            .max()
            .unwrap_or(0)
    }

    /// Waits until an incident of `kind` on `component`, newer than incident `since`, is in
    /// `state`; returns it.
    pub fn wait_for_incident(
        &self,
        binary: &Path,
        since: i64,
        kind: &str,
        component: &str,
        state: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let found = std::cell::RefCell::new(None);
        wait_until_or(
            &format!("a {state} {kind} incident on {component}"),
            timeout,
            || {
                let list = self.incidents(binary, &["--kind", kind, "--component", component]);
                *found.borrow_mut() = list
                    .into_iter()
                    .find(|i| i["state"] == state && i["id"].as_i64() > Some(since));
                found.borrow().is_some()
            },
            || {
                let all = self.incidents(binary, &[]);
                // What the monitor concluded about each app and why, and the containers as
                // Docker has them: a fault that opened nothing is explained by one or the other.
                let (_, health) = self.cli_json(binary, &["health"]);
                let containers = docker(&[
                    "ps",
                    "-a",
                    "--format",
                    "{{.Names}} {{.Status}} {{.Networks}}",
                ]);
                format!(
                    "incidents: {}\nhealth: {}\ncontainers:\n{}\nbutler log:\n{}",
                    serde_json::to_string_pretty(&all).unwrap_or_default(),
                    serde_json::to_string_pretty(&health).unwrap_or_default(),
                    String::from_utf8_lossy(&containers.stdout),
                    self.log()
                )
            },
        );
        found.into_inner().expect("found")
    }
}
