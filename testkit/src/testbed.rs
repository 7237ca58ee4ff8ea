//! The systemd test bed: a real systemd as PID 1 in a container, with the host's Docker socket,
//! into which a test installs the butler's binary, units and config.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::docker::DOCKER_SOCKET;
use crate::unique::test_label;
use crate::{
    BUTLER_NETWORK, CmdOutput, container_ip, docker, docker_ok, docker_with_stdin,
    ensure_butler_network, ensure_image, repo_root, unique_name, wait_until,
};

/// A real systemd as PID 1 in a container (DESIGN.md, "Tests"), with the host's Docker socket mounted
/// and the container on `devops-butler-net`. Removed when dropped; while a test panics it first dumps
/// the journal of the `butler-*` units to stderr.
pub struct Testbed {
    name: String,
}

impl Testbed {
    /// Boot a test bed and install the butler into it: `binary` (pass `env!("CARGO_BIN_EXE_butler")`)
    /// as /usr/bin/butler, the repo's `systemd/` units, sysusers and tmpfiles files, and `config_toml`
    /// as /etc/butler/butler.toml; then sysusers, tmpfiles and a daemon-reload. No unit is started.
    pub fn start(binary: &Path, config_toml: &str) -> Testbed {
        let tb = Testbed::boot();
        tb.install_butler(binary, config_toml);
        tb
    }

    /// Boot the systemd image and wait until `systemctl is-system-running` says running (or degraded,
    /// after printing the failed units). Creates the `docker` group with the socket's gid and connects
    /// the container to `devops-butler-net`; installs nothing else.
    pub fn boot() -> Testbed {
        let image = ensure_image("systemd");
        let name = unique_name("butler-testbed");
        let start = Instant::now();
        let label = test_label();
        let socket_mount = format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}");
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            "testbed",
            "--label",
            &label,
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            &socket_mount,
            &image,
        ]);
        // From here on Drop removes the container, whatever fails next.
        let tb = Testbed { name };
        assert!(
            out.status.success(),
            "cannot start the test bed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tb.wait_for_boot(Duration::from_secs(90));
        let booted = start.elapsed();
        tb.create_docker_group();
        ensure_butler_network();
        // A butler running elsewhere on this engine may have connected it already (it connects every
        // container it sees); that is as good.
        let out = docker(&["network", "connect", BUTLER_NETWORK, &tb.name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("already exists"),
            "cannot connect the test bed to {BUTLER_NETWORK}: {stderr}"
        );
        eprintln!(
            "testkit: test bed {} running after {} ms (ready after {} ms)",
            tb.name,
            booted.as_millis(),
            start.elapsed().as_millis()
        );
        tb
    }

    fn wait_for_boot(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            // Until systemd has its private socket this fails at once; then `--wait` blocks until
            // the boot is done.
            let out = self.exec(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
            match out.stdout.trim() {
                "running" => return,
                "degraded" => {
                    let failed = self.exec(&["systemctl", "--failed", "--no-pager"]);
                    eprintln!(
                        "testkit: test bed {} booted degraded; failed units:\n{}",
                        self.name, failed.stdout
                    );
                    return;
                }
                _ => {}
            }
            if start.elapsed() > timeout {
                let logs = docker(&["logs", "--tail", "50", &self.name]);
                panic!(
                    "test bed {} did not boot within {timeout:?}: is-system-running said {:?} {:?}\n{}{}",
                    self.name,
                    out.stdout.trim(),
                    out.stderr.trim(),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The group that may use the Docker socket must have the socket's gid inside the test bed too
    /// (the bind mount keeps the host's numbers).
    fn create_docker_group(&self) {
        let gid = std::fs::metadata(DOCKER_SOCKET)
            .unwrap_or_else(|e| panic!("cannot stat {DOCKER_SOCKET}: {e}"))
            .gid();
        let script = if gid == 0 {
            // A socket owned by group root cannot be shared with a group, and chgrp on the bind mount
            // would change the host's socket: only root in the test bed reaches it.
            eprintln!(
                "testkit: {DOCKER_SOCKET} has gid 0; group docker in the test bed gets a free gid and no access"
            );
            "getent group docker >/dev/null || groupadd --system docker".to_string()
        } else {
            // -o: the gid may already belong to a group of the image; docker must have it all the same.
            format!(
                "getent group docker >/dev/null && groupmod -o -g {gid} docker || groupadd -o -g {gid} docker"
            )
        };
        self.sh(&script)
            .expect_success("creating group docker in the test bed");
    }

    /// Install the butler from the repo's `systemd/` directory (see `start`).
    pub fn install_butler(&self, binary: &Path, config_toml: &str) {
        self.install_butler_from(&repo_root().join("systemd"), binary, config_toml);
    }

    /// Install the butler with the units in `units_dir`: `binary` → /usr/bin/butler, every `*.service`
    /// and `*.target` → /etc/systemd/system/, `butler.sysusers` → /usr/lib/sysusers.d/butler.conf,
    /// `butler.tmpfiles` → /usr/lib/tmpfiles.d/butler.conf, `config_toml` → /etc/butler/butler.toml;
    /// then `systemd-sysusers`, `systemd-tmpfiles --create` and `systemctl daemon-reload`.
    pub fn install_butler_from(&self, units_dir: &Path, binary: &Path, config_toml: &str) {
        let mut files: Vec<(PathBuf, String)> =
            vec![(binary.to_path_buf(), "/usr/bin/butler".into())];
        let entries = std::fs::read_dir(units_dir).unwrap_or_else(|e| {
            panic!(
                "cannot read the butler's units in {}: {e}",
                units_dir.display()
            )
        });
        let mut units: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "service" || x == "target")
            })
            .collect();
        units.sort();
        assert!(
            !units.is_empty(),
            "no *.service or *.target in {}",
            units_dir.display()
        );
        for unit in units {
            let dest = format!(
                "/etc/systemd/system/{}",
                unit.file_name().unwrap().to_string_lossy()
            );
            files.push((unit, dest));
        }
        files.push((
            units_dir.join("butler.sysusers"),
            "/usr/lib/sysusers.d/butler.conf".into(),
        ));
        files.push((
            units_dir.join("butler.tmpfiles"),
            "/usr/lib/tmpfiles.d/butler.conf".into(),
        ));
        let refs: Vec<(&Path, &str)> = files
            .iter()
            .map(|(p, d)| (p.as_path(), d.as_str()))
            .collect();
        self.install_files(&refs);
        self.write_file("/etc/butler/butler.toml", config_toml.as_bytes());
        self.sh("systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload")
            .expect_success("sysusers, tmpfiles and daemon-reload in the test bed");
    }

    /// Copy host files into the test bed (`(host path, absolute destination)`), creating parent
    /// directories; modes are kept. Does not reload systemd.
    pub fn install_files(&self, files: &[(&Path, &str)]) {
        let dirs: Vec<&str> = files
            .iter()
            .filter_map(|(_, d)| Path::new(d).parent()?.to_str())
            .collect();
        let mut mkdir = vec!["mkdir", "-p"];
        mkdir.extend(dirs);
        self.exec(&mkdir).expect_success("mkdir in the test bed");
        for (src, dest) in files {
            assert!(
                src.exists(),
                "cannot install {}: no such file",
                src.display()
            );
            let target = format!("{}:{dest}", self.name);
            docker_ok(&["cp", &src.to_string_lossy(), &target]);
        }
    }

    /// Write `contents` to `dest` in the test bed (parent directories created, mode 0644, root-owned).
    pub fn write_file(&self, dest: &str, contents: &[u8]) {
        let script = r#"mkdir -p "$(dirname "$1")" && cat > "$1" && chmod 0644 "$1""#;
        let out = docker_with_stdin(
            &["exec", "-i", &self.name, "sh", "-c", script, "sh", dest],
            contents,
        );
        CmdOutput::from(out).expect_success(&format!("writing {dest} in the test bed"));
    }

    /// Run a command in the test bed (as root), whatever its outcome.
    pub fn exec(&self, argv: &[&str]) -> CmdOutput {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(argv);
        docker(&args).into()
    }

    /// Run a shell script in the test bed (`sh -c`), whatever its outcome.
    pub fn sh(&self, script: &str) -> CmdOutput {
        self.exec(&["sh", "-c", script])
    }

    /// The container's name (also what `docker` commands on the host take).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The test bed's IP on `devops-butler-net`.
    pub fn ip(&self) -> String {
        container_ip(&self.name, BUTLER_NETWORK)
    }

    /// Polls `check` every 100 ms; panics naming `desc` after `timeout`.
    pub fn wait_until(&self, desc: &str, timeout: Duration, check: impl FnMut() -> bool) {
        wait_until(desc, timeout, check)
    }

    /// `journalctl -u UNIT --no-pager -n LINES` inside the test bed.
    pub fn journal(&self, unit: &str, lines: usize) -> String {
        let n = lines.to_string();
        self.exec(&["journalctl", "-u", unit, "--no-pager", "-n", &n])
            .stdout
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let journal = self.journal("butler-*", 200);
            eprintln!(
                "---- journal of butler-* in test bed {} ----\n{journal}---- end of journal ----",
                self.name
            );
        }
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
