//! The test app (`examples/testapp.rs` in the `app` image) as a container: a builder for its
//! labels, environment, ports and networks, and a handle that removes it when dropped.

use std::time::Duration;

use crate::unique::test_label;
use crate::{container_ip, docker, docker_ok, ensure_image, wait_until};

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
