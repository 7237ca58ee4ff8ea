//! The packages as users get them: the .deb installed through apt in the systemd test bed (install,
//! route, upgrade, remove, purge), the same .deb installed where systemd does not run (an image
//! build), lintian's verdict, and the .rpm's contents and scriptlets next to the .deb's. The
//! packages are built by `packaging/build.sh`, once per test run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use butler_testkit::packages::{self, AptRepo, apt_get, in_container};
use butler_testkit::{
    AppContainer, Cleanup, CmdOutput, Testbed, docker_ok, ensure_image, free_port, http_get,
    repo_root, unique_name, wait_until,
};
use serde_json::Value;

const WORKERS: [&str; 4] = ["dynamic-proxy", "health-monitor", "recovery", "dashboard"];
/// Generous: two cores shared with other engineers' builds and tests.
const SETTLE: Duration = Duration::from_secs(60);

fn unit(worker: &str) -> String {
    format!("butler-{worker}.service")
}

fn run(program: &str, args: &[&str]) -> CmdOutput {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
        .into()
}

fn state(tb: &Testbed, unit: &str) -> String {
    tb.exec(&["systemctl", "is-active", unit])
        .stdout
        .trim()
        .to_owned()
}

fn main_pids(tb: &Testbed) -> Vec<String> {
    WORKERS
        .iter()
        .map(|w| {
            tb.exec(&["systemctl", "show", "-p", "MainPID", "--value", &unit(w)])
                .stdout
                .trim()
                .to_owned()
        })
        .collect()
}

fn all_active(tb: &Testbed) -> bool {
    WORKERS.iter().all(|w| state(tb, &unit(w)) == "active")
}

/// `apt-get ARGS` in the container, timed; what apt said goes to the test's output.
fn timed_apt(container: &str, args: &str) -> CmdOutput {
    let start = Instant::now();
    let out = apt_get(container, args);
    eprintln!(
        "packaging: apt-get {args} took {} ms (exit {})\n{}{}",
        start.elapsed().as_millis(),
        out.code,
        out.stdout,
        out.stderr
    );
    out
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    eprintln!("packaging: {what} took {} ms", start.elapsed().as_millis());
    value
}

#[test]
fn apt_install_routes_upgrade_keeps_the_config_remove_stops_purge_cleans() {
    let pkgs = packages::packages();
    // The butler drives the host's engine: its nginx gets a name and a port of its own, so that it
    // cannot meet another test's (or a developer's `butler-nginx` on port 80).
    let nginx = unique_name("butler-nginx");
    let http_port = free_port();
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&nginx);
    let tb = Testbed::boot();

    // The admin's config is in place before the package arrives (as config management puts it);
    // dpkg keeps it (--force-confold) and the package's default lands next to it as .dpkg-dist.
    // Its apps are only the containers labelled for it: the engine is shared with other tests.
    let only = unique_name("pkg");
    let config = format!(
        "# local config of this host\n[proxy]\ncontainer_name = \"{nginx}\"\nhttp_port = {http_port}\n\
         image = \"{}\"\n[docker]\nonly_label = \"devops-butler.pkg={only}\"\n\
         [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
        ensure_image("nginx")
    );
    tb.write_file("/etc/butler/butler.toml", config.as_bytes());

    let repo = AptRepo::new(&[packages::host_docker_stub_deb(), &pkgs.deb]);
    repo.publish(tb.name());
    let install_start = Instant::now();
    let install = timed_apt(tb.name(), "install devops-butler")
        .expect_success("apt-get install devops-butler");
    assert!(
        install.stdout.contains("Setting up devops-butler"),
        "{}",
        install.stdout
    );

    // Installed, enabled and started by the package alone.
    tb.wait_until("every worker active after install", SETTLE, || {
        all_active(&tb)
    });
    eprintln!(
        "packaging: from apt-get install to four active workers: {} ms",
        install_start.elapsed().as_millis()
    );
    let status = tb.exec(&["systemctl", "status", "--no-pager", "butler-dynamic-proxy"]);
    assert!(
        status.stdout.contains("Active: active (running)"),
        "{}",
        status.stdout
    );
    assert_eq!(
        tb.exec(&["systemctl", "is-enabled", "butler.target"])
            .stdout
            .trim(),
        "enabled"
    );
    tb.exec(&["getent", "passwd", "butler"])
        .expect_success("the butler user exists");
    let list = tb
        .exec(&["butler", "services", "list", "--output", "json"])
        .expect_success("butler services list");
    let list: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    for worker in WORKERS {
        let entry = list
            .iter()
            .find(|u| u["unit"] == unit(worker))
            .unwrap_or_else(|| panic!("{worker} not listed: {list:?}"));
        assert_eq!(entry["active_state"], "active", "{entry}");
    }
    tb.exec(&["test", "-f", "/usr/share/man/man1/butler.1.gz"])
        .expect_success("the man page is installed");

    // A container on the host's engine, routed through the butler's nginx on the host.
    let name = unique_name("pkg-app");
    let _app = AppContainer::builder(&name)
        .label("devops-butler.pkg", &only)
        .env("APP_NAME", "pkg-app")
        .listen(3000)
        .expose(3000)
        .start();
    let addr = format!("127.0.0.1:{http_port}");
    let host = format!("{name}.localhost");
    wait_until("the app routed through the proxy", SETTLE, || {
        http_get(&addr, &host, "/").is_ok_and(|r| r.status == 200 && r.body.starts_with("app="))
    });

    // Every worker logs to the journal under its unit.
    tb.wait_until("every worker in the journal", SETTLE, || {
        let journal = tb
            .exec(&["journalctl", "-u", "butler-*", "--no-pager", "-o", "cat"])
            .stdout;
        WORKERS
            .iter()
            .all(|w| journal.contains(&format!("{w} worker ready")))
    });

    // A local edit after install, then the upgrade to a rebuilt, newer package.
    tb.sh(
        "sed -i 's/^interval = \"2s\"/interval = \"3s\"/' /etc/butler/butler.toml \
           && echo '# edited after install' >>/etc/butler/butler.toml",
    )
    .expect_success("editing the config");
    let edited = tb
        .exec(&["cat", "/etc/butler/butler.toml"])
        .expect_success("cat");
    let before = main_pids(&tb);
    repo.add(packages::upgrade_deb());
    repo.publish(tb.name());
    let upgrade_start = Instant::now();
    let upgrade = timed_apt(tb.name(), "upgrade").expect_success("apt-get upgrade");
    assert!(
        upgrade.stdout.contains("Unpacking devops-butler")
            && upgrade.stdout.contains("Setting up devops-butler"),
        "{}",
        upgrade.stdout
    );
    let version = tb
        .exec(&["dpkg-query", "-W", "-f", "${Version}", "devops-butler"])
        .stdout;
    assert_eq!(
        version,
        packages::deb_field(packages::upgrade_deb(), "Version")
    );
    assert_eq!(
        tb.exec(&["cat", "/etc/butler/butler.toml"]).stdout,
        edited.stdout,
        "the upgrade changed the local config"
    );
    tb.wait_until("every worker restarted after the upgrade", SETTLE, || {
        let now = main_pids(&tb);
        all_active(&tb)
            && now
                .iter()
                .zip(&before)
                .all(|(new, old)| new != "0" && new != old)
    });
    eprintln!(
        "packaging: from apt-get upgrade to four restarted workers: {} ms",
        upgrade_start.elapsed().as_millis()
    );
    let shown = tb
        .exec(&["butler", "config", "show", "--output", "json"])
        .expect_success("butler config show");
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["health"]["interval"], "3s", "{shown}");

    // remove: the workers stop; config and state stay for a reinstall.
    timed_apt(tb.name(), "remove devops-butler").expect_success("apt-get remove devops-butler");
    for unit in WORKERS
        .map(unit)
        .iter()
        .chain([&"butler.target".to_owned()])
    {
        let now = state(&tb, unit);
        assert!(now == "inactive" || now == "unknown", "{unit}: {now}");
    }
    assert_eq!(
        tb.sh("pgrep -x butler || true").stdout.trim(),
        "",
        "no butler process is left"
    );
    tb.exec(&["test", "-f", "/etc/butler/butler.toml"])
        .expect_success("remove keeps the config");
    tb.exec(&["test", "-d", "/var/lib/butler"])
        .expect_success("remove keeps the state");

    // purge: no config, no state, no enablement left behind.
    timed_apt(tb.name(), "purge devops-butler").expect_success("apt-get purge devops-butler");
    let left = tb.sh(
        "ls -d /etc/butler /var/lib/butler /etc/systemd/system/multi-user.target.wants/butler.target \
         /usr/bin/butler 2>/dev/null; dpkg-query -W -f '${Status}' devops-butler 2>/dev/null; true",
    );
    assert_eq!(left.stdout.trim(), "", "left after purge: {}", left.stdout);
    drop(tb);
    drop(cleanup);
}

#[test]
fn install_without_a_running_systemd_creates_the_user_enables_and_starts_nothing() {
    let pkgs = packages::packages();
    // The test bed's image with `sleep` as PID 1 instead of systemd, as in a chroot or `docker build`.
    let name = unique_name("butler-nosystemd");
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&name);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{}={}", butler_testkit::TEST_LABEL, std::process::id()),
        "--entrypoint",
        "sleep",
        &ensure_image("systemd"),
        "infinity",
    ]);
    let repo = AptRepo::new(&[packages::host_docker_stub_deb(), &pkgs.deb]);
    repo.publish(&name);
    timed_apt(&name, "install devops-butler").expect_success("apt-get install without systemd");

    in_container(&name, "getent passwd butler").expect_success("the butler user exists");
    in_container(
        &name,
        "test -L /etc/systemd/system/multi-user.target.wants/butler.target",
    )
    .expect_success("butler.target is enabled for the first boot");
    let running = in_container(&name, "pgrep -x butler || true");
    assert_eq!(running.stdout.trim(), "", "nothing was started");
    // The shipped default config is valid as it is.
    let check = in_container(&name, "butler config check");
    let check = check.expect_success("butler config check on the shipped config");
    assert!(
        check.stdout.contains("/etc/butler/butler.toml: valid"),
        "{}",
        check.stdout
    );
}

/// The shipped config is accepted as it is, and every commented default in it is the real default:
/// uncommenting the lines changes nothing (keys whose default is "unset" are examples).
#[test]
fn the_shipped_config_is_valid_and_its_commented_defaults_are_the_real_ones() {
    let butler = env!("CARGO_BIN_EXE_butler");
    let shipped = repo_root().join("packaging/butler.toml");
    let check = run(butler, &["config", "check", shipped.to_str().unwrap()]);
    let check = check.expect_success("butler config check packaging/butler.toml");
    assert!(check.stdout.contains("valid"), "{}", check.stdout);

    let text = std::fs::read_to_string(&shipped).unwrap();
    let mut uncommented = String::new();
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        if line.starts_with("# [[") {
            // An example table (alert rules have no defaults to compare).
            section = "alerts".to_owned();
        } else if line.starts_with('[') && !line.starts_with("[[") {
            section = line.trim_matches(['[', ']']).to_owned();
            uncommented.push_str(line);
            uncommented.push('\n');
        } else if let Some(setting) = line.strip_prefix("# ")
            && !section.is_empty()
            && section != "alerts"
            && setting.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        {
            // Strip the trailing comment, not a '#' inside a quoted value.
            let value_end = setting.find("  #").unwrap_or(setting.len());
            keys.push((
                section.clone(),
                setting.split_once(" = ").unwrap().0.to_owned(),
            ));
            uncommented.push_str(setting[..value_end].trim_end());
            uncommented.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("uncommented.toml");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&full, &uncommented).unwrap();
    std::fs::write(&empty, "").unwrap();
    let show = |path: &Path| -> Value {
        let out = run(
            butler,
            &[
                "config",
                "show",
                "--output",
                "json",
                "--config",
                path.to_str().unwrap(),
            ],
        )
        .expect_success("butler config show");
        serde_json::from_str(&out.stdout).unwrap()
    };
    let (documented, defaults) = (show(&full), show(&empty));
    assert!(keys.len() >= 14, "found only {keys:?} in\n{uncommented}");
    // `[tls.acme]` is `tls` → `acme` in the JSON.
    let at = |json: &Value, section: &str, key: &str| -> Value {
        let table = section.split('.').fold(json, |value, part| &value[part]);
        table[key].clone()
    };
    for (section, key) in &keys {
        let default = at(&defaults, section, key);
        if default.is_null() {
            continue;
        }
        assert_eq!(
            at(&documented, section, key),
            default,
            "packaging/butler.toml documents {section}.{key} with another value than its default"
        );
    }
}

#[test]
fn lintian_reports_no_error_and_every_warning_is_explained() {
    let deb = &packages::packages().deb;
    let out = timed("lintian", || {
        run(
            "lintian",
            &[
                "--tag-display-limit",
                "0",
                "--display-info",
                deb.to_str().unwrap(),
            ],
        )
    });
    let readme = std::fs::read_to_string(repo_root().join("packaging/README.md")).unwrap();
    let mut tags = BTreeSet::new();
    for line in out.stdout.lines() {
        assert!(!line.starts_with("E: "), "lintian error:\n{}", out.stdout);
        if let Some(rest) = line.strip_prefix("W: ") {
            let tag = rest.split_whitespace().nth(1).unwrap_or(rest);
            tags.insert(tag.to_owned());
        }
    }
    // Exit 1: a tag at or above --fail-on (error by default); 2: lintian itself failed.
    assert_eq!(out.code, 0, "lintian failed: {out:?}");
    for tag in &tags {
        assert!(
            readme.contains(&format!("`{tag}`")),
            "lintian warns `{tag}`, which packaging/README.md does not explain:\n{}",
            out.stdout
        );
    }
    eprintln!("lintian:\n{}", out.stdout);
}

/// Files (not directories) a package installs, as absolute paths.
fn deb_files(deb: &Path) -> BTreeSet<String> {
    let out = run("dpkg-deb", &["--contents", deb.to_str().unwrap()])
        .expect_success("dpkg-deb --contents");
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

#[test]
fn the_rpm_installs_the_same_files_as_the_deb_with_the_same_lifecycle() {
    let pkgs = packages::packages();
    let rpm = pkgs.rpm.to_str().unwrap();
    let listed = run("rpm", &["-qpl", rpm]).expect_success("rpm -qpl");
    let rpm_files: BTreeSet<String> = listed.stdout.lines().map(str::to_owned).collect();
    let mut deb_files = deb_files(&pkgs.deb);
    // Debian keeps its changelog as a file; rpm keeps it in the package header.
    assert!(deb_files.remove("/usr/share/doc/devops-butler/changelog.Debian.gz"));
    assert_eq!(
        rpm_files, deb_files,
        "the .rpm and the .deb install different files"
    );
    for expected in [
        "/usr/bin/butler",
        "/usr/lib/systemd/system/butler.target",
        "/usr/lib/systemd/system/butler-dynamic-proxy.service",
        "/usr/lib/sysusers.d/butler.conf",
        "/usr/lib/tmpfiles.d/butler.conf",
        "/etc/butler/butler.toml",
        "/usr/share/devops-butler/templates/nginx.conf",
        "/usr/share/man/man1/butler.1.gz",
        "/usr/share/bash-completion/completions/butler",
        "/usr/share/zsh/vendor-completions/_butler",
        "/usr/share/fish/vendor_completions.d/butler.fish",
        "/usr/share/doc/devops-butler/copyright",
        "/usr/share/doc/devops-butler/README.md",
    ] {
        assert!(
            rpm_files.contains(expected),
            "{expected} not in {rpm_files:?}"
        );
    }

    // The config file is a config file in both.
    let rpm_config = run("rpm", &["-qpc", rpm]).expect_success("rpm -qpc");
    assert_eq!(rpm_config.stdout.trim(), "/etc/butler/butler.toml");
    let conffiles = run(
        "dpkg-deb",
        &["--info", pkgs.deb.to_str().unwrap(), "conffiles"],
    )
    .expect_success("dpkg-deb --info conffiles");
    assert_eq!(conffiles.stdout.trim(), "/etc/butler/butler.toml");

    // The same lifecycle: user, tmpfiles, enable and start on install, restart after an upgrade,
    // stop on removal. Each row: what, the .deb's script and what it says, what the .rpm says.
    let scripts = run("rpm", &["-qp", "--scripts", rpm]).expect_success("rpm -qp --scripts");
    let deb_script = |name: &str| {
        run("dpkg-deb", &["--info", pkgs.deb.to_str().unwrap(), name])
            .expect_success(&format!("the .deb's {name}"))
            .stdout
    };
    let lifecycle = [
        (
            "creates the user",
            "postinst",
            "systemd-sysusers",
            "systemd-sysusers",
        ),
        (
            "runs tmpfiles",
            "postinst",
            "systemd-tmpfiles --create",
            "systemd-tmpfiles --create",
        ),
        (
            "enables butler.target",
            "postinst",
            "helper enable butler.target",
            "systemctl enable butler.target",
        ),
        (
            "starts it",
            "postinst",
            "_dh_action=start",
            "systemctl start butler.target",
        ),
        (
            "restarts it after an upgrade",
            "postinst",
            "_dh_action=restart",
            "try-restart butler.target",
        ),
        (
            "stops it on removal",
            "prerm",
            "invoke stop butler.target",
            "systemctl stop butler.target",
        ),
        (
            "reloads systemd",
            "postrm",
            "daemon-reload",
            "daemon-reload",
        ),
    ];
    for (what, script, in_deb, in_rpm) in lifecycle {
        let deb_text = deb_script(script);
        assert!(
            deb_text.contains(in_deb),
            "the .deb's {script} does not: {what}\n{deb_text}"
        );
        assert!(
            scripts.stdout.contains(in_rpm),
            "the .rpm does not: {what}\n{}",
            scripts.stdout
        );
    }
    for scriptlet in [
        "postinstall scriptlet",
        "preuninstall scriptlet",
        "postuninstall scriptlet",
    ] {
        assert!(
            scripts.stdout.contains(scriptlet),
            "no {scriptlet}:\n{}",
            scripts.stdout
        );
    }
    let postinst = deb_script("postinst");
    // Nothing starts without a running systemd, in either.
    assert!(
        postinst.contains("[ -d /run/systemd/system ]"),
        "{postinst}"
    );
    assert!(
        scripts.stdout.contains("[ -d /run/systemd/system ]"),
        "{}",
        scripts.stdout
    );

    let requires = run("rpm", &["-qp", "--requires", rpm]).expect_success("rpm -qp --requires");
    assert!(requires.stdout.contains("systemd"), "{}", requires.stdout);
    assert!(requires.stdout.contains("docker-ce"), "{}", requires.stdout);
    assert_eq!(packages::deb_field(&pkgs.deb, "Recommends"), "git");
    let depends = packages::deb_field(&pkgs.deb, "Depends");
    assert!(
        depends.contains("systemd")
            && depends.contains("docker.io | docker-ce")
            && depends.contains("libc6"),
        "{depends}"
    );
}
