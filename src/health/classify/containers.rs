//! What an app's containers are doing: crash loops, crashes, restarts, exits that have not settled
//! yet, and the status of an app none of whose containers runs.

use super::Problem;
use crate::health::model::ContainerObs;
use crate::health::{AppStatus, Kind};

/// New restarts within one round that make a crash loop.
pub const CRASH_LOOP_RESTARTS: u64 = 3;

/// How long after a container that was asked to stop exited its exit is taken as final.
/// `docker stop` sends its `stop` event some 50 ms after `die`: a round that looked in between
/// would call a user's stop a crash (and alert on it). Only an exit after a gentle `kill` waits:
/// a crash or a SIGKILL is concluded at once.
pub const EXIT_SETTLE_SECS: f64 = 2.0;

/// It keeps restarting: Docker is restarting it now, or it restarted [`CRASH_LOOP_RESTARTS`]
/// times since the last round.
pub fn crash_looping(c: &ContainerObs) -> bool {
    c.state == "restarting" || c.new_restarts >= CRASH_LOOP_RESTARTS
}

/// The container exited a moment ago after a gentle `kill`, and no `stop` event said yet
/// whether a user stopped it.
pub fn exit_settling(c: &ContainerObs) -> bool {
    c.crashed() && c.stop_requested && c.down_secs.is_some_and(|ago| ago < EXIT_SETTLE_SECS)
}

/// It does not run, and Docker is not about to start it again.
fn stopped(c: &ContainerObs) -> bool {
    !c.running() && c.state != "restarting"
}

/// A `crash_loop` for each container that keeps restarting; partial while another one runs.
pub(super) fn crash_loops(containers: &[ContainerObs]) -> Vec<Problem> {
    containers
        .iter()
        .filter(|c| crash_looping(c))
        .map(|c| {
            let others_run = containers.iter().any(|r| r.running() && r.id != c.id);
            Problem::partial(
                Kind::CrashLoop,
                others_run,
                format!(
                    "container {} keeps restarting ({} restarts, {} since the last check)",
                    c.name, c.restart_count, c.new_restarts
                ),
            )
        })
        .collect()
}

/// A `container_down` for each container that crashed and whose exit has settled; partial while
/// another one runs. A user's `docker stop` and a clean exit are shown, not treated as failures.
pub(super) fn crashes(containers: &[ContainerObs]) -> Vec<Problem> {
    let some_run = containers.iter().any(ContainerObs::running);
    containers
        .iter()
        .filter(|c| c.crashed() && !exit_settling(c))
        .map(|c| Problem::partial(Kind::ContainerDown, some_run, describe_stopped(c)))
        .collect()
}

/// The status of an app none of whose containers runs, and why: stopped when every stopped one
/// was stopped by a user or exited cleanly; else down, for the first of `problems`, an exit still
/// settling, or for want of any running container.
pub(super) fn none_running(
    containers: &[ContainerObs],
    problems: &[Problem],
) -> (AppStatus, String) {
    let stopped: Vec<&ContainerObs> = containers.iter().filter(|c| stopped(c)).collect();
    if !stopped.is_empty() && stopped.iter().all(|c| !c.crashed()) {
        let why = stopped
            .iter()
            .map(|c| describe_stopped(c))
            .collect::<Vec<_>>()
            .join("; ");
        return (AppStatus::Stopped, why);
    }
    let why = problems
        .first()
        .map(|p| p.summary.clone())
        .or_else(|| {
            stopped
                .iter()
                .find(|c| exit_settling(c))
                .map(|c| format!("{} just now", describe_stopped(c)))
        })
        .unwrap_or_else(|| "no container of the app is running".to_owned());
    (AppStatus::Down, why)
}

/// A container that restarted since the last round, fewer times than a crash loop takes: it makes
/// an otherwise healthy app degraded, without a finding.
pub(super) fn restarted(containers: &[ContainerObs]) -> Option<&ContainerObs> {
    containers.iter().find(|c| c.new_restarts > 0)
}

fn describe_stopped(c: &ContainerObs) -> String {
    let mut text = if c.stopped_by_user {
        format!("container {} was stopped (docker stop)", c.name)
    } else {
        format!("container {} is {}", c.name, c.state)
    };
    if let Some(code) = c.exit_code {
        text.push_str(&format!(" (exit code {code}"));
        if code == 137 && !c.stopped_by_user {
            text.push_str(", killed");
        }
        if c.oom_killed {
            text.push_str(", out of memory");
        }
        text.push(')');
    }
    if let Some(since) = c
        .finished_at
        .as_deref()
        .and_then(crate::proxy::plan::plain_utc_time)
    {
        text.push_str(&format!(" since {since}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::classify::fixtures::{IP, container};

    fn exited(name: &str, code: i64) -> ContainerObs {
        ContainerObs {
            state: "exited".into(),
            exit_code: Some(code),
            ip: None,
            up_secs: None,
            ..container(name, Some(IP))
        }
    }

    #[test]
    fn restarting_now_or_three_times_in_a_round_is_a_crash_loop() {
        let with = |state: &str, new_restarts: u64| ContainerObs {
            state: state.into(),
            new_restarts,
            ..container("shop", Some(IP))
        };
        assert!(crash_looping(&with("restarting", 0)));
        assert!(crash_looping(&with("running", CRASH_LOOP_RESTARTS)));
        assert!(!crash_looping(&with("running", CRASH_LOOP_RESTARTS - 1)));
        assert!(!crash_looping(&with("exited", 0)));
        let loops = crash_loops(&[with("restarting", 0), with("running", 0)]);
        assert_eq!(loops.len(), 1, "{loops:#?}");
        assert!(!loops[0].facts.partial, "the other one has the same id");
        let mut other = with("running", 0);
        other.id = "id-other".into();
        assert!(
            crash_loops(&[with("restarting", 0), other])[0]
                .facts
                .partial
        );
    }

    #[test]
    fn only_an_exit_after_a_gentle_kill_waits_to_settle() {
        let killed = |down: f64, asked: bool| ContainerObs {
            down_secs: Some(down),
            stop_requested: asked,
            ..exited("shop", 137)
        };
        assert!(exit_settling(&killed(EXIT_SETTLE_SECS / 2.0, true)));
        assert!(!exit_settling(&killed(EXIT_SETTLE_SECS, true)), "settled");
        assert!(
            !exit_settling(&killed(0.1, false)),
            "a crash is concluded at once"
        );
        let clean = ContainerObs {
            down_secs: Some(0.1),
            stop_requested: true,
            ..exited("shop", 0)
        };
        assert!(!exit_settling(&clean), "exit code 0 is no crash");
    }

    #[test]
    fn crashes_are_container_down_and_stops_are_not() {
        let user = ContainerObs {
            stopped_by_user: true,
            ..exited("user", 137)
        };
        let settling = ContainerObs {
            down_secs: Some(0.1),
            stop_requested: true,
            ..exited("settling", 137)
        };
        let containers = [exited("crashed", 1), exited("clean", 0), user, settling];
        let down = crashes(&containers);
        let said: Vec<&str> = down.iter().map(|p| p.summary.as_str()).collect();
        assert_eq!(said, ["container crashed is exited (exit code 1)"]);
        assert!(!down[0].facts.partial);
        let with_runner = [exited("crashed", 1), container("up", Some(IP))];
        assert!(crashes(&with_runner)[0].facts.partial);
    }

    #[test]
    fn an_app_with_nothing_running_is_stopped_only_when_nothing_crashed() {
        let user = ContainerObs {
            stopped_by_user: true,
            finished_at: Some("2026-12-02T11:40:20.1Z".into()),
            ..exited("shop", 137)
        };
        assert_eq!(
            none_running(std::slice::from_ref(&user), &[]),
            (
                AppStatus::Stopped,
                "container shop was stopped (docker stop) (exit code 137) since 2026-12-02 \
                 11:40:20 UTC"
                    .to_owned()
            )
        );
        let both = [user, exited("shop-2", 0)];
        assert_eq!(none_running(&both, &[]).0, AppStatus::Stopped);

        let crashed = [exited("shop", 1)];
        let problems = crashes(&crashed);
        assert_eq!(
            none_running(&crashed, &problems),
            (
                AppStatus::Down,
                "container shop is exited (exit code 1)".to_owned()
            )
        );
        let settling = [ContainerObs {
            down_secs: Some(0.1),
            stop_requested: true,
            ..exited("shop", 137)
        }];
        assert_eq!(
            none_running(&settling, &crashes(&settling)),
            (
                AppStatus::Down,
                "container shop is exited (exit code 137, killed) just now".to_owned()
            )
        );
        let restarting = [ContainerObs {
            state: "restarting".into(),
            ..container("shop", None)
        }];
        assert_eq!(
            none_running(&restarting, &[]),
            (
                AppStatus::Down,
                "no container of the app is running".to_owned()
            )
        );
    }

    #[test]
    fn one_restart_in_a_round_is_noticed() {
        let once = ContainerObs {
            new_restarts: 1,
            ..container("shop-2", Some(IP))
        };
        let containers = [container("shop", Some(IP)), once];
        assert_eq!(
            restarted(&containers).map(|c| c.name.as_str()),
            Some("shop-2")
        );
        assert_eq!(restarted(&containers[..1]), None);
    }
}
