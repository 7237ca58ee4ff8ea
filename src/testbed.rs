//! What the unit tests of the engine-facing code share: a [`FakeEngine`] running the butler's
//! nginx container, a config and a store in a temporary directory, and a stand-in for nginx's
//! HTTP port. App containers get loopback addresses (127.77.x.y), so a test makes an app answer
//! by listening on its address with [`Bed::serve_app`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::docker::fake::{ExecHandler, FakeEngine};
use crate::docker::{EngineHandle, ExecOutput, ImageInfo};
use crate::labels::{LABEL_ENABLE, LABEL_NGINX_SPEC, LABEL_ROLE};
use crate::nginx::{LIVE_LINK, NginxSpec};
use crate::proxy::reconcile::{ROUTE_PROBE_PATH, ROUTE_PROBE_STATUS};
use crate::store::Store;

pub const APP_IMAGE: &str = "testbed/app:1";

pub struct Bed {
    pub engine: Arc<FakeEngine>,
    pub config: Arc<Config>,
    pub store: Store,
    /// The status nginx's stand-in answers for any path but the route probe's.
    pub proxy_status: Arc<AtomicU16>,
    _dir: tempfile::TempDir,
}

impl Bed {
    /// A running nginx that takes every config (`nginx -t` passes, reloads start new workers).
    pub async fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let proxy_status = Arc::new(AtomicU16::new(200));
        let port = serve_http(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new({
                let status = proxy_status.clone();
                move |path: &str| {
                    if path == ROUTE_PROBE_PATH {
                        ROUTE_PROBE_STATUS
                    } else {
                        status.load(Ordering::Relaxed)
                    }
                }
            }),
        )
        .await
        .port();
        let mut config = Config::default();
        config.state.dir = dir.path().join("state");
        config.proxy.templates_dir = dir.path().join("templates");
        config.proxy.http_port = port;
        config.health.timeout = crate::config::HumanDuration(std::time::Duration::from_millis(300));
        std::fs::create_dir_all(&config.state.dir).unwrap();
        let store = Store::open(&config.state.dir).unwrap();
        let engine = FakeEngine::new();
        engine.add_image(
            APP_IMAGE,
            ImageInfo {
                id: "sha256:app1".into(),
                exposed_ports: vec![8080],
                ..Default::default()
            },
        );
        engine.add_image(
            &config.proxy.image,
            ImageInfo {
                id: "sha256:nginx".into(),
                ..Default::default()
            },
        );
        engine.on_exec(nginx_takes_everything());
        let bed = Bed {
            engine,
            config: Arc::new(config),
            store,
            proxy_status,
            _dir: dir,
        };
        bed.start_nginx();
        bed
    }

    pub fn handle(&self) -> EngineHandle {
        self.engine.clone()
    }

    /// The butler's nginx container, running, with no address on the proxy network (so it is
    /// reached on its published port, where the stand-in listens).
    pub fn start_nginx(&self) -> String {
        let spec = NginxSpec::from_config(&self.config.proxy);
        let id = self
            .engine
            .run(&spec.container_name, &self.config.proxy.image, &[]);
        self.engine.edit(&id, |c| {
            c.info.labels = BTreeMap::from([
                (LABEL_ROLE.into(), "nginx".into()),
                (LABEL_NGINX_SPEC.into(), spec.digest()),
                (LABEL_ENABLE.into(), "false".into()),
            ]);
        });
        id
    }

    /// A running app container on the proxy network with `labels`; its id.
    pub fn run_app(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let id = self
            .engine
            .run(name, APP_IMAGE, &[&self.config.proxy.network]);
        self.engine.edit(&id, |c| {
            c.info.labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        });
        id
    }

    /// Makes container `id` answer HTTP `status` on `port` at its proxy-network address.
    pub async fn serve_app(&self, id: &str, port: u16, status: u16) -> SocketAddr {
        let ip = self.engine.container(id).unwrap().info.networks[&self.config.proxy.network];
        serve_http(SocketAddr::new(ip, port), Arc::new(move |_: &str| status)).await
    }
}

impl Bed {
    /// Makes every container created from now on answer `status` on `port` once it has an
    /// address (what a deployed revision's instances do); the task ends with the test's runtime.
    pub fn serve_new_containers(&self, port: u16, status: u16) {
        let engine = self.engine.clone();
        let network = self.config.proxy.network.clone();
        let mut seen: std::collections::BTreeSet<String> =
            engine.state().containers.keys().cloned().collect();
        tokio::spawn(async move {
            loop {
                let fresh: Vec<(String, std::net::IpAddr)> = engine
                    .state()
                    .containers
                    .values()
                    .filter(|c| !seen.contains(&c.info.id))
                    .filter_map(|c| Some((c.info.id.clone(), *c.info.networks.get(&network)?)))
                    .collect();
                for (id, ip) in fresh {
                    seen.insert(id);
                    serve_http(SocketAddr::new(ip, port), Arc::new(move |_: &str| status)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
    }
}

/// nginx accepts every config: the one-exec stage-and-activate (`sh -c SCRIPT sh ROOT HASH`)
/// points `live` at the version and starts new workers; `nginx -t` and the rest exit 0.
pub fn nginx_takes_everything() -> ExecHandler {
    Arc::new(|container, argv, _| {
        if let ["sh", "-c", _, "sh", _, hash] = argv {
            container
                .links
                .insert(LIVE_LINK.to_owned(), format!("versions/{hash}"));
            container.generation += 1;
        }
        ExecOutput::default()
    })
}

/// nginx refuses every config with `error`, as its one-exec activation reports it (exit 11).
pub fn nginx_refuses(error: &'static str) -> ExecHandler {
    Arc::new(move |_, argv, _| {
        let refuses = matches!(argv.first(), Some(&"sh") | Some(&"nginx"));
        ExecOutput {
            exit_code: if refuses { 11 } else { 0 },
            output: error.to_owned(),
        }
    })
}

type Answer = Arc<dyn Fn(&str) -> u16 + Send + Sync>;

/// A minimal HTTP/1.1 server at `addr` answering each request with `answer(path)` and no body.
async fn serve_http(addr: SocketAddr, answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let status = answer(&path);
                let response = format!(
                    "HTTP/1.1 {status} Stand-in\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    bound
}
