//! What devops-butler's integration tests and benchmarks share (a dev-dependency of the root
//! crate): real Docker containers (the locally built test app and nginx images), the systemd test
//! bed, and small HTTP/WebSocket clients. Everything here shells out to the `docker` CLI on purpose:
//! the tests must not share code with the bollard client they are testing. Every resource made here
//! is named by `unique_name`, labelled `devops-butler.test`, and removed on drop, also when a test
//! panics.

pub mod browser;
pub mod dashboard;
pub mod deploy;
pub mod load;
pub mod packages;
pub mod private_engine;
pub mod stats;
pub mod ws_codec;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Label on every container and network the testkit creates (value: the test process's pid).
pub const TEST_LABEL: &str = "devops-butler.test";
/// The bridge network the butler routes through (DESIGN.md, "Network").
pub const BUTLER_NETWORK: &str = "devops-butler-net";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The repository's root (where the butler's Cargo.toml is, one level above this crate's),
/// whichever directory the tests run from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------------
// Commands

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

// ---------------------------------------------------------------------------------------------------
// Names, images, cleanup

/// A name no other test, process or earlier run uses: `PREFIX-<pid><time>-<n>`, valid for Docker
/// containers and networks and as a DNS label (lowercase, at most 63 characters with a short prefix).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{:x}{:04x}-{n}",
        prefix.to_ascii_lowercase(),
        std::process::id(),
        nanos & 0xffff
    )
}

/// The tag of a locally built image of `kind` (`systemd`, `nginx`, `app`), built by
/// `scripts/images/build.sh` if its inputs changed; the script runs once per kind and process.
pub fn ensure_image(kind: &str) -> String {
    static SYSTEMD: OnceLock<String> = OnceLock::new();
    static NGINX: OnceLock<String> = OnceLock::new();
    static APP: OnceLock<String> = OnceLock::new();
    let cell = match kind {
        "systemd" => &SYSTEMD,
        "nginx" => &NGINX,
        "app" => &APP,
        other => panic!("ensure_image: unknown image kind '{other}' (systemd, nginx, app)"),
    };
    // get_or_init blocks other threads asking for the same kind until the first build is done.
    cell.get_or_init(|| {
        let start = Instant::now();
        let tag = run_build_script("scripts/images/build.sh", &[kind], &[]);
        assert!(
            !tag.is_empty(),
            "scripts/images/build.sh {kind} printed no tag"
        );
        eprintln!(
            "testkit: image {kind} = {tag} ({} ms)",
            start.elapsed().as_millis()
        );
        tag
    })
    .clone()
}

/// The nginx test image without a shell (no `sh`, no `dash`), like a distroless nginx: the butler
/// must then validate, swap and reload with one Docker call per step. Derived from
/// `ensure_image("nginx")` by committing a container that deleted them; cached by that image's tag.
pub fn nginx_image_without_shell() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let base = ensure_image("nginx");
        let version = base.rsplit(':').next().unwrap_or("latest");
        let tag = format!("devops-butler-test/nginx-noshell:{version}");
        if docker(&["image", "inspect", &tag]).status.success() {
            return tag;
        }
        let scratch = unique_name("noshell");
        docker_ok(&[
            "run",
            "--name",
            &scratch,
            "--entrypoint",
            "/usr/bin/rm",
            &base,
            "-f",
            "/usr/bin/sh",
            "/usr/bin/dash",
            "/bin/sh",
            "/bin/dash",
        ]);
        let committed = docker(&["commit", "--change", "ENTRYPOINT []", &scratch, &tag]);
        let _ = docker(&["rm", "-f", &scratch]);
        assert!(
            committed.status.success(),
            "docker commit {tag}: {}",
            String::from_utf8_lossy(&committed.stderr)
        );
        tag
    })
    .clone()
}

/// `bash SCRIPT ARGS` (SCRIPT relative to the repository) with `env` added, its progress on the
/// test's stderr; returns its stdout, trimmed. Panics naming the script when it fails.
pub fn run_build_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = repo_root().join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} {} failed ({}); its progress is above",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the containers and networks registered with it when dropped, also while a test panics.
/// Declare it before the things it cleans so that it drops after them.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    labelled: Vec<String>,
    images: Vec<String>,
    image_repos: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup::default()
    }
    /// Remove this container (name or id) at drop.
    pub fn add_container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }
    /// Remove every container carrying this label (`key=value`) at drop: the ones a butler under
    /// test started for the test, whose names the test may not know.
    pub fn add_labelled(&mut self, label: &str) {
        self.labelled.push(label.to_string());
    }
    /// Remove this image (tag or id) at drop, after the containers.
    pub fn add_image(&mut self, image: &str) {
        self.images.push(image.to_string());
    }
    /// Remove every image of this repository (`butler-deploy/<app>`, all tags) at drop: the ones a
    /// butler under test built for the test.
    pub fn add_image_repo(&mut self, repo: &str) {
        self.image_repos.push(repo.to_string());
    }
    /// Remove this network at drop (after the containers; others still attached are disconnected).
    pub fn add_network(&mut self, name: &str) {
        self.networks.push(name.to_string());
    }
    /// Create a labelled bridge network with a unique name from `prefix`, removed at drop.
    pub fn create_network(&mut self, prefix: &str) -> String {
        let name = unique_name(prefix);
        docker_ok(&["network", "create", "--label", &test_label(), &name]);
        self.add_network(&name);
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers(&self.containers);
        for label in &self.labelled {
            let out = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            remove_containers(&ids);
        }
        let mut images = self.images.clone();
        for repo in &self.image_repos {
            let out = docker(&["images", "-q", "--no-trunc", repo]);
            images.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        if !images.is_empty() {
            images.sort();
            images.dedup();
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for net in self.networks.iter().rev() {
            remove_network(net);
        }
    }
}

fn test_label() -> String {
    format!("{TEST_LABEL}={}", std::process::id())
}

fn remove_containers(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(names.iter().map(String::as_str));
    let _ = docker(&args);
}

fn remove_network(net: &str) {
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

/// Builds image `tag` from `dockerfile` alone (no context: `FROM` a local image, `ENV`, `EXPOSE`,
/// ...); works offline when the base is local. Register the tag with `Cleanup::add_image`.
pub fn build_image(tag: &str, dockerfile: &str) {
    let out: CmdOutput =
        docker_with_stdin(&["build", "-q", "-t", tag, "-"], dockerfile.as_bytes()).into();
    out.expect_success(&format!("docker build -t {tag}"));
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

/// Polls `check` every 100 ms until it is true; panics naming `desc` after `timeout`.
pub fn wait_until(desc: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if check() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {desc}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------------
// The test app

/// How to run one test app container (`examples/testapp.rs` in the `app` image). Build one with
/// `AppContainer::builder(name)`, then `start()` (waits until it listens) or `spawn()` (does not).
#[derive(Debug, Clone)]
pub struct AppBuilder {
    name: String,
    labels: Vec<(String, String)>,
    env: Vec<(String, String)>,
    expose: Vec<u16>,
    listen: Vec<u16>,
    networks: Vec<String>,
    args: Vec<String>,
    docker_args: Vec<String>,
}

impl AppBuilder {
    /// A Docker label (`butler.name`, `butler.port`, ...).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    /// An environment variable (`APP_NAME`, `VIRTUAL_HOST`, `DELAY_MS`, ...).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Declare an exposed port in the container's metadata (like EXPOSE); the app need not listen there.
    pub fn expose(mut self, port: u16) -> Self {
        self.expose.push(port);
        self
    }
    /// Make the app listen on this port (repeatable). Without any, it listens on 3000.
    pub fn listen(mut self, port: u16) -> Self {
        self.listen.push(port);
        self
    }
    /// Attach to this network; the first is the one it starts on, the others are connected before start.
    /// Without any, the container is on Docker's default bridge.
    pub fn network(mut self, network: &str) -> Self {
        self.networks.push(network.into());
        self
    }
    /// An extra argument for the app itself (`--name x`, `--delay-ms 500`, ...).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }
    /// An extra argument for `docker create` (`--health-cmd ...`, `-p ...`).
    pub fn docker_arg(mut self, arg: &str) -> Self {
        self.docker_args.push(arg.into());
        self
    }
    /// Create and start the container, and wait (10 s at most) until it prints `listening on` for
    /// every port it listens on.
    pub fn start(self) -> AppContainer {
        let ports = if self.listen.is_empty() {
            vec![3000]
        } else {
            self.listen.clone()
        };
        let delay = self
            .env
            .iter()
            .find(|(k, _)| k == "DELAY_MS")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let app = self.spawn();
        wait_until(
            &format!("app {} listens on {ports:?}", app.name),
            Duration::from_millis(10_000 + delay),
            || {
                let logs = app.logs();
                ports
                    .iter()
                    .all(|p| logs.contains(&format!("listening on :{p}")))
            },
        );
        app
    }
    /// Create and start the container; return as soon as Docker has started it.
    pub fn spawn(self) -> AppContainer {
        let image = ensure_image("app");
        let label = test_label();
        let mut args: Vec<String> = vec![
            "create".into(),
            "--name".into(),
            self.name.clone(),
            "--label".into(),
            label,
        ];
        for (k, v) in &self.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (k, v) in &self.env {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }
        for p in &self.expose {
            args.extend(["--expose".into(), p.to_string()]);
        }
        if let Some(first) = self.networks.first() {
            args.extend(["--network".into(), first.clone()]);
        }
        args.extend(self.docker_args.iter().cloned());
        args.push(image);
        for p in &self.listen {
            args.extend(["--port".into(), p.to_string()]);
        }
        args.extend(self.args.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker_ok(&argv);
        // From here on the container is ours to remove, whatever fails next.
        let app = AppContainer {
            name: self.name.clone(),
            id,
        };
        for net in self.networks.iter().skip(1) {
            docker_ok(&["network", "connect", net, &app.name]);
        }
        docker_ok(&["start", &app.name]);
        app
    }
}

/// A running test app container, removed (`docker rm -f`) when dropped.
#[derive(Debug)]
pub struct AppContainer {
    name: String,
    id: String,
}

impl AppContainer {
    /// A builder for a container named exactly `name` (use `unique_name`, or a fixed name the test
    /// needs, e.g. to test name handling).
    pub fn builder(name: &str) -> AppBuilder {
        AppBuilder {
            name: name.to_string(),
            labels: Vec::new(),
            env: Vec::new(),
            expose: Vec::new(),
            listen: Vec::new(),
            networks: Vec::new(),
            args: Vec::new(),
            docker_args: Vec::new(),
        }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The container's IP on `network` (panics when it is not on it).
    pub fn ip(&self, network: &str) -> String {
        let ip = container_ip(&self.name, network);
        assert!(
            !ip.is_empty(),
            "container {} has no IP on network {network}",
            self.name
        );
        ip
    }
    /// Its IP on Docker's default bridge (for apps started without `network`).
    pub fn default_ip(&self) -> String {
        self.ip("bridge")
    }
    /// stdout and stderr so far.
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
    pub fn stop(&self) {
        docker_ok(&["stop", "-t", "5", &self.name]);
    }
    pub fn restart(&self) {
        docker_ok(&["restart", "-t", "5", &self.name]);
    }
}

impl Drop for AppContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP and WebSocket clients (raw TcpStream: nothing between the test and the bytes on the wire)

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy); `body_bytes` holds it as sent (e.g. gzip).
    pub body: String,
    pub body_bytes: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no address for {addr}"),
        )
    })?;
    let stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// `GET path` on `addr` ("ip:port") with `Host: host`, one request per connection, 10 s timeout.
pub fn http_get(addr: &str, host: &str, path: &str) -> std::io::Result<HttpResponse> {
    http_request(
        addr,
        "GET",
        path,
        &[("Host", host)],
        Duration::from_secs(10),
    )
}

/// `METHOD path` on `addr` with these headers (`Host` defaults to `addr`), an empty body, one
/// request per connection; `timeout` bounds the connect and each read.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut stream = connect(addr, timeout)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("User-Agent: butler-tests\r\nConnection: close\r\n");
    if method != "GET" && method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    parse_response(&read_response(&mut stream)?)
}

/// Reads one response: up to the end of its body when it has a Content-Length (some servers keep
/// the connection open despite `Connection: close`), else until the server closes.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == "content-length")
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if let Some(length) = length
                && raw.len() >= end + 4 + length
            {
                return Ok(raw);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body".into()))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        body_bytes: body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Open a WebSocket on `addr` ("ip:port") with `Host: host_header` at `path`, check the 101 and its
/// `Sec-WebSocket-Accept`, send `message` as one masked text frame, and return the text of the first
/// frame that comes back. The error names what went wrong (e.g. the response head when it was no 101).
pub fn websocket_echo(
    addr: &str,
    host_header: &str,
    path: &str,
    message: &str,
) -> std::io::Result<String> {
    let err = |m: String| std::io::Error::other(m);
    let (mut stream, mut reader) =
        websocket_connect(addr, host_header, path, Duration::from_secs(10))?;
    stream.write_all(&client_frame(0x81, message.as_bytes()))?;
    let header = ws_codec::read_frame_header(&mut reader)?;
    if header.masked {
        return Err(err(
            "the server sent a masked frame (RFC 6455 §5.1 forbids it)".into(),
        ));
    }
    let len = header.payload_len;
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if header.opcode != 0x1 {
        return Err(err(format!(
            "expected a text frame, got opcode {:#x}",
            header.opcode
        )));
    }
    // Say goodbye properly; the answer does not matter.
    let _ = stream.write_all(&client_frame(0x88, &1000u16.to_be_bytes()));
    String::from_utf8(payload).map_err(|e| err(format!("echo is not UTF-8: {e}")))
}

/// The client side of a WebSocket handshake: the stream to write frames to and a reader positioned
/// after the 101's head. Checks the status and `Sec-WebSocket-Accept`.
pub fn websocket_connect(
    addr: &str,
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let err = |m: String| std::io::Error::other(m);
    let mut stream = connect(addr, timeout)?;
    let key = ws_codec::base64(&pseudo_random_bytes::<16>());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(err(format!(
                "connection closed during the handshake; got {head:?}"
            )));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if !head.starts_with("HTTP/1.1 101") {
        return Err(err(format!(
            "expected 101 Switching Protocols, got:\n{head}"
        )));
    }
    let expected = ws_codec::accept_key(&key);
    let accept = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_string());
    if accept.as_deref() != Some(expected.as_str()) {
        return Err(err(format!(
            "Sec-WebSocket-Accept is {accept:?}, expected {expected:?}"
        )));
    }
    Ok((stream, reader))
}

/// A client frame: always masked (RFC 6455 §5.3).
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = pseudo_random_bytes::<4>();
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Unpredictable enough for a WebSocket key and mask (not for secrets): std's per-process random
/// hash keys mixed with the time and a counter.
fn pseudo_random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// The systemd test bed

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

// ---------------------------------------------------------------------------------------------------
// Host ports

/// A host port nothing listens on right now, for a container to publish. The kernel picks it, so
/// tests running in parallel do not choose the same one (another process may still take it before
/// Docker binds it; the window is short).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot find a free host port: {e}"))
        .port()
}

// ---------------------------------------------------------------------------------------------------
// The butler under test, on the host

/// `butler run` as a child process with everything that could collide made unique: its own nginx
/// container name, a free proxy port, a free dashboard port and a temp state dir. It shares
/// `devops-butler-net` and the engine with every other test. Drop stops it and removes its nginx
/// container; while a test panics it first prints the butler's log.
pub struct ButlerProcess {
    child: Option<std::process::Child>,
    /// The network namespace it runs in (with a private engine); `None` for the host's.
    netns: Option<String>,
    pub nginx: String,
    pub http_port: u16,
    pub dashboard_port: u16,
    pub config_path: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ButlerProcess {
    /// Starts the butler with the nginx test image; `extra_toml` is appended to the generated
    /// config (e.g. `[proxy]\ntemplates_dir = "..."` must not repeat a section: pass whole sections
    /// other than [proxy], or use `start_with` to override proxy keys).
    pub fn start(binary: &Path) -> ButlerProcess {
        Self::start_with(binary, "", "")
    }

    /// `proxy_extra` lines go into the [proxy] section; `extra_toml` is appended after it.
    pub fn start_with(binary: &Path, proxy_extra: &str, extra_toml: &str) -> ButlerProcess {
        Self::start_full(binary, proxy_extra, "", extra_toml)
    }

    /// Like `start_with`, and `dashboard_extra` lines go into the [dashboard] section
    /// (`token_file = ...`, `action_timeout = ...`).
    pub fn start_full(
        binary: &Path,
        proxy_extra: &str,
        dashboard_extra: &str,
        extra_toml: &str,
    ) -> ButlerProcess {
        ensure_butler_network();
        let butler = Self::launch(binary, &[], proxy_extra, dashboard_extra, extra_toml, None);
        butler.wait_until_ready();
        butler
    }

    /// `butler run --only WORKERS` (e.g. `&["health-monitor", "recovery"]`), without waiting for
    /// the proxy: without the dynamic-proxy worker nothing routes until the test runs
    /// `butler proxy-update` (see `proxy_update`). `extra_toml` is appended to the config.
    /// `proxy_extra` lines go into the [proxy] section (e.g. `network = "..."`).
    pub fn start_workers(
        binary: &Path,
        workers: &[&str],
        proxy_extra: &str,
        extra_toml: &str,
    ) -> ButlerProcess {
        let only = workers.join(",");
        ensure_butler_network();
        Self::launch(
            binary,
            &["--only", &only],
            proxy_extra,
            "",
            extra_toml,
            None,
        )
    }

    /// `butler proxy-update` against this butler's config, which must succeed: routes every app
    /// now and creates the nginx container when it is missing.
    pub fn proxy_update(&self, binary: &Path) {
        let out = self.cli(binary, &["proxy-update"]);
        assert!(out.success(), "butler proxy-update failed: {out:?}");
    }

    /// Starts the butler inside network namespace `netns` (see `private_engine`); requests from
    /// this handle go through that namespace too.
    pub fn start_in_netns(binary: &Path, netns: &str, extra_toml: &str) -> ButlerProcess {
        let butler = Self::launch(binary, &[], "", "", extra_toml, Some(netns));
        butler.wait_until_ready();
        butler
    }

    fn launch(
        binary: &Path,
        run_args: &[&str],
        proxy_extra: &str,
        dashboard_extra: &str,
        extra_toml: &str,
        netns: Option<&str>,
    ) -> ButlerProcess {
        let dir = tempfile::tempdir().expect("temp dir for the butler");
        let nginx = unique_name("butler-nginx");
        let http_port = free_port();
        let dashboard_port = free_port();
        let image = ensure_image("nginx");
        let config = format!(
            "[proxy]\nhttp_port = {http_port}\nimage = \"{image}\"\ncontainer_name = \"{nginx}\"\n\
             templates_dir = \"{templates}\"\n{proxy_extra}\n\
             [dashboard]\nlisten = \"127.0.0.1:{dashboard_port}\"\n{dashboard_extra}\n\
             [state]\ndir = \"{state}\"\n\
             [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n{extra_toml}\n",
            templates = dir.path().join("templates").display(),
            state = dir.path().join("state").display(),
        );
        let config_path = dir.path().join("butler.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("butler.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command.arg(private_engine::netns_arg(netns)).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("run")
            .args(run_args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start butler run");
        ButlerProcess {
            child: Some(child),
            netns: netns.map(str::to_owned),
            nginx,
            http_port,
            dashboard_port,
            config_path,
            log_path,
            _dir: dir,
        }
    }

    fn wait_until_ready(&self) {
        wait_until(
            "the butler's proxy to answer",
            Duration::from_secs(60),
            || {
                self.get("butler-readiness.invalid", "/")
                    .is_ok_and(|r| r.status == 404 || r.status == 200)
            },
        );
    }

    /// `127.0.0.1:<dashboard_port>`, the dashboard as a user on this host reaches it.
    pub fn dashboard_addr(&self) -> String {
        format!("127.0.0.1:{}", self.dashboard_port)
    }

    /// The butler's state directory (its store), for tests that read or seed it.
    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    /// `127.0.0.1:<http_port>`, the proxy as a user on this host reaches it.
    pub fn proxy_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// A request through the proxy with this Host header.
    pub fn get(&self, host: &str, path: &str) -> std::io::Result<HttpResponse> {
        match &self.netns {
            Some(netns) => {
                private_engine::in_netns(netns, || http_get(&self.proxy_addr(), host, path))
            }
            None => http_get(&self.proxy_addr(), host, path),
        }
    }

    /// Waits until `host` answers through the proxy with a status for which `ok` holds; returns
    /// that response.
    pub fn wait_for(
        &self,
        host: &str,
        timeout: Duration,
        ok: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let last = std::cell::RefCell::new(None);
        let found = std::cell::RefCell::new(None);
        wait_until_or(
            &format!("{host} through the proxy"),
            timeout,
            || match self.get(host, "/") {
                Ok(response) if ok(&response) => {
                    *found.borrow_mut() = Some(response);
                    true
                }
                Ok(response) => {
                    *last.borrow_mut() = Some(format!(
                        "{} {}",
                        response.status,
                        response.body.chars().take(120).collect::<String>()
                    ));
                    false
                }
                Err(error) => {
                    *last.borrow_mut() = Some(error.to_string());
                    false
                }
            },
            || {
                format!("last answer: {:?}", last.borrow())
                    + &format!("\nbutler log:\n{}", self.log())
            },
        );
        found.into_inner().unwrap()
    }

    /// Waits until `host` is served by a test app through the proxy (not by the default server's
    /// directory page, which answers 200 too).
    pub fn wait_for_app(&self, host: &str) -> HttpResponse {
        self.wait_for(host, Duration::from_secs(20), |r| {
            r.status == 200 && r.body.starts_with("app=")
        })
    }

    /// Runs `butler ARGS --config <this butler's config>` and returns what it said.
    pub fn cli(&self, binary: &Path, args: &[&str]) -> CmdOutput {
        Command::new(binary)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("run butler")
            .into()
    }

    /// Whether `butler run` is still running (it has not exited on its own).
    pub fn is_running(&self) -> bool {
        let pid = self.child.as_ref().map(|c| c.id());
        pid.is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        })
    }

    /// Everything the butler logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many configs the butler applied so far (one reload each), from its log.
    pub fn applied_count(&self) -> usize {
        self.log().matches("; applied version ").count()
    }
}

/// Stops a process the testkit started (SIGTERM, then waits); while a test panics, prints
/// `log` (what the process said) under `name`.
fn stop_process(child: Option<std::process::Child>, name: &str, log: impl FnOnce() -> String) {
    if let Some(mut child) = child {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    if std::thread::panicking() {
        eprintln!("---- {name} ----\n{}---- end of {name} ----", log());
    }
}

impl Drop for ButlerProcess {
    fn drop(&mut self) {
        stop_process(self.child.take(), "butler log", || self.log());
        let _ = docker(&["rm", "-f", "-v", &self.nginx]);
    }
}

/// Like `wait_until`, with more to say on timeout.
pub fn wait_until_or(
    desc: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {desc}; {}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------------
// Proxy resilience helpers (tests/proxy_resilience.rs, tests/proxy_burst.rs): template overrides,
// the nginx container's view of the config, and the butler's config history.

impl ButlerProcess {
    /// The directory this butler reads template overrides from (it does not exist until written to).
    pub fn templates_dir(&self) -> PathBuf {
        self._dir.path().join("templates")
    }

    /// Installs a template override (`site.conf`, `nginx.conf`, ...) atomically: the butler reads
    /// the directory on every round and must never see half a file.
    pub fn write_template(&self, name: &str, contents: &str) {
        let dir = self.templates_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).unwrap();
        std::fs::rename(&partial, dir.join(name)).unwrap();
    }

    /// Removes a template override, so the shipped template is used again.
    pub fn remove_template(&self, name: &str) {
        std::fs::remove_file(self.templates_dir().join(name)).unwrap();
    }

    /// `butler ARGS --output json --config <this butler's config>`: what it said, and its stdout
    /// parsed (panics naming the command when stdout is not JSON).
    pub fn cli_json(&self, binary: &Path, args: &[&str]) -> (CmdOutput, serde_json::Value) {
        let mut argv = args.to_vec();
        argv.extend(["--output", "json"]);
        let out = self.cli(binary, &argv);
        let json = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`butler {}` printed no JSON ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                argv.join(" "),
                out.code,
                out.stdout,
                out.stderr
            )
        });
        (out, json)
    }

    /// `butler proxy history --output json`, which must succeed.
    pub fn history(&self, binary: &Path) -> ConfigHistory {
        let (out, json) = self.cli_json(binary, &["proxy", "history", "--limit", "1000"]);
        assert!(out.success(), "butler proxy history failed: {out:?}");
        let versions = json["versions"]
            .as_array()
            .unwrap_or_else(|| panic!("no versions in {json}"))
            .iter()
            .map(|v| ConfigVersionRow {
                id: v["id"].as_i64().expect("version id"),
                hash: v["hash"].as_str().unwrap_or_default().to_owned(),
                applied: v["applied"].as_bool().expect("version applied"),
                cause: v["cause"].as_str().unwrap_or_default().to_owned(),
                summary: v["summary"].as_str().unwrap_or_default().to_owned(),
                error: v["error"].as_str().map(str::to_owned),
            })
            .collect();
        ConfigHistory {
            versions,
            pinned: json["pinned"].as_i64(),
        }
    }

    /// The id of this butler's nginx container, "" when there is none.
    pub fn nginx_id(&self) -> String {
        let out = docker(&["inspect", "-f", "{{.Id}}", &self.nginx]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The config nginx serves, as nginx itself reads it: `nginx -T` on the live tree, every
    /// included file with its name.
    pub fn live_nginx_config(&self) -> String {
        let out: CmdOutput = docker(&[
            "exec",
            &self.nginx,
            "nginx",
            "-T",
            "-q",
            "-c",
            "/etc/butler-nginx/live/nginx.conf",
        ])
        .into();
        out.expect_success("nginx -T in the butler's nginx container")
            .stdout
    }

    /// The config version the nginx container serves: the hash its `live` link points to.
    pub fn live_hash(&self) -> String {
        let out: CmdOutput =
            docker(&["exec", &self.nginx, "readlink", "/etc/butler-nginx/live"]).into();
        let target = out
            .expect_success("readlink live in the nginx container")
            .stdout;
        target
            .trim()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned()
    }

    /// Every file under the nginx container's config root (live, staged and old versions alike)
    /// that contains `needle`, as `grep -rlF` lists them.
    pub fn config_files_containing(&self, needle: &str) -> Vec<String> {
        let out: CmdOutput = docker(&[
            "exec",
            &self.nginx,
            "grep",
            "-rlF",
            "--",
            needle,
            "/etc/butler-nginx",
        ])
        .into();
        // grep: 0 = found, 1 = nothing found, anything else is an error.
        assert!(out.code == 0 || out.code == 1, "grep failed: {out:?}");
        out.stdout.lines().map(str::to_owned).collect()
    }
}

/// `butler proxy history`, newest version first.
#[derive(Debug, Clone)]
pub struct ConfigHistory {
    pub versions: Vec<ConfigVersionRow>,
    pub pinned: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ConfigVersionRow {
    pub id: i64,
    pub hash: String,
    pub applied: bool,
    pub cause: String,
    pub summary: String,
    pub error: Option<String>,
}

impl ConfigHistory {
    /// The applied versions, newest first.
    pub fn applied(&self) -> Vec<&ConfigVersionRow> {
        self.versions.iter().filter(|v| v.applied).collect()
    }
    pub fn newest_id(&self) -> i64 {
        self.versions.first().map_or(0, |v| v.id)
    }
}
// End of the proxy resilience helpers.

// ---------------------------------------------------------------------------------------------------
// Health and recovery helpers (tests/health_faults.rs): incidents and recoveries as the CLI shows them.

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
// End of the health and recovery helpers.
