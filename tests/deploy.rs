//! `butler deploy`, `deployments` and `rollback` against a real engine and a real proxy: a
//! `butler run` with its own nginx routes what the deploys start. Each test deploys under names
//! only it uses and removes what it built; other engineers' containers on the engine are ignored.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use butler_testkit::deploy::{GitRepo, app_containers, clean_app, revision_image};
use butler_testkit::load::{LoadOptions, LoadResult, run_load};
use butler_testkit::{ButlerProcess, Cleanup, CmdOutput, ensure_image, unique_name};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// `butler deploy ARGS --output json`: what it said and the report.
fn deploy(butler: &ButlerProcess, args: &[&str]) -> (CmdOutput, Value) {
    let mut argv = vec!["deploy"];
    argv.extend_from_slice(args);
    butler.cli_json(bin(), &argv)
}

/// A deploy that must succeed; its report.
fn deployed(butler: &ButlerProcess, args: &[&str]) -> Value {
    let (out, report) = deploy(butler, args);
    assert_eq!(
        out.code, 0,
        "butler deploy {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(report["outcome"], "deployed", "{report}");
    report
}

/// `app=<name>` answered through the proxy, waiting until it does.
fn wait_for_answer(butler: &ButlerProcess, app: &str, name: &str) {
    let want = format!("app={name} ");
    butler.wait_for(&format!("{app}.localhost"), Duration::from_secs(30), |r| {
        r.status == 200 && r.body.starts_with(&want)
    });
}

fn deployments(butler: &ButlerProcess, app: &str) -> Vec<Value> {
    let (out, json) = butler.cli_json(bin(), &["deployments", app]);
    assert!(out.success(), "butler deployments: {out:?}");
    json["deployments"].as_array().cloned().unwrap_or_default()
}

/// The upstream servers of `app` as `butler proxy routes --output json` lists them.
fn servers(butler: &ButlerProcess, app: &str) -> Vec<Value> {
    let (out, json) = butler.cli_json(bin(), &["proxy", "routes"]);
    assert!(out.success(), "butler proxy routes: {out:?}");
    json["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["app"] == app)
        .flat_map(|r| r["servers"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Runs `during` while a load generator sends requests to `app` through the proxy.
fn under_load<T>(butler: &ButlerProcess, app: &str, during: impl FnOnce() -> T) -> (T, LoadResult) {
    let addr: SocketAddr = butler.proxy_addr().parse().unwrap();
    let host = format!("{app}.localhost");
    let options = LoadOptions {
        connections: 2,
        rate_per_connection: 100,
        ..LoadOptions::default()
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let load = s.spawn(|| run_load(addr, &host, &options, &stop));
        std::thread::sleep(Duration::from_millis(500));
        let value = during();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (value, load.join().unwrap())
    })
}

/// A butler and an app `<prefix>-…` (named after its image repository) with one image per
/// revision `(name, extra Dockerfile lines)`. Fields drop in order: the butler, then the cleanup.
struct Setup {
    butler: ButlerProcess,
    app: String,
    images: Vec<String>,
    _cleanup: Cleanup,
}

fn setup(prefix: &str, revisions: &[(&str, &str)]) -> Setup {
    let mut cleanup = Cleanup::new();
    let app = unique_name(prefix);
    let images = revisions
        .iter()
        .map(|(name, extra)| revision_image(&mut cleanup, &app, name, extra))
        .collect();
    clean_app(&mut cleanup, &app);
    Setup {
        butler: ButlerProcess::start(bin()),
        app,
        images,
        _cleanup: cleanup,
    }
}

#[test]
fn deploys_an_image_with_metadata_on_its_containers_and_in_the_history() {
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup("deploy-image", &[("one", "")]);
    let (app, image, repo) = (app.as_str(), &images[0], app.as_str());

    let report = deployed(butler, &[image, "--health-path", "/healthz"]);
    wait_for_answer(butler, app, "one");
    let revision = report["revision"].as_str().unwrap().to_owned();
    assert_eq!(report["app"], app);
    assert_eq!(report["port"], 3000, "the only exposed port: {report}");
    assert_eq!(report["source_id"], format!("image:{repo}"));
    assert_eq!(
        report["health_check"],
        "HTTP GET /healthz answering 2xx/3xx"
    );
    let container = format!("butler-{app}-{revision}-1");
    assert_eq!(report["containers"], serde_json::json!([container]));
    assert_eq!(app_containers(app), std::slice::from_ref(&container));

    // The metadata comes from the labels, as `butler proxy routes` shows it.
    let servers = servers(butler, app);
    assert_eq!(servers.len(), 1, "{servers:?}");
    let meta = &servers[0]["deployment"];
    assert_eq!(meta["revision"], revision.as_str(), "{meta}");
    assert_eq!(meta["source"], format!("image:{repo}"));
    assert_eq!(meta["app"], app);
    assert_eq!(meta["deployment"], report["deployment"].to_string());
    let text = butler
        .cli(bin(), &["proxy", "routes"])
        .expect_success("butler proxy routes");
    assert!(
        text.stdout
            .contains(&format!("{revision} from image:{repo}")),
        "{}",
        text.stdout
    );

    let history = deployments(butler, app);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["outcome"], "deployed");
    assert_eq!(history[0]["gate"], "serving");
    assert_eq!(history[0]["revision"], revision.as_str());
    assert_eq!(history[0]["image_id"], report["image_id"]);
    assert!(history[0]["duration_ms"].as_i64().unwrap() > 0);
    let text = butler
        .cli(bin(), &["deployments"])
        .expect_success("butler deployments");
    assert!(
        text.stdout.contains("REVISION") && text.stdout.contains(&revision),
        "{}",
        text.stdout
    );
}

#[test]
fn deploys_a_dockerfile_directory_built_through_the_engine() {
    let mut cleanup = Cleanup::new();
    let parent = tempfile::tempdir().unwrap();
    let app = unique_name("webdir");
    let dir = parent.path().join(&app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        butler_testkit::deploy::revision_dockerfile("fromdir", ""),
    )
    .unwrap();
    clean_app(&mut cleanup, &app);
    let butler = ButlerProcess::start(bin());

    let report = deployed(&butler, &[dir.to_str().unwrap()]);
    assert_eq!(report["app"], app.as_str(), "named after the directory");
    wait_for_answer(&butler, &app, "fromdir");
    let revision = report["revision"].as_str().unwrap();
    let image_id = report["image_id"].as_str().unwrap();
    assert!(image_id.trim_start_matches("sha256:").starts_with(revision));
    // The built image is tagged, so a rollback finds it after a prune of dangling images.
    let tagged = butler_testkit::docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("butler-deploy/{app}:{revision}"),
    ]);
    assert_eq!(tagged, image_id);
}

#[test]
fn deploys_a_git_repository_named_by_its_remote_at_a_ref() {
    let mut cleanup = Cleanup::new();
    let owner = unique_name("alice");
    let repo = GitRepo::new(&format!("https://github.com/{owner}/shop.git"));
    let first = repo.commit_revision("one");
    repo.tag("v1");
    let second = repo.commit_revision("two");
    let app = format!("{owner}-shop");
    clean_app(&mut cleanup, &app);
    let butler = ButlerProcess::start(bin());

    let report = deployed(&butler, &[&repo.path_str()]);
    assert_eq!(report["app"], app.as_str(), "{report}");
    assert_eq!(report["revision"], &second[..12]);
    assert_eq!(report["owner"], owner.as_str());
    assert_eq!(report["repo"], "shop");
    assert_eq!(report["source_id"], format!("git:github.com/{owner}/shop"));
    wait_for_answer(&butler, &app, "two");
    let meta = &servers(&butler, &app)[0]["deployment"];
    assert_eq!(meta["owner"], owner.as_str(), "{meta}");
    assert_eq!(meta["repo"], "shop");

    let report = deployed(&butler, &[&repo.path_str(), "--ref", "v1"]);
    assert_eq!(report["revision"], &first[..12]);
    assert_eq!(report["previous_revision"], &second[..12]);
    wait_for_answer(&butler, &app, "one");
    assert_eq!(app_containers(&app).len(), 1, "the old instance is gone");

    let (out, json) = deploy(&butler, &[&repo.path_str(), "--ref", "no-such-ref"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(json["outcome"], "refused");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("is not a branch, tag or commit"),
        "{json}"
    );
    wait_for_answer(&butler, &app, "one");
}

#[test]
fn two_owners_of_a_shop_deploy_side_by_side_and_a_derived_name_never_takes_one_over() {
    let mut cleanup = Cleanup::new();
    let repo_name = unique_name("shop");
    let alice = GitRepo::new(&format!("git@github.com:alice/{repo_name}.git"));
    alice.commit_revision("alice");
    let bob = GitRepo::new(&format!("https://github.com/bob/{repo_name}.git"));
    bob.commit_revision("bob");
    let alice_app = format!("alice-{repo_name}");
    let bob_app = format!("bob-{repo_name}");
    clean_app(&mut cleanup, &alice_app);
    clean_app(&mut cleanup, &bob_app);
    let butler = ButlerProcess::start(bin());

    assert_eq!(
        deployed(&butler, &[&alice.path_str()])["app"],
        alice_app.as_str()
    );
    assert_eq!(
        deployed(&butler, &[&bob.path_str()])["app"],
        bob_app.as_str()
    );
    wait_for_answer(&butler, &alice_app, "alice");
    wait_for_answer(&butler, &bob_app, "bob");

    // An image alice/<repo> would be named alice-<repo> too, but it is another source.
    let image = revision_image(&mut cleanup, &format!("alice/{repo_name}"), "intruder", "");
    let (out, json) = deploy(&butler, &[&image]);
    assert_eq!(out.code, 2, "{out:?}");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "already served by git:github.com/alice/{repo_name}"
        )) && error.contains("--name"),
        "{error}"
    );
    assert_eq!(app_containers(&alice_app).len(), 1, "nothing was changed");
    wait_for_answer(&butler, &alice_app, "alice");

    // Asked for by name, it replaces alice's deployment; bob's app is untouched.
    let report = deployed(&butler, &[&image, "--name", &alice_app]);
    assert_eq!(report["source_id"], format!("image:alice/{repo_name}"));
    wait_for_answer(&butler, &alice_app, "intruder");
    assert_eq!(app_containers(&alice_app).len(), 1, "{report}");
    wait_for_answer(&butler, &bob_app, "bob");
}

#[test]
fn a_second_revision_replaces_the_first_under_load_without_a_failed_request() {
    // The new revision takes about 300 ms to listen, like a real app.
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup("deploy-load", &[("v1", ""), ("v2", "ENV DELAY_MS=300")]);
    let (v1, v2) = (&images[0], &images[1]);
    deployed(butler, &[v1, "--replicas", "2"]);
    wait_for_answer(butler, app, "v1");

    let (report, load) = under_load(butler, app, || deployed(butler, &[v2, "--replicas", "2"]));
    eprintln!(
        "load during the deploy: sent {}, failed {}, retried {}, answers {:?}",
        load.sent,
        load.failed(),
        load.retried,
        load.answers
    );
    assert_eq!(report["replaced"].as_array().unwrap().len(), 2, "{report}");
    assert!(load.sent > 100, "the load ran: {load:?}");
    assert_eq!(
        load.failed(),
        0,
        "failed requests during the deploy: {load:?}"
    );
    let (first, last) = load.first_and_last();
    assert_eq!(first, Some("app=v1"), "{:?}", load.answers);
    assert_eq!(last, Some("app=v2"), "{:?}", load.answers);
    assert_eq!(app_containers(app).len(), 2);
}

#[test]
fn a_revision_that_never_becomes_healthy_leaves_the_old_one_serving() {
    // One that never listens, and one that crashes before it listens.
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup(
        "deploy-broken",
        &[
            ("good", ""),
            ("silent", "ENV DELAY_MS=600000"),
            (
                "crashing",
                "ENV DELAY_MS=5000 EXIT_AFTER_MS=100 EXIT_CODE=3",
            ),
        ],
    );
    let (good, silent, crashing) = (&images[0], &images[1], &images[2]);
    deployed(butler, &[good]);
    wait_for_answer(butler, app, "good");
    let serving = app_containers(app);

    let (out, load) = under_load(butler, app, || {
        butler.cli(bin(), &["deploy", silent, "--timeout", "5s"])
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("was not healthy within 5s (TCP connect)")
            && out.stderr.contains("keeps serving"),
        "{}",
        out.stderr
    );
    assert_eq!(load.failed(), 0, "{load:?}");
    assert_eq!(
        load.answers.keys().collect::<Vec<_>>(),
        ["app=good"],
        "only the old revision answered"
    );
    assert_eq!(app_containers(app), serving, "no leftover containers");

    let (out, report) = deploy(butler, &[crashing, "--timeout", "60s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(report["outcome"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("exited with code 3") || error.contains("crashed and was restarted"),
        "{error}"
    );
    let logs = report["logs"].as_str().unwrap();
    assert!(logs.contains("exiting with 3 after 100 ms"), "{logs}");
    assert_eq!(app_containers(app), serving, "no leftover containers");
    wait_for_answer(butler, app, "good");

    // One deploy of an app at a time: a second one while the first waits for health is refused.
    let mut first = std::process::Command::new(bin())
        .args(["deploy", silent, "--timeout", "20s", "--config"])
        .arg(&butler.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    butler_testkit::wait_until(
        "the first deploy started its instance",
        Duration::from_secs(30),
        || app_containers(app).len() > serving.len(),
    );
    let out = butler.cli(bin(), &["deploy", good]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("another deploy or rollback of app"),
        "{}",
        out.stderr
    );
    assert_eq!(first.wait().unwrap().code(), Some(1));
    assert_eq!(app_containers(app), serving, "no leftover containers");

    let history = deployments(butler, app);
    let outcomes: Vec<&str> = history
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "deployed"]);
    assert!(
        history[2]["detail"]
            .as_str()
            .unwrap()
            .contains("was not healthy"),
        "{history:?}"
    );
}

#[test]
fn the_images_healthcheck_decides_when_it_has_one() {
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup(
        "deploy-healthcheck",
        &[
            (
                "checked",
                "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD [\"/bin/testapp\", \"probe\", \"3000\"]",
            ),
            (
                "sick",
                "HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD [\"/bin/testapp\", \"probe\", \"3000\", \"/status/500\"]",
            ),
        ],
    );
    let report = deployed(butler, &[&images[0]]);
    assert_eq!(report["health_check"], "the image's HEALTHCHECK");
    wait_for_answer(butler, app, "checked");

    let (out, report) = deploy(butler, &[&images[1]]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("is unhealthy by its image's HEALTHCHECK")
            && error.contains("probe: HTTP/1.1 500"),
        "{error}"
    );
    assert_eq!(app_containers(app).len(), 1, "no leftover containers");
    wait_for_answer(butler, app, "checked");
}

#[test]
fn rollback_restores_the_previous_revision_and_then_the_one_asked_for() {
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup("deploy-rollback", &[("v1", ""), ("v2", "")]);
    let (v1, v2) = (&images[0], &images[1]);
    let first = deployed(butler, &[v1]);
    let second = deployed(butler, &[v2]);
    wait_for_answer(butler, app, "v2");

    let (out, report) = butler.cli_json(bin(), &["rollback", app]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(report["outcome"], "deployed");
    assert_eq!(report["revision"], first["revision"]);
    assert_eq!(report["replaced"].as_array().unwrap().len(), 1);
    wait_for_answer(butler, app, "v1");

    let to = second["revision"].as_str().unwrap();
    let (out, report) = butler.cli_json(bin(), &["rollback", app, "--to", &to[..8]]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(report["revision"], to);
    wait_for_answer(butler, app, "v2");
    let history = deployments(butler, app);
    assert_eq!(history.len(), 4);
    assert!(
        history[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("rollback to revision {to}")),
        "{history:?}"
    );

    let (out, json) = butler.cli_json(bin(), &["rollback", app, "--to", "ab"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        json["error"].as_str().unwrap().contains("too short"),
        "{json}"
    );

    // A config an operator pinned would keep a deploy from switching: refused, nothing changed.
    butler
        .cli(bin(), &["proxy", "rollback"])
        .expect_success("butler proxy rollback");
    let before = app_containers(app);
    let (out, json) = deploy(butler, &[v1]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains("pinned") && error.contains("butler proxy-update"),
        "{error}"
    );
    assert_eq!(app_containers(app), before);
    assert_eq!(deployments(butler, app).len(), 4, "nothing was recorded");
}

#[test]
fn three_replicas_are_three_upstream_servers() {
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup("deploy-replicas", &[("r", "")]);
    let image = &images[0];
    let report = deployed(butler, &[image, "--replicas", "3"]);
    let revision = report["revision"].as_str().unwrap();
    let want: Vec<String> = (1..=3)
        .map(|n| format!("butler-{app}-{revision}-{n}"))
        .collect();
    assert_eq!(app_containers(app), want);
    wait_for_answer(butler, app, "r");
    let servers = servers(butler, app);
    let mut names: Vec<&str> = servers
        .iter()
        .map(|s| s["container"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, want);
    // nginx balances over all three: each answers with its own hostname.
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = butler.get(&format!("{app}.localhost"), "/").unwrap();
        if let Some(host) = r.body.split_whitespace().find(|w| w.starts_with("host=")) {
            hosts.insert(host.to_owned());
        }
    }
    assert_eq!(hosts.len(), 3, "{hosts:?}");
}

#[test]
fn a_butler_scoped_to_a_label_puts_it_on_what_it_deploys() {
    let mut cleanup = Cleanup::new();
    let app = unique_name("deploy-scoped");
    let image = revision_image(&mut cleanup, &app, "scoped", "");
    clean_app(&mut cleanup, &app);
    let scope = format!("butler.group={app}");
    let butler =
        ButlerProcess::start_with(bin(), "", &format!("[docker]\nonly_label = \"{scope}\"\n"));
    let report = deployed(&butler, &[&image]);
    wait_for_answer(&butler, &app, "scoped");
    let container = report["containers"][0].as_str().unwrap();
    let label = butler_testkit::docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"butler.group\"}}",
        container,
    ]);
    assert_eq!(label, app);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_changes_nothing() {
    let Setup {
        butler,
        app,
        images,
        ..
    } = &setup("deploy-bad", &[("x", "")]);
    let image = &images[0];
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = empty_dir.path().to_str().unwrap().to_owned();
    let no_expose = ensure_image("app");

    let cases: &[(&[&str], &str)] = &[
        (&["deploy", "/nonexistent/butler-source"], "does not exist"),
        (&["deploy", &empty], "no Dockerfile"),
        (&["deploy", "Not An Image"], "neither an existing path"),
        (&["deploy", "butler-no-such-image:1"], "could not be pulled"),
        (&["deploy", image, "--env", "NOEQUALS"], "KEY=VALUE"),
        (&["deploy", image, "--env", "1X=y"], "not a variable name"),
        (&["deploy", image, "--replicas", "0"], "0 is not in 1..=100"),
        (&["deploy", image, "--port", "0"], "--port"),
        (&["deploy", image, "--ref", "main"], "git sources only"),
        (&["deploy", image, "--name", "Bad_Name"], "--name"),
        (
            &["deploy", image, "--label", "butler.port=80"],
            "set by the deploy",
        ),
        (&["deploy", image, "--health-path", "healthz"], "URL path"),
        (&["deploy", image, "--timeout", "soon"], "not a duration"),
        (&["deploy", &no_expose, "--name", app], "pass --port"),
        (&["rollback", "butler-no-such-app"], "no deployments of app"),
    ];
    for (args, want) in cases {
        let out = butler.cli(bin(), args);
        assert_eq!(out.code, 2, "butler {args:?}: {out:?}");
        assert!(
            out.stderr.contains(want),
            "butler {args:?}: {want:?} not in {}",
            out.stderr
        );
    }
    // CI reads the refusal as JSON.
    let (out, json) = butler.cli_json(bin(), &["deploy", "/nonexistent/butler-source"]);
    assert_eq!(out.code, 2);
    assert_eq!(json["outcome"], "refused");
    assert_eq!(json["usage"], true);

    // No proxy: a check that is not the user's input fails with 1, and nothing starts.
    let config = std::fs::read_to_string(&butler.config_path).unwrap();
    let no_proxy = config.replace(
        &format!("container_name = \"{}\"", butler.nginx),
        "container_name = \"butler-nginx-that-is-not-there\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let no_proxy_path = dir.path().join("butler.toml");
    std::fs::write(&no_proxy_path, no_proxy).unwrap();
    let out: CmdOutput = std::process::Command::new(bin())
        .args(["deploy", image, "--config"])
        .arg(&no_proxy_path)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the proxy is not serving"),
        "{}",
        out.stderr
    );

    assert!(app_containers(app).is_empty(), "nothing was started");
    assert!(deployments(butler, app).is_empty(), "nothing was recorded");
}
