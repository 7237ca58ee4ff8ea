//! The `docker` CLI, which the testkit drives on purpose instead of the bollard client under test:
//! commands and what they said, container IPs, and the shared `devops-butler-net` network.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The bridge network the butler routes through (DESIGN.md, "Network").
pub const BUTLER_NETWORK: &str = "devops-butler-net";
pub(crate) const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// What a command inside a container (or any command) said.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
    /// Panics with everything the command said unless it exited 0.
    pub fn expect_success(self, what: &str) -> CmdOutput {
        assert!(
            self.success(),
            "{what} failed with exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

impl From<Output> for CmdOutput {
    fn from(o: Output) -> Self {
        CmdOutput {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// `docker ARGS...`, whatever its outcome.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `docker {}`: {e} (is the Docker CLI installed?)",
                args.join(" ")
            )
        })
}

/// `docker ARGS...` with `input` on its stdin.
pub fn docker_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")));
    // Write from a thread: a command that answers before it has read all its input must not deadlock.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for docker");
    let _ = writer.join();
    out
}

/// `docker ARGS...`, which must succeed; its stdout, trimmed. Panics with the command and its stderr.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Create `devops-butler-net` unless it exists. It is shared by every test and never removed.
pub fn ensure_butler_network() {
    // The engine's duplicate-name check is not atomic: two creates at once can both succeed and leave
    // two networks of one name, which every later `network connect` refuses as ambiguous. Serialise
    // creates in this process, and if another process raced us anyway, keep the oldest network.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    let ids = || -> Vec<String> {
        let out = docker(&[
            "network",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("name=^{BUTLER_NETWORK}$"),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    if ids().is_empty() {
        let out = docker(&["network", "create", BUTLER_NETWORK]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("already exists"),
            "cannot create {BUTLER_NETWORK}: {stderr}"
        );
    }
    let mut found: Vec<(String, String)> = ids()
        .into_iter()
        .map(|id| {
            (
                docker_ok(&["network", "inspect", "-f", "{{.Created}}", &id]),
                id,
            )
        })
        .collect();
    found.sort();
    for (_, extra) in found.iter().skip(1) {
        remove_network(extra);
    }
}

/// The IP of a container on a network ("" when it is not on it).
pub fn container_ip(container: &str, network: &str) -> String {
    let format = format!(
        "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
    );
    docker_ok(&["inspect", "-f", &format, container])
}

pub(crate) fn remove_network(net: &str) {
    // A network with endpoints cannot be removed: disconnect whatever is still on it first
    // (e.g. containers the butler under test connected).
    let attached = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        net,
    ]);
    for c in String::from_utf8_lossy(&attached.stdout).split_whitespace() {
        let _ = docker(&["network", "disconnect", "-f", net, c]);
    }
    let _ = docker(&["network", "rm", net]);
}
