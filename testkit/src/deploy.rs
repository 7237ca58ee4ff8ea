//! Deploy helpers for tests/deploy.rs and benches/deploy.rs: revision images built FROM the test
//! app (offline: the base is local), local git repositories whose `origin` names an owner and a
//! repository (never fetched), and what a deploy left on the engine.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Cleanup, build_image, docker, ensure_image};

/// Label every container `butler deploy` starts carries, with the app's name.
const DEPLOY_APP_LABEL: &str = "butler.deploy.app";
/// Repository of the images a deploy builds from a directory or a git repository.
const BUILT_IMAGE_REPO: &str = "butler-deploy";

/// A Dockerfile for a revision of the test app: it answers `app=<name>`, exposes 3000, and
/// `extra` adds lines (`ENV DELAY_MS=300`, `HEALTHCHECK ...`).
pub fn revision_dockerfile(name: &str, extra: &str) -> String {
    format!(
        "FROM {}\nENV APP_NAME={name}\nEXPOSE 3000\n{extra}\n",
        ensure_image("app")
    )
}

/// Builds `<repo>:<name>` from [`revision_dockerfile`]; removed by `cleanup`.
pub fn revision_image(cleanup: &mut Cleanup, repo: &str, name: &str, extra: &str) -> String {
    let tag = format!("{repo}:{name}");
    cleanup.add_image(&tag);
    build_image(&tag, &revision_dockerfile(name, extra));
    tag
}

/// Makes `cleanup` remove what a deploy of `app` leaves: its containers and built images.
pub fn clean_app(cleanup: &mut Cleanup, app: &str) {
    cleanup.add_labelled(&format!("{DEPLOY_APP_LABEL}={app}"));
    cleanup.add_image_repo(&format!("{BUILT_IMAGE_REPO}/{app}"));
}

/// Names of every container (running or not) a deploy started for `app`, sorted.
pub fn app_containers(app: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={DEPLOY_APP_LABEL}={app}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// A git repository in a temp dir whose `origin` is `remote` (never fetched: the local path is
/// what gets deployed, the remote only names it).
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    pub fn new(remote: &str) -> GitRepo {
        let repo = GitRepo {
            dir: tempfile::tempdir().expect("temp dir for a git repository"),
        };
        repo.git(&["init", "--quiet", "--initial-branch", "main"]);
        repo.git(&["config", "user.email", "tests@devops-butler.invalid"]);
        repo.git(&["config", "user.name", "butler tests"]);
        repo.git(&["remote", "add", "origin", remote]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// Commits a Dockerfile for a revision that answers `app=<name>`; returns the commit's hash.
    pub fn commit_revision(&self, name: &str) -> String {
        std::fs::write(
            self.path().join("Dockerfile"),
            revision_dockerfile(name, ""),
        )
        .unwrap();
        self.git(&["add", "Dockerfile"]);
        self.git(&["commit", "--quiet", "-m", &format!("revision {name}")]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn tag(&self, tag: &str) {
        self.git(&["tag", tag]);
    }

    /// `git ARGS` in the repository, which must succeed; its stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run git (is it installed?)");
        assert!(
            out.status.success(),
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
