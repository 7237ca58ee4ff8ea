//! The locally built test images (`scripts/images/build.sh`: systemd, nginx, the test app), the
//! nginx image without a shell, and images built from a Dockerfile alone.

use std::sync::OnceLock;
use std::time::Instant;

use crate::{CmdOutput, docker, docker_ok, docker_with_stdin, run_build_script, unique_name};

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
/// must then validate, swap and reload with one Docker call per step.
pub fn nginx_image_without_shell() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        nginx_image_without(
            "noshell",
            &["/usr/bin/sh", "/usr/bin/dash", "/bin/sh", "/bin/dash"],
        )
    })
    .clone()
}

/// The nginx image the butler under test runs: the test image, with nginx's Lua module (the data
/// path); with `BUTLER_TEST_NGINX=reload`, the same without it, as the official nginx image is,
/// so that the same tests prove the reload path (scripts/test runs the proxy tests both ways).
pub fn proxy_image() -> String {
    match std::env::var("BUTLER_TEST_NGINX").as_deref() {
        Ok("reload") => {
            let tag = nginx_image_without_lua();
            eprintln!("testkit: BUTLER_TEST_NGINX=reload: nginx image {tag} (no Lua module)");
            tag
        }
        Ok("") | Ok("data") | Err(_) => ensure_image("nginx"),
        Ok(other) => panic!("BUTLER_TEST_NGINX={other:?}: use \"reload\" or \"data\""),
    }
}

/// The nginx test image without the Lua module, like the official nginx image: the butler then
/// renders a server block per app and applies every change with a reload.
pub fn nginx_image_without_lua() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        nginx_image_without(
            "nolua",
            &[
                "/usr/lib/nginx/modules/ngx_http_lua_module.so",
                "/etc/nginx/modules-enabled/50-mod-http-lua.conf",
            ],
        )
    })
    .clone()
}

/// `ensure_image("nginx")` with `paths` deleted, committed as `devops-butler-test/nginx-<what>`
/// and cached by the base image's tag.
fn nginx_image_without(what: &str, paths: &[&str]) -> String {
    let base = ensure_image("nginx");
    let version = base.rsplit(':').next().unwrap_or("latest");
    let tag = format!("devops-butler-test/nginx-{what}:{version}");
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let scratch = unique_name(what);
    let mut args = vec![
        "run",
        "--name",
        &scratch,
        "--entrypoint",
        "/usr/bin/rm",
        &base,
        "-f",
    ];
    args.extend_from_slice(paths);
    docker_ok(&args);
    let committed = docker(&["commit", "--change", "ENTRYPOINT []", &scratch, &tag]);
    let _ = docker(&["rm", "-f", &scratch]);
    assert!(
        committed.status.success(),
        "docker commit {tag}: {}",
        String::from_utf8_lossy(&committed.stderr)
    );
    tag
}

/// Builds image `tag` from `dockerfile` alone (no context: `FROM` a local image, `ENV`, `EXPOSE`,
/// ...); works offline when the base is local. Register the tag with `Cleanup::add_image`.
pub fn build_image(tag: &str, dockerfile: &str) {
    let out: CmdOutput =
        docker_with_stdin(&["build", "-q", "-t", tag, "-"], dockerfile.as_bytes()).into();
    out.expect_success(&format!("docker build -t {tag}"));
}
