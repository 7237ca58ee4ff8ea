//! One health round, start to finish: observe every layer, classify, record the checks and app
//! statuses, open or count incidents (one per problem), resolve the ones whose problem is gone,
//! sample the host for the disk forecast, and alert on new incidents.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::alerts::{AlertEvent, Alerter};
use super::classify::{self, Assessment, Rules};
use super::model::{AppObs, Observations};
use super::observe::{Observer, disk_metric};
use super::{AppStatus, IncidentState, Kind, Layer, PROXY_COMPONENT, Severity};
use crate::clock::now_ms;
use crate::store::{IncidentFilter, StoreError};

/// Host samples are stored at most this often, and kept this long.
const SAMPLE_EVERY_MS: i64 = 60_000;
const SAMPLES_KEPT_MS: i64 = 7 * 24 * 3_600_000;

/// What a round did, for STATUS= and the logs.
#[derive(Debug, Clone, Default)]
pub struct RoundSummary {
    /// The butler's units as this round saw them (`None` without systemd).
    pub units: Option<Vec<super::model::UnitObs>>,
    pub apps: usize,
    pub healthy: usize,
    pub findings: usize,
    pub opened: usize,
    pub resolved: usize,
    /// A container exited a moment ago and it is not yet known whether a user stopped it: the
    /// next round should come soon and conclude.
    pub exits_settling: bool,
}

impl RoundSummary {
    pub fn line(&self) -> String {
        format!(
            "{}/{} apps healthy, {} problems ({} new, {} resolved)",
            self.healthy, self.apps, self.findings, self.opened, self.resolved
        )
    }
}

pub struct Monitor {
    observer: Arc<Observer>,
    alerter: Alerter,
    rules: Rules,
    last_sample_ms: i64,
    last_prune_ms: i64,
    /// The app containers the last round saw: an engine event about one of them (it died, was
    /// disconnected, restarted) is worth a round now rather than at the next tick.
    watched: BTreeSet<String>,
}

impl Monitor {
    pub fn new(observer: Arc<Observer>, alerter: Alerter) -> Self {
        let rules = rules_from(observer.config());
        Self {
            observer,
            alerter,
            rules,
            last_sample_ms: 0,
            last_prune_ms: 0,
            watched: BTreeSet::new(),
        }
    }

    pub async fn round(&mut self) -> Result<RoundSummary, StoreError> {
        let store = self.observer.store().clone();
        let known: BTreeSet<String> = store
            .app_health()
            .await?
            .into_iter()
            .map(|a| a.app)
            .collect();
        let observed_at = crate::clock::now_rfc3339();
        let obs = self.observer.observe(&known).await;
        let assessment = classify::classify(&obs, &self.rules);
        self.watched = obs
            .apps
            .iter()
            .flat_map(|a| a.containers.iter().map(|c| c.id.clone()))
            .collect();
        let unfinished: Vec<&AppObs> = obs.apps.iter().filter(|a| a.incomplete.is_some()).collect();
        if let Some(first) = unfinished.first() {
            // Nothing is concluded about these apps this round: say so, or a problem that is
            // never found looks like no problem at all.
            tracing::warn!(
                apps = %unfinished.iter().map(|a| a.app.as_str()).collect::<Vec<_>>().join(","),
                "checks of {} apps did not finish this round: {}",
                unfinished.len(),
                first.incomplete.as_deref().unwrap_or_default()
            );
        }

        let checks = classify::check_rows(&obs, &self.rules);
        let subjects: BTreeSet<String> = checks.iter().map(|c| c.subject.clone()).collect();
        let gone: Vec<String> = store
            .checks()
            .await?
            .into_iter()
            .map(|c| c.subject)
            .filter(|s| !subjects.contains(s) && observed(&obs, s, ""))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        store.record_checks(checks).await?;
        if !gone.is_empty() {
            store.forget_check_subjects(gone).await?;
        }
        // Without a container list nothing is known about the apps: their last verdicts stand
        // (an engine that blinks must not empty the dashboard's app list for a round).
        if obs.apps_listed {
            store.replace_app_health(assessment.apps.clone()).await?;
        }

        let mut summary = RoundSummary {
            apps: assessment.apps.len(),
            healthy: assessment
                .apps
                .iter()
                .filter(|a| a.status == AppStatus::Healthy)
                .count(),
            findings: assessment.findings.len(),
            units: obs.units.clone(),
            exits_settling: obs
                .apps
                .iter()
                .flat_map(|a| &a.containers)
                .any(classify::exit_settling),
            ..RoundSummary::default()
        };
        self.record_incidents(&obs, &assessment, &observed_at, &mut summary)
            .await?;
        self.sample(&obs).await?;
        Ok(summary)
    }

    /// Remembers which containers a user stopped, as the engine's events tell it, so the next
    /// round does not take a `docker stop` for a crash.
    pub async fn note_user_stops(&self, batch: &crate::docker::events::Batch) {
        let marks = batch.user_stops.clone().into_iter().collect();
        if let Err(error) = self.observer.store().record_user_stops(marks).await {
            tracing::warn!("cannot record which containers were stopped: {error}");
        }
    }

    /// Whether a batch of engine events concerns what the monitor checks: an app container it
    /// saw last round, or the nginx container.
    pub fn concerns(&self, batch: &crate::docker::events::Batch) -> bool {
        !self.watched.is_disjoint(&batch.containers)
            || batch
                .names
                .contains(&self.observer.config().proxy.container_name)
    }

    async fn record_incidents(
        &self,
        obs: &Observations,
        assessment: &Assessment,
        observed_at: &str,
        summary: &mut RoundSummary,
    ) -> Result<(), StoreError> {
        let store = self.observer.store();
        let mut present = BTreeSet::new();
        for finding in &assessment.findings {
            present.insert((finding.kind.clone(), finding.component.clone()));
            // Repairs go on while a round runs: one that finished after this round looked has
            // made its finding stale, and must not reopen the problem.
            let (incident, created) = store
                .observe_incident_at(finding.clone(), Some(observed_at.to_owned()))
                .await?;
            if created {
                summary.opened += 1;
                self.alerter.notify(AlertEvent::Opened, &incident).await;
            }
        }
        // A problem no longer found is over, whoever fixed it; only layers this round really
        // looked at can say so (no units without systemd, no apps when Docker did not answer).
        for incident in store.incidents(IncidentFilter::unresolved()).await? {
            let key = (incident.kind.clone(), incident.component.clone());
            if present.contains(&key) || !observed(obs, &incident.component, &incident.kind) {
                continue;
            }
            let moved = store
                .transition_incident(
                    incident.id,
                    IncidentState::UNRESOLVED.to_vec(),
                    IncidentState::Resolved,
                )
                .await?;
            if moved {
                summary.resolved += 1;
                let mut resolved = incident;
                resolved.state = IncidentState::Resolved;
                self.alerter.notify(AlertEvent::Resolved, &resolved).await;
            }
        }
        Ok(())
    }

    /// Host samples for the disk forecast and the dashboard, at most once a minute.
    async fn sample(&mut self, obs: &Observations) -> Result<(), StoreError> {
        let now = now_ms();
        if now - self.last_sample_ms < SAMPLE_EVERY_MS {
            return Ok(());
        }
        self.last_sample_ms = now;
        let mut samples: Vec<(String, i64, f64)> = obs
            .host
            .disks
            .iter()
            .map(|d| (disk_metric(&d.path), now, d.free_bytes as f64))
            .collect();
        if let Some(available) = obs.host.mem_available_bytes {
            samples.push(("mem_available_bytes".into(), now, available as f64));
        }
        if let Some(load) = obs.host.load1 {
            samples.push(("load1".into(), now, load));
        }
        let store = self.observer.store();
        store.add_samples(samples).await?;
        if now - self.last_prune_ms > 3_600_000 {
            self.last_prune_ms = now;
            store.prune_samples(now - SAMPLES_KEPT_MS).await?;
        }
        Ok(())
    }
}

/// How long a round may take before the health-monitor abandons it. Every part of a round has its
/// own bound: the proxy checks (inspect, probe and the config checks: about 5 × `health.timeout`),
/// the app checks together ([`Observer::apps_budget`]), the name lookups (`health.timeout`); on top,
/// a few engine calls that Docker itself bounds and the store's busy wait. A round that runs past
/// all of that is stuck, not slow: only then is it dropped, and what it found lost. A tighter
/// backstop dropped whole rounds on a busy engine, leaving the monitor blind while the engine
/// was slow.
pub fn round_bound(config: &crate::config::Config) -> std::time::Duration {
    config.health.timeout.0 * 6
        + super::observe::apps_budget(config)
        + std::time::Duration::from_secs(10)
}

pub fn rules_from(config: &crate::config::Config) -> Rules {
    Rules {
        disk_warning_hours: config.health.disk_warning.0.as_secs_f64() / 3600.0,
        ..Rules::default()
    }
}

/// Whether this round really looked at `component` for problems of `kind` ("" for any): a check
/// that timed out or could not run says nothing about whether a problem is over.
fn observed(obs: &Observations, component: &str, kind: &str) -> bool {
    if let Some(app) = super::component_app(component) {
        return match obs.apps.iter().find(|a| a.app == app) {
            Some(found) => found.incomplete.is_none(),
            None => obs.apps_listed,
        };
    }
    if component.starts_with("unit:") {
        return obs.units.is_some();
    }
    if component == PROXY_COMPONENT {
        let config_kind =
            kind == Kind::ConfigDrift.as_str() || kind == Kind::ConfigInvalid.as_str();
        return obs.proxy.state != "unknown" && (!config_kind || obs.proxy.config_checked());
    }
    true
}

/// The worst status of each layer, for `butler health`: down when a finding of the layer is high
/// or critical, degraded when any finding is, healthy otherwise.
pub fn layer_status(assessment: &Assessment, layer: Layer) -> AppStatus {
    let worst = assessment
        .findings
        .iter()
        .filter(|f| f.kind.parse::<Kind>().is_ok_and(|k| k.layer() == layer))
        .map(|f| f.severity)
        .max();
    match worst {
        None => AppStatus::Healthy,
        Some(s) if s >= Severity::High => AppStatus::Down,
        Some(_) => AppStatus::Degraded,
    }
}

#[cfg(test)]
mod round_tests {
    use super::*;
    use crate::docker::EngineError;
    use crate::health::{IncidentState, Kind, app_component};
    use crate::proxy::reconcile::Reconciler;
    use crate::store::IncidentFilter;
    use crate::testbed::Bed;

    /// A monitor over `bed`, with the apps routed by a reconcile first (as the dynamic proxy
    /// would have done).
    async fn monitor(bed: &Bed) -> Monitor {
        let mut reconciler = Reconciler::new(bed.handle(), bed.config.clone(), bed.store.clone());
        assert!(reconciler.reconcile("setup").await.unwrap().succeeded());
        let observer = Arc::new(Observer::new(
            bed.handle(),
            bed.config.clone(),
            bed.store.clone(),
        ));
        Monitor::new(
            observer,
            Alerter::new(Vec::new(), bed.store.clone(), "test"),
        )
    }

    async fn open_incident(bed: &Bed, kind: Kind, app: &str) -> Option<crate::store::Incident> {
        bed.store
            .incidents(IncidentFilter::unresolved())
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.kind == kind.as_str() && i.component == app_component(app))
    }

    #[tokio::test]
    async fn an_app_that_answers_is_healthy_and_its_checks_are_recorded() {
        let bed = Bed::new().await;
        let id = bed.run_app("shop", &[("butler.port", "8080")]);
        bed.serve_app(&id, 8080, 200).await;
        let mut monitor = monitor(&bed).await;

        let summary = monitor.round().await.unwrap();

        assert_eq!((summary.apps, summary.healthy), (1, 1), "{summary:?}");
        let health = bed.store.app_health().await.unwrap();
        assert_eq!(health[0].app, "shop");
        assert_eq!(health[0].status, AppStatus::Healthy);
        let checks = bed.store.checks().await.unwrap();
        let app_checks: Vec<_> = checks.iter().filter(|c| c.subject == "app:shop").collect();
        assert!(!app_checks.is_empty());
        assert!(app_checks.iter().all(|c| c.ok), "{app_checks:?}");
    }

    #[tokio::test]
    async fn a_crashed_container_opens_an_incident_and_its_return_resolves_it() {
        let bed = Bed::new().await;
        let id = bed.run_app("shop", &[("butler.port", "8080")]);
        bed.serve_app(&id, 8080, 200).await;
        let mut monitor = monitor(&bed).await;
        monitor.round().await.unwrap();
        bed.engine.edit(&id, |c| {
            c.info.state.running = false;
            c.info.state.status = "exited".into();
            c.info.state.exit_code = 1;
            c.info.state.finished_at = Some("2026-12-03T11:00:00Z".into());
        });

        let summary = monitor.round().await.unwrap();

        assert_eq!(summary.opened, 1, "{summary:?}");
        let incident = open_incident(&bed, Kind::ContainerDown, "shop").await;
        assert!(incident.is_some(), "no container_down incident for shop");
        assert_eq!(
            bed.store.app_health().await.unwrap()[0].status,
            AppStatus::Down
        );

        bed.engine.edit(&id, |c| {
            c.info.state.running = true;
            c.info.state.status = "running".into();
        });
        let summary = monitor.round().await.unwrap();

        assert_eq!(summary.resolved, 1, "{summary:?}");
        assert!(
            open_incident(&bed, Kind::ContainerDown, "shop")
                .await
                .is_none()
        );
        let resolved = bed
            .store
            .incidents(IncidentFilter::default())
            .await
            .unwrap();
        assert!(
            resolved
                .iter()
                .any(|i| i.kind == "container_down" && i.state == IncidentState::Resolved)
        );
    }

    #[tokio::test]
    async fn an_app_nothing_answers_for_is_unresponsive() {
        let bed = Bed::new().await;
        // Routed to 8080, but nothing listens at its address: connections are refused.
        bed.run_app("mute", &[("butler.port", "8080")]);
        let mut monitor = monitor(&bed).await;

        let summary = monitor.round().await.unwrap();

        assert_eq!(summary.healthy, 0, "{summary:?}");
        assert!(
            open_incident(&bed, Kind::AppUnresponsive, "mute")
                .await
                .is_some(),
            "{:?}",
            bed.store
                .incidents(IncidentFilter::default())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_proxy_answering_502_for_an_app_that_answers_is_a_gateway_error() {
        let bed = Bed::new().await;
        let id = bed.run_app("shop", &[("butler.port", "8080")]);
        bed.serve_app(&id, 8080, 200).await;
        let mut monitor = monitor(&bed).await;
        bed.proxy_status
            .store(502, std::sync::atomic::Ordering::Relaxed);

        monitor.round().await.unwrap();

        assert!(
            open_incident(&bed, Kind::GatewayError, "shop")
                .await
                .is_some()
        );
        assert!(open_incident(&bed, Kind::AppError, "shop").await.is_none());
    }

    #[tokio::test]
    async fn an_engine_that_cannot_list_concludes_nothing_about_apps() {
        let bed = Bed::new().await;
        let id = bed.run_app("shop", &[("butler.port", "8080")]);
        bed.serve_app(&id, 8080, 200).await;
        let mut monitor = monitor(&bed).await;
        monitor.round().await.unwrap();
        bed.engine
            .fail_next("list", EngineError::Transport("connection refused".into()));

        monitor.round().await.unwrap();

        // No app was seen, so none is called down or forgotten: the last verdict stands.
        let health = bed.store.app_health().await.unwrap();
        assert_eq!(health.len(), 1, "{health:?}");
        assert!(
            open_incident(&bed, Kind::ContainerDown, "shop")
                .await
                .is_none()
        );
    }
}
