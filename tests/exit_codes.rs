//! The exit-code contract (README, "Exit codes") for every command, through the real binary:
//! 0 ok, 1 degraded/failed/unreachable, 2 usage or config error. Each case also checks that stderr
//! (or stdout, for a verdict) names what was wrong and what to do. The first tests need nothing
//! but the binary; the last ones use the shared Docker engine, isolated with `docker.only_label`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use butler_testkit::{
    AppContainer, Cleanup, ensure_butler_network, ensure_image, free_port, unique_name,
};

/// An engine endpoint nothing answers on: "the engine is down" without stopping anyone's engine.
const NO_ENGINE: &str = "unix:///nonexistent/docker.sock";
/// A system bus nothing answers on: "no systemd here" even on a host that has one.
const NO_BUS: &str = "unix:path=/nonexistent/system_bus_socket";

fn butler(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butler"));
    command
        .args(args)
        .env_remove("BUTLER_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("DOCKER_HOST")
        .env("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS)
        .envs(env.iter().copied());
    command.output().expect("run butler")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One row of a table: arguments, extra environment, the expected code and what the output must
/// say (stderr and stdout together, so a verdict printed on stdout counts too).
struct Case {
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    code: i32,
    says: Vec<String>,
}

fn case(args: &[&str], code: i32, says: &[&str]) -> Case {
    Case {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        code,
        says: says.iter().map(|w| w.to_string()).collect(),
    }
}

/// Runs every case and reports all mismatches at once, so one run shows the whole table's state.
fn check(cases: &[Case]) {
    let mut wrong = Vec::new();
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = butler(&args, &c.env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        let said = format!("{stderr}{stdout}");
        let missing: Vec<&String> = c
            .says
            .iter()
            .filter(|w| !said.contains(w.as_str()))
            .collect();
        if out.status.code() != Some(c.code) || !missing.is_empty() {
            wrong.push(format!(
                "butler {} (env {:?}): exit {:?}, wanted {}; missing {missing:?}\nstderr: {stderr}\nstdout: {:.400}",
                c.args.join(" "),
                c.env,
                out.status.code(),
                c.code,
                stdout
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// A valid config whose engine is down and whose store is in `dir`.
fn offline_config(dir: &Path) -> String {
    let body = format!(
        "[docker]\nhost = \"{NO_ENGINE}\"\n[state]\ndir = \"{}\"\n",
        dir.join("state").display()
    );
    write(dir, "offline.toml", &body).display().to_string()
}

/// Every subcommand path `butler --help` lists (and the hidden `generate`), with the positional
/// arguments each needs, so that a bad flag after them is the only mistake.
const COMMANDS: &[&[&str]] = &[
    &["run"],
    &["worker", "recovery"],
    &["config", "check"],
    &["config", "show"],
    &["proxy-update"],
    &["proxy-monitor"],
    &["proxy", "routes"],
    &["proxy", "history"],
    &["proxy", "rollback"],
    &["health"],
    &["status"],
    &["incidents"],
    &["fix-502"],
    &["deploy", "nginx:latest"],
    &["deployments"],
    &["rollback", "shop"],
    &["tls", "root"],
    &["tls", "list"],
    &["tls", "trust"],
    &["tls", "untrust"],
    &["services", "list"],
    &["services", "start", "dashboard"],
    &["services", "stop", "dashboard"],
    &["services", "restart", "dashboard"],
    &["services", "status", "dashboard"],
    &["services", "logs", "dashboard"],
    &["generate", "man", "/tmp/x"],
    &["generate", "completions", "bash", "/tmp/x"],
];

#[test]
fn help_and_version_exit_0() {
    check(&[
        case(&["--help"], 0, &["Usage: butler", "health"]),
        case(&["--version"], 0, &["butler "]),
        case(&["proxy", "--help"], 0, &["rollback"]),
        case(
            &["services", "start", "--help"],
            0,
            &["Usage: butler services start"],
        ),
    ]);
}

/// clap's own mistakes, for every command: one line naming the argument and the `--help` to read.
#[test]
fn every_command_refuses_a_bad_flag_with_exit_2() {
    let mut cases: Vec<Case> = COMMANDS
        .iter()
        .map(|argv| {
            let mut args = argv.to_vec();
            args.push("--bogus");
            // `generate` is hidden but still a command: its help path is named like the others.
            let help = format!("see `butler {} --help`", command_path(argv));
            case(&args, 2, &["unexpected argument '--bogus'", &help])
        })
        .collect();
    cases.extend([
        // Missing subcommand or argument: the help (or the missing piece) and exit 2.
        case(&[], 2, &["Usage: butler"]),
        case(&["proxy"], 2, &["Usage: butler proxy", "routes"]),
        case(&["services"], 2, &["services"]),
        case(&["deploy"], 2, &["<SOURCE>", "see `butler deploy --help`"]),
        case(&["rollback"], 2, &["<APP>"]),
        // Names and values the user typed wrong.
        case(
            &["services", "start", "nginx"],
            2,
            &["unknown service 'nginx'", "dynamic-proxy", "health-monitor"],
        ),
        case(
            &["services", "logs", "sshd"],
            2,
            &["unknown service 'sshd'"],
        ),
        case(&["worker", "proxy"], 2, &["'proxy'", "dynamic-proxy"]),
        case(&["run", "--only", "web"], 2, &["'web'", "dashboard"]),
        case(&["proxy", "rollback", "latest"], 2, &["'latest'"]),
        case(&["proxy", "history", "-n", "x"], 2, &["'x'"]),
        case(
            &["--output", "yaml", "status"],
            2,
            &["'yaml'", "text, json"],
        ),
        case(
            &["generate", "completions", "tcsh", "/tmp/x"],
            2,
            &["'tcsh'", "bash"],
        ),
        case(&["deploy", "shop:1", "--env", "NOVALUE"], 2, &["KEY=VALUE"]),
        case(
            &["incidents", "--kind", "nope"],
            2,
            &["'nope'", "port_mismatch"],
        ),
    ]);
    check(&cases);
}

fn command_path(argv: &[&str]) -> String {
    let depth = match argv[0] {
        "config" | "proxy" | "services" | "generate" | "tls" => 2,
        _ => 1,
    };
    argv[..depth].join(" ")
}

/// Every command that reads the config: a bad value, an unknown key and a missing file are exit 2,
/// naming the key (or the file) and what to do, before anything is touched.
#[test]
fn every_command_that_reads_the_config_exits_2_for_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", "[health]\ninterval = \"often\"\n");
    let typo = write(dir.path(), "typo.toml", "[proxy]\nhttp_prot = 80\n");
    let bad = bad.to_str().unwrap();
    let typo = typo.to_str().unwrap();
    let missing = "/nonexistent/butler.toml";
    let readers: Vec<&[&str]> = COMMANDS
        .iter()
        .copied()
        // `tls untrust` only removes the system's anchor: it has no use for the config.
        .filter(|argv| !matches!(argv[0], "services" | "generate") && *argv != ["tls", "untrust"])
        .collect();
    let mut cases = Vec::new();
    for argv in readers {
        for (config, says) in [
            (bad, vec!["interval = \"often\"", "write e.g."]),
            (typo, vec!["http_prot", "unknown field"]),
            (missing, vec!["cannot read config", missing, "--config"]),
        ] {
            let mut args = argv.to_vec();
            args.extend(["--config", config]);
            cases.push(case(&args, 2, &says));
        }
    }
    check(&cases);
}

/// The engine is down: every command that needs it exits 1 and says where it looked and what to
/// check. A DOCKER_HOST it cannot use is configuration, exit 2.
#[test]
fn engine_down_is_exit_1_and_a_bad_docker_host_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let offline = offline_config(dir.path());
    let plain = write(
        dir.path(),
        "plain.toml",
        &format!("[state]\ndir = \"{}\"\n", dir.path().join("s2").display()),
    );
    let plain = plain.to_str().unwrap();
    let engine_commands: &[&[&str]] = &[
        &["proxy-update"],
        &["proxy-monitor"],
        &["proxy", "routes"],
        &["health"],
        &["status"],
        &["fix-502"],
        &["fix-502", "--dry-run"],
        &["deploy", "devops-butler-test/app:none"],
        &["rollback", "shop"],
    ];
    let mut cases = Vec::new();
    for argv in engine_commands {
        let mut args = argv.to_vec();
        args.extend(["--config", offline.as_str()]);
        cases.push(case(
            &args,
            1,
            &[
                &format!("cannot reach the Docker engine at {NO_ENGINE}"),
                "is dockerd running?",
            ],
        ));
        let mut args = argv.to_vec();
        args.extend(["--config", plain]);
        let mut bad_host = case(
            &args,
            2,
            &[
                "Docker host `ssh://builder` is not supported",
                "DOCKER_HOST",
            ],
        );
        bad_host.env.push(("DOCKER_HOST", "ssh://builder"));
        cases.push(bad_host);
    }
    check(&cases);
}

/// Commands that only read the store work without the engine: an empty store is an answer (0);
/// an id or version that is not there is what the user typed wrong (2); a store that cannot be
/// opened is a failure (1).
#[test]
fn store_commands_answer_0_name_unknown_ids_with_2_and_fail_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let offline = offline_config(dir.path());
    let offline = offline.as_str();
    let unopenable = write(
        dir.path(),
        "unopenable.toml",
        "[state]\ndir = \"/proc/butler-exit-test\"\n",
    );
    let unopenable = unopenable.to_str().unwrap();
    check(&[
        case(&["config", "check", offline], 0, &["valid"]),
        case(&["config", "show", "--config", offline], 0, &[NO_ENGINE]),
        case(
            &["incidents", "--config", offline],
            0,
            &["no incidents match"],
        ),
        // A filter that matches nothing is an empty answer, not a mistake.
        case(
            &["incidents", "--app", "never-seen", "--config", offline],
            0,
            &["no incidents match"],
        ),
        case(&["proxy", "history", "--config", offline], 0, &["VERSION"]),
        case(
            &["deployments", "--config", offline],
            0,
            &["no deployments yet"],
        ),
        case(
            &["deployments", "shop", "--config", offline],
            0,
            &["no deployments of app shop"],
        ),
        case(
            &["incidents", "--id", "424242", "--config", offline],
            2,
            &[
                "incident 424242 does not exist",
                "`butler incidents` lists them",
            ],
        ),
        case(
            &["proxy", "rollback", "99999", "--config", offline],
            2,
            &[
                "config version 99999 does not exist",
                "butler proxy history",
            ],
        ),
        case(
            &["proxy", "rollback", "--config", offline],
            2,
            &["no earlier applied config version", "butler proxy history"],
        ),
        case(
            &["incidents", "--config", unopenable],
            1,
            &[
                "cannot open the butler's store in /proc/butler-exit-test",
                "state.dir",
            ],
        ),
        case(
            &["proxy", "history", "--config", unopenable],
            1,
            &["cannot open the butler's store"],
        ),
        case(
            &["deployments", "--config", unopenable],
            1,
            &["cannot open the butler's store"],
        ),
    ]);
}

/// No systemd reachable: every `services` command exits 1 and points at `butler run`; an unknown
/// name is still exit 2 (it is found before the bus is tried).
#[test]
fn services_exit_1_when_the_manager_is_unreachable_and_2_for_an_unknown_name() {
    let mut cases: Vec<Case> = [
        &["services", "list"][..],
        &["services", "start", "dashboard"],
        &["services", "stop", "recovery"],
        &["services", "restart", "health-monitor"],
        &["services", "status", "dynamic-proxy"],
        &["services", "start", "all"],
    ]
    .into_iter()
    .map(|args| {
        case(
            args,
            1,
            &["cannot reach systemd on the system bus", "butler run"],
        )
    })
    .collect();
    let mut user = case(
        &["services", "--user", "list"],
        1,
        &["cannot reach systemd on the user bus", "butler run"],
    );
    user.env.extend([
        (
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/user_bus",
        ),
        ("XDG_RUNTIME_DIR", "/nonexistent"),
    ]);
    cases.push(user);
    // No journalctl to hand the terminal to: a failure naming it.
    let mut logs = case(&["services", "logs", "dashboard"], 1, &["journalctl"]);
    logs.env.push(("PATH", "/nonexistent"));
    cases.push(logs);
    cases.push(case(
        &["services", "stop", "nginx"],
        2,
        &["unknown service 'nginx'", "recovery"],
    ));
    check(&cases);
}

#[test]
fn generate_exits_0_when_written_and_1_when_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let man = man.to_str().unwrap();
    let completions = dir.path().to_str().unwrap();
    check(&[
        case(&["generate", "man", man], 0, &[]),
        case(
            &["generate", "completions", "bash", completions],
            0,
            &["butler.bash"],
        ),
        case(
            &["generate", "man", "/proc/butler-man"],
            1,
            &[
                "cannot create /proc/butler-man",
                "a directory you can write to",
            ],
        ),
    ]);
}

/// A worker with a bad config exits 2 (systemd sees "exit status 2" and the journal line says
/// which key); one that cannot start its work exits 1.
#[test]
fn workers_exit_2_for_their_config_and_1_when_they_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = write(
        dir.path(),
        "busy.toml",
        &format!(
            "[dashboard]\nlisten = \"127.0.0.1:{port}\"\n[docker]\nhost = \"{NO_ENGINE}\"\n\
             [state]\ndir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    );
    let busy = busy.to_str().unwrap();
    let zero = write(dir.path(), "zero.toml", "[recovery]\nmax_attempts = 0\n");
    let zero = zero.to_str().unwrap();
    check(&[
        case(
            &["worker", "recovery", "--config", zero],
            2,
            &["recovery.max_attempts", "butler services start recovery"],
        ),
        case(&["run", "--config", zero], 2, &["recovery.max_attempts"]),
        case(
            &["worker", "dashboard", "--config", busy],
            1,
            &[&format!("cannot listen on 127.0.0.1:{port}")],
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------------
// With the engine (shared; `only_label` keeps other tests' containers out of these answers)

/// A config that sees only containers labelled `label`, with its own nginx name, port and store.
fn online_config(dir: &Path, label: &str, nginx: &str) -> String {
    let body = format!(
        "[proxy]\nhttp_port = {}\nimage = \"{}\"\ncontainer_name = \"{nginx}\"\n\
         templates_dir = \"{}\"\n[docker]\nonly_label = \"{label}\"\n[state]\ndir = \"{}\"\n\
         [health]\ntimeout = \"2s\"\n",
        free_port(),
        ensure_image("nginx"),
        dir.join("templates").display(),
        dir.join("state").display(),
    );
    write(dir, "online.toml", &body).display().to_string()
}

/// `butler health` with its proxy missing: a critical finding, exit 1 (it was 2), and the code
/// always agrees with the verdict it prints (0 only for `healthy`).
#[test]
fn health_exits_1_for_a_critical_finding_and_0_only_when_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let label = format!("butler.exit-test={}", unique_name("h"));
    let nginx = unique_name("exit-nginx");
    let config = online_config(dir.path(), &label, &nginx);
    let config = config.as_str();
    check(&[case(
        &["health", "--config", config],
        1,
        &["proxy", "overall: critical"],
    )]);
    let out = butler(&["health", "--output", "json", "--config", config], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "critical", "{json}");
    assert_eq!(out.status.code(), Some(1), "{json}");
    let proxy_finding = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["component"] == "proxy")
        .cloned()
        .unwrap_or_default();
    assert!(
        proxy_finding["summary"]
            .as_str()
            .unwrap_or("")
            .contains(&nginx),
        "the finding names the missing container: {json}"
    );

    // With its proxy up, the code follows whatever the verdict is (the shared machine's load may
    // make the host layer degraded): 0 if and only if healthy.
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&nginx);
    ensure_butler_network();
    check(&[case(&["proxy-update", "--config", config], 0, &[])]);
    let out = butler(&["health", "--output", "json", "--config", config], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let healthy = json["status"] == "healthy";
    assert_eq!(
        out.status.code(),
        Some(if healthy { 0 } else { 1 }),
        "{json}"
    );
}

/// The proxy path end to end: update, routes, status and fix-502 exit 0 while nothing is broken;
/// fix-502 exits 1 while a route fails and names it; rollbacks of what is not there exit 2.
#[test]
fn proxy_commands_exit_0_when_fine_1_while_a_route_fails_2_for_what_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let value = unique_name("p");
    let label = format!("butler.exit-test={value}");
    let nginx = unique_name("exit-nginx");
    let config = online_config(dir.path(), &label, &nginx);
    let config = config.as_str();
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&nginx);
    ensure_butler_network();
    check(&[
        case(&["proxy-update", "--config", config], 0, &[]),
        case(&["proxy", "routes", "--config", config], 0, &["APP"]),
        case(&["status", "--config", config], 0, &["SERVICES"]),
        case(
            &["fix-502", "--config", config],
            0,
            &["no routes: nothing to probe"],
        ),
        case(
            &["proxy", "rollback", "--config", config],
            2,
            &["no earlier applied config version"],
        ),
        case(
            &["rollback", "never-deployed", "--config", config],
            2,
            &["no deployments of app never-deployed", "butler deployments"],
        ),
    ]);

    // An app whose label sends the proxy to a port nothing listens on: the config applies (0),
    // the route answers 502, and fix-502 cannot make it answer: exit 1, naming the route.
    let name = unique_name("exit-app");
    let _app = AppContainer::builder(&name)
        .label("butler.exit-test", &value)
        .label("butler.port", "9999")
        .start();
    check(&[case(&["proxy-update", "--config", config], 0, &[&name])]);
    let host = format!("{name}.localhost");
    check(&[
        case(
            &["fix-502", "--dry-run", "--config", config],
            1,
            &[&host, "dry run: 1 of 1 routes fail"],
        ),
        // `status` reports; it is `health` that judges.
        case(&["status", "--config", config], 0, &["SERVICES"]),
        case(&["health", "--config", config], 1, &[&name]),
    ]);
}

/// `proxy-monitor` watches until interrupted: Ctrl-C is a normal end (0).
#[test]
fn proxy_monitor_exits_0_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let label = format!("butler.exit-test={}", unique_name("m"));
    let config = online_config(dir.path(), &label, &unique_name("exit-nginx"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_butler"))
        .args(["proxy-monitor", "--config", &config])
        .env_remove("DOCKER_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}
