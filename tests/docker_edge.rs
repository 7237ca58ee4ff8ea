//! The Docker edge against the real engine: discovery, events, the network, and the nginx
//! container fed, validated, reloaded, rolled back and healed through the Docker API only.
//! Containers run the shared test app and nginx images (`butler_testkit`); every container and
//! network a test makes has a unique name and is removed when the test ends, also on panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use butler_testkit::*;
use devops_butler::docker::EngineHandle;
use devops_butler::docker::events::{Coalescer, EngineEvent, watch};
use devops_butler::docker::{discovery, network};
use devops_butler::nginx::{ConfigTree, Ensured, Nginx, NginxSpec, NginxState};
use devops_butler::proxy::apply::{Applier, ApplyStatus, RouteProbe};
use devops_butler::store::{NewVersion, Store};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// The butler's own engine client, the thing under test; the testkit uses the CLI.
async fn engine() -> EngineHandle {
    devops_butler::docker::client::connect(None)
        .await
        .expect("these tests need a running Docker engine")
}

// ---------- discovery ----------

#[tokio::test]
async fn discovery_reads_labels_env_exposed_port_ip_and_listening_socket() {
    let docker = engine().await;
    let app = AppContainer::builder(&unique_name("edge-disc"))
        .label("butler.name", "shop")
        .label("butler.host", "shop.example.com,www.example.com")
        .env("VIRTUAL_HOST", "a=b.example.com")
        .expose(8000)
        .listen(8000)
        .start();

    // `start` returns once the app has printed `listening on :8000`: the socket is there to see.
    let snap = discovery::snapshot_one(&*docker, app.name())
        .await
        .unwrap()
        .expect("a running container has a snapshot");
    assert_eq!(snap.listening_ports, Some(vec![8000]));
    assert_eq!(snap.id, app.id());
    assert_eq!(snap.name, app.name());
    assert_eq!(snap.image, ensure_image("app"));
    assert_eq!(snap.labels["butler.name"], "shop");
    assert_eq!(
        snap.labels["butler.host"],
        "shop.example.com,www.example.com"
    );
    // split at the first '=' only
    assert_eq!(snap.env["VIRTUAL_HOST"], "a=b.example.com");
    assert_eq!(snap.exposed_ports, vec![8000]);
    assert_eq!(snap.networks["bridge"].to_string(), app.default_ip());
    assert!(snap.running);
    assert!(snap.started_at.is_some());
    assert_eq!(snap.health, None);
    assert_eq!(snap.restart_count, 0);

    let all = discovery::list_snapshots(&*docker).await.unwrap();
    assert!(
        all.iter().any(|s| s.id == app.id()),
        "list_snapshots includes the app"
    );
}

#[tokio::test]
async fn listening_port_is_found_without_expose_and_logs_are_kept_when_ports_are_ambiguous() {
    let docker = engine().await;
    let quiet = AppContainer::builder(&unique_name("edge-noexpose"))
        .listen(9123)
        .start();
    let snap = discovery::snapshot_one(&*docker, quiet.name())
        .await
        .unwrap()
        .expect("a running container has a snapshot");
    assert!(snap.exposed_ports.is_empty());
    assert_eq!(
        snap.listening_ports,
        Some(vec![9123]),
        "the socket on 9123 is seen although nothing is exposed"
    );

    // Two exposed ports and two listening sockets: neither picks the port, so the planner will
    // want the logs.
    let chatty = AppContainer::builder(&unique_name("edge-chatty"))
        .expose(3000)
        .expose(4000)
        .listen(3000)
        .listen(4000)
        .start();
    let snap = discovery::snapshot_one(&*docker, chatty.name())
        .await
        .unwrap()
        .expect("a running container has a snapshot");
    assert_eq!(snap.exposed_ports, vec![3000, 4000]);
    assert_eq!(snap.listening_ports, Some(vec![3000, 4000]));
    assert!(
        snap.log_tail.contains("listening on :3000"),
        "the log tail is read when the port is ambiguous: {:?}",
        snap.log_tail
    );

    assert!(
        discovery::snapshot_one(&*docker, &unique_name("edge-no-such-container"))
            .await
            .unwrap()
            .is_none()
    );
}

// ---------- events ----------

#[tokio::test]
async fn events_and_the_coalescer_see_a_start() {
    let docker = engine().await;
    let mut events = Box::pin(watch(docker.clone()));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap(),
        Some(EngineEvent::Resync),
        "the first event after connecting is a Resync"
    );

    let app = AppContainer::builder(&unique_name("edge-ev")).spawn();
    let id = app.id().to_owned();

    let mut coalescer = Coalescer::new(Duration::from_millis(150), Duration::from_secs(1));
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        // Other tests run in parallel and events are replayed from 2 s back: look for ours.
        loop {
            let batch = coalescer
                .next_batch(&mut events)
                .await
                .expect("stream never ends");
            if batch.containers.contains(&id) {
                return batch;
            }
        }
    })
    .await
    .expect("the start of our container arrives within 10 s");
    assert!(seen.events >= 1);
}

// ---------- network ----------

#[tokio::test]
async fn network_ensure_and_connect_are_idempotent() {
    let docker = engine().await;
    let mut cleanup = Cleanup::new();
    // Created by the code under test; only registered here so that it is removed.
    let net = unique_name("edge-net");
    cleanup.add_network(&net);
    let app = AppContainer::builder(&unique_name("edge-netapp")).spawn();

    let first = network::ensure_network(&*docker, &net).await.unwrap();
    let second = network::ensure_network(&*docker, &net).await.unwrap();
    assert_eq!(first, second, "an existing network is reused");
    assert_eq!(
        docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{index .Labels \"butler.role\"}}",
            &net
        ]),
        "bridge network"
    );

    assert!(
        !network::is_connected(&*docker, app.name(), &net)
            .await
            .unwrap()
    );
    network::connect(&*docker, app.name(), &net).await.unwrap();
    network::connect(&*docker, app.name(), &net).await.unwrap();
    assert!(
        network::is_connected(&*docker, app.name(), &net)
            .await
            .unwrap()
    );
    let snap = discovery::snapshot_one(&*docker, app.name())
        .await
        .unwrap()
        .unwrap();
    assert!(snap.networks.contains_key(&net), "{:?}", snap.networks);
}

// ---------- nginx ----------

fn tree(banner: &str, sites: &[(&str, String)]) -> ConfigTree {
    let mut files = BTreeMap::from([
        (
            "nginx.conf".to_owned(),
            "worker_processes 1;\nerror_log stderr warn;\npid /run/butler-nginx.pid;\n\
             events { worker_connections 256; }\n\
             http {\n    access_log off;\n    server_names_hash_bucket_size 128;\n    include sites/*.conf;\n}\n"
                .to_owned(),
        ),
        (
            "sites/default.conf".to_owned(),
            format!(
                "server {{\n    listen 80 default_server;\n    location / {{ return 200 \"{banner}\\n\"; }}\n}}\n"
            ),
        ),
    ]);
    for (name, body) in sites {
        files.insert(format!("sites/{name}.conf"), body.clone());
    }
    files
}

fn hash(tree: &ConfigTree) -> String {
    let mut h = Sha256::new();
    for (path, body) in tree {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(body.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

struct Proxy {
    nginx: Nginx,
    applier: Applier,
    addr: SocketAddr,
    net: String,
}

/// A fresh nginx container (the shared nginx image) on its own network and a free host port,
/// serving `initial`. Both are made by the code under test and registered with `cleanup`.
async fn proxy(cleanup: &mut Cleanup, initial: &ConfigTree) -> Proxy {
    proxy_with_image(cleanup, initial, &butler_testkit::proxy_image()).await
}

async fn proxy_with_image(cleanup: &mut Cleanup, initial: &ConfigTree, image: &str) -> Proxy {
    let docker = engine().await;
    let net = unique_name("edge-pnet");
    cleanup.add_network(&net);
    network::ensure_network(&*docker, &net).await.unwrap();
    let container_name = unique_name("edge-nginx");
    cleanup.add_container(&container_name);
    let spec = NginxSpec {
        container_name,
        image: image.to_owned(),
        network: net.clone(),
        http_port: free_port(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], spec.http_port));
    let nginx = Nginx::new(docker, spec);
    assert_eq!(nginx.state().await.unwrap(), NginxState::Missing);
    let ensured = nginx.ensure(initial, &hash(initial)).await.unwrap();
    assert_eq!(
        ensured,
        Ensured::Created {
            was: NginxState::Missing
        }
    );
    let applier = Applier::new(nginx.clone());
    Proxy {
        nginx,
        applier,
        addr,
        net,
    }
}

/// The body of `GET /` with `Host: host` through the proxy, which must answer 200.
fn body(addr: SocketAddr, host: &str) -> String {
    let resp = http_get(&addr.to_string(), host, "/")
        .unwrap_or_else(|e| panic!("GET {host} via {addr}: {e}"));
    assert_eq!(resp.status, 200, "GET {host} via {addr}: {}", resp.body);
    resp.body
}

#[tokio::test]
async fn a_bad_tree_is_refused_and_a_good_one_goes_live_on_hup_without_a_restart() {
    let mut cleanup = Cleanup::new();
    let a = tree("version A", &[]);
    let p = proxy(&mut cleanup, &a).await;
    assert_eq!(body(p.addr, "anything.test"), "version A\n");
    assert_eq!(p.nginx.live_version().await.unwrap(), Some(hash(&a)));
    let started = p.nginx.started_at().await.unwrap();

    // Refused: nginx's own message comes back and A keeps serving.
    let bad = tree(
        "version BAD",
        &[("bad", "server { listen 80; bogus_directive on; }\n".into())],
    );
    let out = p.applier.apply(&bad, &hash(&bad), &[]).await;
    match &out.status {
        ApplyStatus::Invalid { error } => {
            assert!(
                error.contains("unknown directive \"bogus_directive\""),
                "{error}"
            )
        }
        other => panic!("a bad tree must be refused, got {other:?}"),
    }
    assert_eq!(out.live, Some(hash(&a)));
    assert_eq!(p.nginx.live_version().await.unwrap(), Some(hash(&a)));
    assert_eq!(body(p.addr, "anything.test"), "version A\n");

    // A real app on the proxy network, routed by its IP.
    let app_name = unique_name("edge-app");
    let app = AppContainer::builder(&app_name)
        .env("APP_NAME", &app_name)
        .listen(8000)
        .network(&p.net)
        .start();
    let ip = app.ip(&p.net);
    let site = format!(
        "upstream app {{ server {ip}:8000; keepalive 8; }}\n\
         server {{ listen 80; server_name app.test; location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n"
    );
    let b = tree("version B", &[("app", site)]);
    let out = p
        .applier
        .apply(
            &b,
            &hash(&b),
            &[RouteProbe {
                host: "app.test".into(),
                expected_status: Some(200),
            }],
        )
        .await;
    assert_eq!(out.status, ApplyStatus::Applied, "{out:#?}");
    assert_eq!(out.previous, Some(hash(&a)));
    assert!(out.probes.iter().all(|p| p.ok), "{:?}", out.probes);
    eprintln!("apply B timings: {:?}", out.timings);
    assert_eq!(
        (out.timings.upload, out.timings.swap),
        (Duration::ZERO, Duration::ZERO),
        "an image with a shell and tar takes, validates, swaps and reloads in one exec"
    );
    assert_eq!(body(p.addr, "anything.test"), "version B\n");
    let routed = body(p.addr, "app.test");
    assert!(
        routed.starts_with(&format!("app={app_name} ")) && routed.contains(" port=8000 path=/ "),
        "app.test reaches the app: {routed}"
    );
    assert_eq!(
        p.nginx.started_at().await.unwrap(),
        started,
        "reloaded, not restarted"
    );

    // The same tree again is a no-op.
    let again = p.applier.apply(&b, &hash(&b), &[]).await;
    assert_eq!(again.status, ApplyStatus::Unchanged);
}

#[tokio::test]
async fn an_image_without_a_shell_is_validated_swapped_and_reloaded_step_by_step() {
    let mut cleanup = Cleanup::new();
    let a = tree("version A", &[]);
    let p = proxy_with_image(
        &mut cleanup,
        &a,
        &butler_testkit::nginx_image_without_shell(),
    )
    .await;
    let b = tree("version B", &[]);
    let out = p.applier.apply(&b, &hash(&b), &[]).await;
    assert_eq!(out.status, ApplyStatus::Applied, "{out:#?}");
    assert!(
        out.timings.swap > Duration::ZERO,
        "the step-by-step swap ran: {:?}",
        out.timings
    );
    assert_eq!(body(p.addr, "anything.test"), "version B\n");
    let bad = tree("version BAD", &[("bad", "nonsense;\n".into())]);
    let refused = p.applier.apply(&bad, &hash(&bad), &[]).await;
    assert!(
        matches!(&refused.status, ApplyStatus::Invalid { error } if error.contains("nonsense")),
        "{refused:#?}"
    );
    assert_eq!(p.nginx.live_version().await.unwrap(), Some(hash(&b)));
    assert_eq!(body(p.addr, "anything.test"), "version B\n");
}

#[tokio::test]
async fn a_route_that_fails_after_the_reload_is_rolled_back() {
    let mut cleanup = Cleanup::new();
    let a = tree("version A", &[]);
    let p = proxy(&mut cleanup, &a).await;
    // Valid for nginx -t, but its upstream refuses connections: 502.
    let dead = "server { listen 80; server_name dead.test; location / { proxy_pass http://127.0.0.1:9; } }\n";
    let c = tree("version C", &[("dead", dead.into())]);
    let out = p
        .applier
        .clone()
        .with_verify_timeout(Duration::from_millis(500))
        .apply(
            &c,
            &hash(&c),
            &[RouteProbe {
                host: "dead.test".into(),
                expected_status: None,
            }],
        )
        .await;
    match &out.status {
        ApplyStatus::RolledBack { reason, restored } => {
            assert!(reason.contains("dead.test answered 502"), "{reason}");
            assert_eq!(restored.as_deref(), Some(hash(&a).as_str()));
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(p.nginx.live_version().await.unwrap(), Some(hash(&a)));
    assert_eq!(
        body(p.addr, "dead.test"),
        "version A\n",
        "the old config serves again"
    );
}

#[tokio::test]
async fn a_removed_or_stopped_nginx_comes_back_with_the_last_good_tree() {
    let mut cleanup = Cleanup::new();
    let state = tempfile::tempdir().unwrap();
    let store = Store::open(state.path()).unwrap();
    let a = tree("version A", &[]);
    let p = proxy(&mut cleanup, &a).await;
    let b = tree("version B", &[]);
    let out = p.applier.apply(&b, &hash(&b), &[]).await;
    assert_eq!(out.status, ApplyStatus::Applied, "{out:#?}");
    store
        .record_version(NewVersion {
            hash: hash(&b),
            cause: "test".into(),
            summary: "B".into(),
            files: b.clone(),
            applied: true,
            error: None,
            timings: out.timings.for_version(None),
        })
        .await
        .unwrap();
    let bad = tree("version BAD", &[("bad", "nonsense;\n".into())]);
    let refused = p.applier.apply(&bad, &hash(&bad), &[]).await;
    store
        .record_version(NewVersion {
            hash: hash(&bad),
            cause: "test".into(),
            summary: "BAD".into(),
            files: bad,
            applied: refused.is_applied(),
            error: Some(format!("{:?}", refused.status)),
            timings: refused.timings.for_version(None),
        })
        .await
        .unwrap();

    docker_ok(&["rm", "-f", &p.nginx.spec().container_name]);
    assert_eq!(p.nginx.state().await.unwrap(), NginxState::Missing);
    let last_good = store.last_good().await.unwrap().unwrap();
    assert_eq!(last_good.info.hash, hash(&b));
    let healed = p
        .nginx
        .ensure(&last_good.files, &last_good.info.hash)
        .await
        .unwrap();
    assert_eq!(
        healed,
        Ensured::Created {
            was: NginxState::Missing
        }
    );
    assert_eq!(body(p.addr, "x.test"), "version B\n");

    docker_ok(&["stop", "-t", "1", &p.nginx.spec().container_name]);
    assert!(matches!(
        p.nginx.state().await.unwrap(),
        NginxState::Stopped { .. }
    ));
    let healed = p
        .nginx
        .ensure(&last_good.files, &last_good.info.hash)
        .await
        .unwrap();
    assert!(
        matches!(
            healed,
            Ensured::Created {
                was: NginxState::Stopped { .. }
            }
        ),
        "{healed:?}"
    );
    assert_eq!(body(p.addr, "x.test"), "version B\n");
    assert_eq!(
        p.nginx
            .ensure(&last_good.files, &last_good.info.hash)
            .await
            .unwrap(),
        Ensured::AlreadyRunning
    );
}

/// Not a benchmark (no assertion on time): prints per-step timings of applies of a 200-server tree.
#[tokio::test]
async fn apply_step_timings_with_200_servers() {
    let mut cleanup = Cleanup::new();
    let a = tree("version A", &[]);
    let p = proxy(&mut cleanup, &a).await;
    let mut rows = Vec::new();
    for round in 0..10 {
        let sites: Vec<(String, String)> = (0..200)
            .map(|i| {
                (
                    format!("app{i}"),
                    format!("server {{ listen 80; server_name app{i}.test; location / {{ return 200 \"app{i} r{round}\\n\"; }} }}\n"),
                )
            })
            .collect();
        let refs: Vec<(&str, String)> =
            sites.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        let t = tree(&format!("round {round}"), &refs);
        let out = p
            .applier
            .apply(
                &t,
                &hash(&t),
                &[RouteProbe {
                    host: "app7.test".into(),
                    expected_status: Some(200),
                }],
            )
            .await;
        assert_eq!(out.status, ApplyStatus::Applied, "{out:#?}");
        assert_eq!(body(p.addr, "app7.test"), format!("app7 r{round}\n"));
        rows.push(out.timings);
    }
    let median = |f: &dyn Fn(&devops_butler::proxy::apply::StepTimings) -> Duration| {
        let mut v: Vec<Duration> = rows.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "median of 10 applies, 200 servers: upload {:?} validate {:?} swap {:?} reload {:?} verify {:?}",
        median(&|t| t.upload),
        median(&|t| t.validate),
        median(&|t| t.swap),
        median(&|t| t.reload),
        median(&|t| t.verify),
    );
}
