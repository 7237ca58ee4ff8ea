//! What devops-butler's integration tests and benchmarks share (a dev-dependency of the root
//! crate): real Docker containers (the locally built test app and nginx images), the systemd test
//! bed, and small HTTP/WebSocket clients. Everything here shells out to the `docker` CLI on purpose:
//! the tests must not share code with the bollard client they are testing. Every resource made here
//! is named by `unique_name`, labelled `devops-butler.test`, and removed on drop, also when a test
//! panics.
//!
//! Most tests need the items re-exported here; the rest are per area (`dashboard`, `deploy`,
//! `packages`, ...). One path per item: the private modules below only organise this file's
//! exports.

pub mod bench;
pub mod browser;
pub mod dashboard;
pub mod deploy;
pub mod engine_api;
pub mod load;
pub mod netns;
pub mod packages;
pub mod private_engine;
pub mod stats;
pub mod traefik;
pub mod wrk;
pub mod ws_codec;

mod app;
mod butler;
mod cleanup;
mod docker;
mod http;
mod images;
mod testbed;
mod unique;
mod wait;
mod websocket;

pub use app::{AppBuilder, AppContainer};
pub use butler::{ButlerProcess, ConfigHistory, ConfigVersionRow};
pub use cleanup::Cleanup;
pub use docker::{
    BUTLER_NETWORK, CmdOutput, container_ip, docker, docker_ok, docker_with_stdin,
    ensure_butler_network,
};
pub use http::{HttpResponse, http_get, http_request, http_request_with_body};
pub use images::{
    build_image, ensure_image, nginx_image_without_lua, nginx_image_without_shell, proxy_image,
};
pub use testbed::Testbed;
pub use unique::{TEST_LABEL, free_port, unique_name};
pub use wait::{wait_until, wait_until_or};
pub use websocket::websocket_echo;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root (where the butler's Cargo.toml is, one level above this crate's),
/// whichever directory the tests run from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
        .to_path_buf()
}

/// `bash SCRIPT ARGS` (SCRIPT relative to the repository) with `env` added, its progress on the
/// test's stderr; returns its stdout, trimmed. Panics naming the script when it fails.
pub(crate) fn run_build_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
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
