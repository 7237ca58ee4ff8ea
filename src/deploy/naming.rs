//! Naming, pure: what a deploy source is called (its identity and app name) and what its containers
//! are called. The labels that carry that metadata (`crate::labels::DeployLabels`) are written on
//! every container a deploy starts and parsed back by the planner, `butler proxy routes` and the
//! dashboard; nothing is ever parsed back from a container's name.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::proxy::sanitize::{quote, sanitize_app_name};

/// Registries whose name is left out of an image's identity (`docker.io/alice/shop` is `alice/shop`).
const DEFAULT_REGISTRIES: [&str; 2] = ["docker.io", "index.docker.io"];
/// Characters of an image id or commit kept in a revision: Docker's short id length.
pub const REVISION_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error(
        "{what} names no repository to build an app name from; pass --name NAME (letters, digits and '-')"
    )]
    NoName { what: String },
    #[error(
        "{value} is not a git remote URL (https://HOST/OWNER/REPO.git or git@HOST:OWNER/REPO.git)"
    )]
    BadRemote { value: String },
    #[error(
        "{value} is not an image reference ([REGISTRY/]NAME[:TAG][@DIGEST], lowercase; e.g. alice/shop:1.2)"
    )]
    BadImage { value: String },
    #[error("--name {value} gives no app name: use letters, digits and '-'")]
    BadName { value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An image already on the engine.
    Image,
    /// A directory with a Dockerfile, built through the engine.
    Dockerfile,
    /// A git repository (URL or local path), cloned and built.
    Git,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Image => "image",
            SourceKind::Dockerfile => "dir",
            SourceKind::Git => "git",
        }
    }
}

/// Where a deployment comes from, as far as naming cares. Two deployments are of the same source
/// when their [`SourceId::label`]s are equal, whatever form the user typed it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceId {
    pub kind: SourceKind,
    /// Normalized: `github.com/alice/shop` for an https or ssh remote alike, `alice/shop` for the
    /// image `docker.io/alice/shop:1`, the absolute path for a directory or a repository without a
    /// remote.
    pub identity: String,
    /// `alice` in `github.com/alice/shop`; every path part before the repository (`group/sub`).
    pub owner: Option<String>,
    /// The repository (or directory, or image) name; empty when there is none (an image id).
    pub repo: String,
}

impl SourceId {
    /// A git remote: `https://github.com/alice/shop.git`, `git@github.com:alice/shop.git`,
    /// `ssh://git@host:2222/alice/shop`, `file:///srv/shop.git`.
    pub fn git_remote(remote: &str) -> Result<SourceId, NamingError> {
        let bad = || NamingError::BadRemote {
            value: quote(remote),
        };
        let trimmed = remote.trim();
        if let Some(path) = trimmed.strip_prefix("file://") {
            return Ok(Self::git_local(Path::new(path)));
        }
        let (host, path) = if let Some((scheme, rest)) = trimmed.split_once("://") {
            if !matches!(scheme, "https" | "http" | "ssh" | "git" | "git+ssh") {
                return Err(bad());
            }
            rest.split_once('/').ok_or_else(bad)?
        } else {
            // scp-like: [user@]host:path, with no '/' before the ':'.
            let (host, path) = trimmed.split_once(':').ok_or_else(bad)?;
            if host.contains('/') {
                return Err(bad());
            }
            (host, path)
        };
        let host = host.rsplit('@').next().unwrap_or(host);
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        let path = path.trim_matches('/');
        let path = path
            .strip_suffix(".git")
            .unwrap_or(path)
            .to_ascii_lowercase();
        let parts: Vec<&str> = path.split('/').collect();
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
            || !parts.iter().all(|p| plain(p))
        {
            return Err(bad());
        }
        let (repo, owners) = parts.split_last().ok_or_else(bad)?;
        Ok(SourceId {
            kind: SourceKind::Git,
            identity: format!("{host}/{path}"),
            owner: (!owners.is_empty()).then(|| owners.join("/")),
            repo: (*repo).to_owned(),
        })
    }

    /// A git repository known only by its path (no remote): named after its directory.
    pub fn git_local(path: &Path) -> SourceId {
        SourceId {
            kind: SourceKind::Git,
            ..Self::dir(path)
        }
    }

    /// A directory with a Dockerfile: named after the directory.
    pub fn dir(path: &Path) -> SourceId {
        let path = path.to_string_lossy().into_owned();
        let trimmed = path.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
        let repo = trimmed.rsplit('/').next().unwrap_or_default().to_owned();
        SourceId {
            kind: SourceKind::Dockerfile,
            identity: path,
            owner: None,
            repo,
        }
    }

    /// An image reference, `[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]`, or an image id (`sha256:…`),
    /// which has no name.
    pub fn image(reference: &str) -> Result<SourceId, NamingError> {
        let bad = || NamingError::BadImage {
            value: quote(reference),
        };
        if let Some(hex) = reference.strip_prefix("sha256:") {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(SourceId {
                    kind: SourceKind::Image,
                    identity: reference.to_owned(),
                    owner: None,
                    repo: String::new(),
                });
            }
            return Err(bad());
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        if let Some(digest) = digest {
            let (algo, hex) = digest.split_once(':').ok_or_else(bad)?;
            if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        // A tag follows the last ':' of the last part (a registry port is in the first).
        let last = parts.pop().ok_or_else(bad)?;
        let (last, tag) = match last.split_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (last, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad());
            }
        }
        parts.push(last);
        let registry = match parts.first() {
            Some(first)
                if parts.len() > 1
                    && (first.contains('.') || first.contains(':') || *first == "localhost") =>
            {
                Some(parts.remove(0))
            }
            _ => None,
        };
        if let Some(registry) = registry
            && !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(bad());
        }
        let component = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if parts.is_empty() || !parts.iter().all(|p| component(p)) {
            return Err(bad());
        }
        let registry = registry.filter(|r| !DEFAULT_REGISTRIES.contains(r));
        if registry.is_none() && parts.len() > 1 && parts[0] == "library" {
            parts.remove(0);
        }
        let path = parts.join("/");
        let (repo, owners) = parts.split_last().ok_or_else(bad)?;
        Ok(SourceId {
            kind: SourceKind::Image,
            identity: match registry {
                Some(registry) => format!("{registry}/{path}"),
                None => path,
            },
            owner: (!owners.is_empty()).then(|| owners.join("/")),
            repo: (*repo).to_owned(),
        })
    }

    /// The value of `butler.deploy.source`: `git:github.com/alice/shop`, `image:alice/shop`,
    /// `dir:/srv/shop`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.identity)
    }

    /// `owner-repo` (`alice-shop`), or the repository alone, as a valid app name. Two owners of a
    /// repository of the same name get two names.
    pub fn app_name(&self) -> Result<String, NamingError> {
        let raw = match &self.owner {
            Some(owner) => format!("{}-{}", owner.replace('/', "-"), self.repo),
            None => self.repo.clone(),
        };
        sanitize_app_name(&raw).ok_or_else(|| NamingError::NoName { what: self.label() })
    }
}

/// The app name the user asked for with `--name`, which must already be one (no silent rewriting
/// of a name the user typed).
pub fn explicit_app_name(name: &str) -> Result<String, NamingError> {
    match sanitize_app_name(name) {
        Some(app) if app == name && app != "000-default" => Ok(app),
        _ => Err(NamingError::BadName { value: quote(name) }),
    }
}

/// The first [`REVISION_LEN`] hex digits of an image id (`sha256:…`) or a commit.
pub fn revision_of(id: &str) -> String {
    let hex = id.split_once(':').map_or(id, |(_, hex)| hex);
    hex.chars().take(REVISION_LEN).collect()
}

/// `butler-<app>-<revision>-<n>`.
pub fn container_name(app: &str, revision: &str, instance: u32) -> String {
    format!("butler-{app}-{revision}-{instance}")
}

/// Instance numbers for `count` new containers of `app` at `revision`, skipping the numbers that
/// containers of those names still use (a redeploy of the revision that is serving).
pub fn free_instances(app: &str, revision: &str, count: u32, taken: &[String]) -> Vec<u32> {
    (1..)
        .filter(|n| !taken.contains(&container_name(app, revision, *n)))
        .take(count as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_remotes_name_owner_and_repo() {
        let cases: &[(&str, &str, Option<&str>, &str, &str)] = &[
            // remote, identity, owner, repo, app
            (
                "https://github.com/alice/shop.git",
                "github.com/alice/shop",
                Some("alice"),
                "shop",
                "alice-shop",
            ),
            (
                "git@github.com:alice/shop.git",
                "github.com/alice/shop",
                Some("alice"),
                "shop",
                "alice-shop",
            ),
            (
                "https://github.com/bob/shop",
                "github.com/bob/shop",
                Some("bob"),
                "shop",
                "bob-shop",
            ),
            (
                "ssh://git@GitHub.com:2222/Alice/Shop.git/",
                "github.com/alice/shop",
                Some("alice"),
                "shop",
                "alice-shop",
            ),
            (
                "https://user@gitlab.example.com/group/sub/my_repo.git",
                "gitlab.example.com/group/sub/my_repo",
                Some("group/sub"),
                "my_repo",
                "group-sub-my-repo",
            ),
            ("git://host/solo.git", "host/solo", None, "solo", "solo"),
        ];
        for (remote, identity, owner, repo, app) in cases {
            let id = SourceId::git_remote(remote).unwrap_or_else(|e| panic!("{remote}: {e}"));
            assert_eq!(id.kind, SourceKind::Git, "{remote}");
            assert_eq!(id.identity, *identity, "{remote}");
            assert_eq!(id.owner.as_deref(), *owner, "{remote}");
            assert_eq!(id.repo, *repo, "{remote}");
            assert_eq!(id.app_name().unwrap(), *app, "{remote}");
        }
    }

    #[test]
    fn https_and_ssh_forms_of_one_repository_are_one_source() {
        let https = SourceId::git_remote("https://github.com/alice/shop.git").unwrap();
        let ssh = SourceId::git_remote("git@github.com:alice/shop.git").unwrap();
        assert_eq!(https.label(), ssh.label());
        assert_eq!(https.label(), "git:github.com/alice/shop");
        let bob = SourceId::git_remote("git@github.com:bob/shop.git").unwrap();
        assert_ne!(https.label(), bob.label());
        assert_ne!(https.app_name().unwrap(), bob.app_name().unwrap());
    }

    #[test]
    fn bad_remotes_are_refused() {
        for bad in [
            "",
            "shop",
            "ftp://host/a/b.git",
            "https://github.com",
            "https://github.com/",
            "https://github.com/alice/../shop",
            "https://github.com/alice/sh op",
            "git@:alice/shop",
            "/local/path",
            "https://exa mple.com/a/b",
        ] {
            assert!(SourceId::git_remote(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SourceId::git_remote("file:///srv/git/shop.git").unwrap(),
            SourceId {
                kind: SourceKind::Git,
                identity: "/srv/git/shop.git".into(),
                owner: None,
                repo: "shop".into(),
            }
        );
    }

    #[test]
    fn image_references_name_the_app() {
        let cases: &[(&str, &str, &str)] = &[
            // reference, identity, app
            ("shop", "shop", "shop"),
            ("shop:1.2", "shop", "shop"),
            ("alice/shop:v2", "alice/shop", "alice-shop"),
            ("docker.io/alice/shop", "alice/shop", "alice-shop"),
            ("docker.io/library/nginx:1.25", "nginx", "nginx"),
            ("library/nginx", "nginx", "nginx"),
            (
                "registry.example.com:5000/team/web:3",
                "registry.example.com:5000/team/web",
                "team-web",
            ),
            ("localhost/web", "localhost/web", "web"),
            (
                "ghcr.io/bob/shop@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ghcr.io/bob/shop",
                "bob-shop",
            ),
            (
                "devops-butler-test/app:4d2c1f",
                "devops-butler-test/app",
                "devops-butler-test-app",
            ),
        ];
        for (reference, identity, app) in cases {
            let id = SourceId::image(reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
            assert_eq!(id.identity, *identity, "{reference}");
            assert_eq!(id.app_name().unwrap(), *app, "{reference}");
        }
        // Tags do not change the source: v1 and v2 of an image are revisions of one app.
        assert_eq!(
            SourceId::image("alice/shop:v1").unwrap().label(),
            SourceId::image("alice/shop:v2").unwrap().label()
        );
    }

    #[test]
    fn bad_image_references_are_refused() {
        for bad in [
            "",
            "Shop",
            "shop:",
            "shop:-x",
            "a//b",
            "/shop",
            "shop/",
            "sh op",
            "shop@sha256:xyz",
            "shop;rm",
            "sha256:abc",
        ] {
            assert!(SourceId::image(bad).is_err(), "{bad:?}");
        }
        let id = SourceId::image(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert!(matches!(id.app_name(), Err(NamingError::NoName { .. })));
    }

    #[test]
    fn directories_are_named_after_themselves() {
        let id = SourceId::dir(Path::new("/srv/apps/My Shop/"));
        assert_eq!(id.label(), "dir:/srv/apps/My Shop/");
        assert_eq!(id.app_name().unwrap(), "my-shop");
        let git = SourceId::git_local(Path::new("/srv/git/shop.git"));
        assert_eq!(git.label(), "git:/srv/git/shop.git");
        assert_eq!(git.app_name().unwrap(), "shop");
        assert!(SourceId::dir(Path::new("/")).app_name().is_err());
    }

    #[test]
    fn an_explicit_name_must_already_be_an_app_name() {
        assert_eq!(explicit_app_name("shop-2").unwrap(), "shop-2");
        for bad in ["Shop", "shop_2", "-shop", "", "000-default", "a.b"] {
            assert!(explicit_app_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revisions_and_container_names() {
        assert_eq!(
            revision_of("sha256:4d2c1f0e9b8a7c6d5e4f3a2b1c0d9e8f"),
            "4d2c1f0e9b8a"
        );
        assert_eq!(revision_of("0123456789abcdef"), "0123456789ab");
        assert_eq!(
            container_name("alice-shop", "0123456789ab", 2),
            "butler-alice-shop-0123456789ab-2"
        );
        let taken = vec![
            container_name("a", "r", 1),
            container_name("a", "r", 3),
            container_name("b", "r", 2),
        ];
        assert_eq!(free_instances("a", "r", 3, &taken), [2, 4, 5]);
        assert_eq!(free_instances("a", "s", 2, &taken), [1, 2]);
    }
}
