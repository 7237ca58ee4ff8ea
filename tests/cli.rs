//! The CLI as a user meets it on a host without systemd: config checking, `butler run` in the
//! foreground, and clean shutdown on SIGTERM. Real processes, real sockets.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use butler_testkit::{Cleanup, ensure_image, free_port, http_get, unique_name, wait_until};

fn butler() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butler"));
    command
        .env_remove("BUTLER_CONFIG")
        .env_remove("NOTIFY_SOCKET");
    command
}

fn run(args: &[&str]) -> Output {
    butler().args(args).output().expect("run butler")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn config_check_accepts_a_good_file_and_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "good.toml",
        "[proxy]\nhttp_port = 8080\n[health]\ninterval = \"30s\"\n",
    );
    let out = run(&["config", "check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"));

    let empty = write_config(dir.path(), "empty.toml", "");
    let out = run(&[
        "config",
        "check",
        "--output",
        "json",
        empty.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["config"]["proxy"]["http_port"], 80);
    assert_eq!(json["config"]["health"]["interval"], "10s");
}

#[test]
fn config_check_rejects_bad_files_with_exit_2_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[proxy]\nhttp_prot = 80\n", "http_prot"),
        ("[health]\ninterval = 10\n", "interval"),
        ("[proxy]\ndomain = \"a b\"\n", "proxy.domain"),
        ("not toml at all [", "line 1"),
    ];
    for (index, (body, key)) in cases.iter().enumerate() {
        let path = write_config(dir.path(), &format!("bad{index}.toml"), body);
        let out = run(&["config", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("butler: config "), "{stderr}");
        assert!(stderr.contains(key), "{body}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        // Nothing lost: checking never touches the file.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), *body);
    }
    let out = run(&["config", "check", "/nonexistent/butler.toml"]);
    assert_eq!(out.status.code(), Some(1 + 1));
    assert!(text(&out.stderr).contains("cannot read config /nonexistent/butler.toml"));
}

#[test]
fn config_comes_from_flag_or_environment_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "b.toml", "[proxy]\ndomain = \"apps.test\"\n");
    let path = path.to_str().unwrap();
    for args in [
        vec!["--config", path, "config", "show", "--output", "json"],
        vec!["config", "show", "--config", path, "--output", "json"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["proxy"]["domain"], "apps.test");
    }
    let out = butler()
        .args(["config", "show"])
        .env("BUTLER_CONFIG", path)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("domain = \"apps.test\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["services", "start", "nginx"],
        vec!["worker", "proxy"],
        vec!["no-such-command"],
        vec!["--output", "yaml", "services", "list"],
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["services", "restart", "nginx"]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown service 'nginx'"), "{stderr}");
    for name in ["dynamic-proxy", "health-monitor", "recovery", "dashboard"] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn a_worker_with_a_bad_config_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "bad.toml", "[recovery]\nmax_attempts = 0\n");
    let out = run(&["worker", "recovery", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("recovery.max_attempts") && stderr.contains("must be at least 1"),
        "{stderr}"
    );
}

/// A config for `butler run` whose proxy cannot collide with anything else on the engine: the local
/// nginx test image, a unique container name and a free port. The guard removes that container.
fn run_config(dir: &Path, dashboard_port: u16) -> (PathBuf, Cleanup) {
    let nginx = unique_name("cli-nginx");
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&nginx);
    let config = write_config(
        dir,
        "run.toml",
        &format!(
            "[proxy]\nimage = \"{}\"\ncontainer_name = \"{nginx}\"\nhttp_port = {}\n\
             [dashboard]\nlisten = \"127.0.0.1:{dashboard_port}\"\n[state]\ndir = \"{}\"\n\
             [health]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            ensure_image("nginx"),
            free_port(),
            dir.display()
        ),
    );
    (config, cleanup)
}

#[test]
fn butler_run_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, _cleanup) = run_config(dir.path(), port);
    let mut child = butler()
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the dashboard to answer", Duration::from_secs(20), || {
        http_get(&format!("127.0.0.1:{port}"), "localhost", "/healthz")
            .is_ok_and(|r| r.status == 200)
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    for worker in ["dynamic-proxy", "health-monitor", "recovery", "dashboard"] {
        assert!(
            stderr.contains(&format!("worker{{worker=\"{worker}\"}}"))
                || stderr.contains(&format!("worker={worker}")),
            "no lines from {worker}: {stderr}"
        );
    }
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
}

#[test]
fn butler_run_fails_when_a_worker_cannot_initialise() {
    let dir = tempfile::tempdir().unwrap();
    // Occupy the dashboard's port so its worker cannot bind.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (config, _cleanup) = run_config(dir.path(), port);
    let out = butler()
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// What `butler health|status|incidents|fix-502` say to a mistake on the command line or in a
/// filter: one line on stderr naming what was wrong (and the valid values), nothing on stdout, exit
/// 2. None of these reaches Docker: the mistake is found first.
#[test]
fn health_commands_refuse_bad_flags_and_filters_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "state.toml",
        &format!("[state]\ndir = \"{}\"\n", dir.path().display()),
    );
    let config = config.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["health", "--bogus"],
            &["'--bogus'", "butler health --help"],
        ),
        (&["health", "extra"], &["'extra'"]),
        (&["health", "--output", "yaml"], &["'yaml'", "text, json"]),
        (&["status", "--all"], &["'--all'", "butler status --help"]),
        (&["status", "now"], &["'now'"]),
        (
            &["fix-502", "--dry"],
            &["'--dry'", "--dry-run", "butler fix-502 --help"],
        ),
        (&["fix-502", "--dry-run=maybe"], &["'maybe'", "--dry-run"]),
        (
            &["incidents", "--state", "urgent"],
            &["'urgent'", "open, recovering, resolved, escalated"],
        ),
        (
            &["incidents", "--state", "open,closed"],
            &["'closed'", "escalated"],
        ),
        (
            &["incidents", "--kind", "nope"],
            &["'nope'", "port_mismatch", "unit_failed"],
        ),
        (
            &["incidents", "--kind", "port-mismatch"],
            &["port_mismatch"],
        ),
        (
            &["incidents", "--min-severity", "urgent"],
            &["'urgent'", "low, medium, high, critical"],
        ),
        (&["incidents", "--app", "Shop Front"], &["not an app name"]),
        (
            &["incidents", "--component", "nginx"],
            &["not a component", "app:NAME, proxy, host or unit:UNIT"],
        ),
        (
            &["incidents", "--component", "unit:sshd.service"],
            &["not a component"],
        ),
        (
            &["incidents", "--app", "shop", "--component", "proxy"],
            &["--app", "--component", "cannot be used with"],
        ),
        (&["incidents", "-n", "0"], &["'0'", "1..=10000"]),
        (&["incidents", "--limit", "many"], &["'many'"]),
        (&["incidents", "--id", "abc"], &["not an incident id"]),
        (&["incidents", "--id", "0"], &["not an incident id"]),
        (&["incidents", "--id", "-3"], &["not an incident id"]),
        (
            &["incidents", "--id"],
            &["--id <ID>", "a value is required"],
        ),
        (
            &["incidents", "--id", "3", "--state", "open"],
            &["--id", "--state", "cannot be used with"],
        ),
        // Well formed, but there is no such incident: the id is what to fix.
        (
            &["incidents", "--id", "424242"],
            &["incident 424242 does not exist"],
        ),
    ];
    for (args, wanted) in cases {
        let mut argv = args.to_vec();
        argv.extend(["--config", config]);
        let out = run(&argv);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(stderr.starts_with("butler: "), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        for want in *wanted {
            assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
        }
    }

    // A bad config is a usage error for each of them too, naming the line.
    let bad = write_config(dir.path(), "bad.toml", "[health]\ninterval = \"often\"\n");
    for command in ["health", "status", "incidents", "fix-502"] {
        let out = run(&[command, "--config", bad.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("interval"), "{command}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{command}: {stderr}");
    }
}
