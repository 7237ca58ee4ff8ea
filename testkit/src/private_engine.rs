//! A private Docker engine in a network namespace of its own, for tests that stop and restart the
//! engine itself without touching the one every other test shares. Its own namespace matters: a
//! second dockerd on the host's network deletes the shared engine's `docker0` at start, even with a
//! bridge of its own. In the namespace it has its own bridges, its own (empty, ACCEPT) iptables and
//! its own loopback, where its published ports listen; the butler under test runs in the same
//! namespace (`nsenter --net`) and the test reaches it with [`in_netns`].

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::wait_until_or;

/// `nsenter` joins only the network namespace: `ip netns exec` also mounts a fresh /sys, which
/// hides the cgroup mounts dockerd needs.
pub(crate) fn netns_arg(netns: &str) -> String {
    format!("--net=/run/netns/{netns}")
}

/// Runs `f` on a thread that has joined network namespace `netns`; the rest of the test process
/// stays where it is (a namespace is per thread).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("cannot open network namespace {path}: {e}"));
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("cannot join network namespace {netns}: {e}"));
                f()
            })
            .join()
            .expect("a thread in the private network namespace panicked")
    })
}

/// A dockerd with its own socket, data and exec roots (and so its own containerd) in network
/// namespace [`PrivateEngine::netns`]. `--live-restore` keeps its containers running while it is
/// down, as a production engine restart would. Drop removes its containers, stops it, unmounts and
/// deletes its state, and removes the namespace.
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    netns: String,
}

impl PrivateEngine {
    pub fn start() -> PrivateEngine {
        let dir = tempfile::Builder::new()
            .prefix("butler-engine-")
            .tempdir_in("/tmp")
            .unwrap();
        let netns = format!("butler-eng-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A namespace left by a killed earlier run of this pid would fail `add`.
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let mut engine = PrivateEngine {
            dir,
            child: None,
            netns,
        };
        engine.launch();
        engine
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `unix:///…/docker.sock`, for `[docker] host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(netns_arg(&self.netns))
            .args(["dockerd", "-H"])
            .arg(self.host())
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--live-restore",
            ])
            .args(["--default-address-pool", "base=10.213.0.0/16,size=24"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private dockerd");
        self.child = Some(child);
        wait_until_or(
            "the private engine to answer",
            Duration::from_secs(60),
            || self.docker(&["version"]).status.success(),
            || self.log(),
        );
    }

    /// Stops the engine (SIGTERM, as `systemctl stop docker` would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same socket and state.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// `docker -H <private socket> ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Copies an image from the shared engine into this one.
    pub fn load_image(&self, image: &str) {
        let saved = Command::new("docker")
            .args(["save", image])
            .output()
            .expect("docker save");
        assert!(
            saved.status.success(),
            "docker save {image}: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        let mut load = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        load.stdin.take().unwrap().write_all(&saved.stdout).unwrap();
        assert!(
            load.wait().unwrap().success(),
            "docker load {image} into the private engine"
        );
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- private dockerd log ----\n{}", self.log());
        }
        // Containers first: with --live-restore they would outlive the daemon.
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
        }
        self.stop();
        // Mounts under the state directories must go before the directory can.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}
