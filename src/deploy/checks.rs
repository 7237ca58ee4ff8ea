//! Pre-deployment checks that are decisions over plain data: which port the app serves on, and
//! whether the engine's disk has room. The deploy runs them (with the engine and proxy checks)
//! before it changes anything.

use std::path::Path;

use crate::labels::{
    COMMON_WEB_PORTS, LABEL_DEPLOY_PREFIX, LABEL_ENABLE, LABEL_NAME, LABEL_PORT, LABEL_ROLE,
};
use crate::proxy::Plan;
use crate::proxy::sanitize::quote;

/// Labels a user may not set with `--label`: the deploy sets them (`--name`, `--port`).
const RESERVED_LABELS: [&str; 4] = [LABEL_NAME, LABEL_PORT, LABEL_ENABLE, LABEL_ROLE];

/// Free space the engine's disk keeps besides what the new image needs: container layers, logs.
pub const DISK_MARGIN: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("cannot tell which port the app serves on: the image exposes none; pass --port PORT")]
    NoPort,
    #[error(
        "cannot tell which port the app serves on: the image exposes {ports:?} and none is a common web port; pass --port PORT"
    )]
    AmbiguousPort { ports: Vec<u16> },
    #[error(
        "not enough disk space for the image on {path}: {free} free, {needed} needed; free some space (`docker image prune`) and deploy again"
    )]
    Disk {
        path: String,
        free: String,
        needed: String,
    },
    #[error(
        "app {app} is already served by {others}; this deploy is of {ours}: pass --name NAME to deploy under another name, or --name {app} to replace it"
    )]
    NameClash {
        app: String,
        others: String,
        ours: String,
    },
    #[error(
        "--label {key} is set by the deploy itself (use --name, --port, or leave it out); labels starting with {LABEL_DEPLOY_PREFIX} are reserved too"
    )]
    ReservedLabel { key: String },
}

/// What else serves `app` now, as the routes show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupants {
    /// Deployments of other sources (`butler.deploy.source` values).
    pub other_sources: Vec<String>,
    /// Containers that `butler deploy` did not start (`docker run` with `butler.name=<app>`, ...).
    pub plain_containers: Vec<String>,
}

/// Who serves `app` besides deployments of `source` (a [`SourceId::label`]).
///
/// [`SourceId::label`]: crate::deploy::naming::SourceId::label
pub fn occupants(plan: &Plan, app: &str, source: &str) -> Occupants {
    let mut found = Occupants::default();
    for server in plan
        .routes
        .iter()
        .filter(|r| r.app == app)
        .flat_map(|r| &r.servers)
    {
        match &server.deployment {
            Some(d) if d.source == source => {}
            Some(d) => found.other_sources.push(d.source.clone()),
            None => found.plain_containers.push(server.container_name.clone()),
        }
    }
    found.other_sources.sort();
    found.other_sources.dedup();
    found
}

/// A name derived from the source must not take over an app someone else runs; an explicit
/// `--name` may (the other source's deployments are then replaced; plain containers keep serving).
pub fn check_name(
    occupants: &Occupants,
    app: &str,
    source: &str,
    explicit: bool,
) -> Result<(), CheckError> {
    if explicit || (occupants.other_sources.is_empty() && occupants.plain_containers.is_empty()) {
        return Ok(());
    }
    let mut others: Vec<String> = occupants.other_sources.clone();
    others.extend(
        occupants
            .plain_containers
            .iter()
            .map(|c| format!("container {c}")),
    );
    Err(CheckError::NameClash {
        app: app.to_owned(),
        others: others.join(", "),
        ours: source.to_owned(),
    })
}

/// `--label` keys the deploy owns are refused.
pub fn check_user_labels<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<(), CheckError> {
    for key in keys {
        if RESERVED_LABELS.contains(&key.as_str()) || key.starts_with(LABEL_DEPLOY_PREFIX) {
            return Err(CheckError::ReservedLabel { key: quote(key) });
        }
    }
    Ok(())
}

/// The port and why: `--port`, the only exposed port, or the first common web port among several.
pub fn choose_port(explicit: Option<u16>, exposed: &[u16]) -> Result<(u16, String), CheckError> {
    if let Some(port) = explicit {
        return Ok((port, "--port".to_owned()));
    }
    match exposed {
        [] => Err(CheckError::NoPort),
        [only] => Ok((*only, "the image's only exposed port".to_owned())),
        several => COMMON_WEB_PORTS
            .iter()
            .find(|p| several.contains(p))
            .map(|p| (*p, format!("common web port among the exposed {several:?}")))
            .ok_or_else(|| CheckError::AmbiguousPort {
                ports: several.to_vec(),
            }),
    }
}

/// Bytes the deploy needs free: twice the build context for a build (the context is copied into
/// the engine, then into layers), plus a margin for the containers.
pub fn disk_needed(context_bytes: Option<u64>) -> u64 {
    context_bytes.unwrap_or(0).saturating_mul(2) + DISK_MARGIN
}

pub fn check_disk(path: &str, free: u64, needed: u64) -> Result<(), CheckError> {
    if free >= needed {
        return Ok(());
    }
    Err(CheckError::Disk {
        path: path.to_owned(),
        free: human_bytes(free),
        needed: human_bytes(needed),
    })
}

/// Free bytes (for unprivileged users) on the filesystem of `path`; `None` when it cannot be seen
/// from here (a remote engine, or a butler in a container without the engine's disk).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

pub use crate::health::classify::human_bytes;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::labels::DeployLabels;
    use crate::proxy::{PortReason, Route, UpstreamServer};

    fn server(name: &str, source: Option<&str>) -> UpstreamServer {
        UpstreamServer {
            container_id: name.into(),
            container_name: name.into(),
            ip: "10.0.0.2".parse().unwrap(),
            port: 80,
            port_reason: PortReason::OnlyExposed,
            deployment: source.map(|s| DeployLabels {
                deployment: "1".into(),
                app: "shop".into(),
                revision: "r".into(),
                source: s.into(),
                owner: None,
                repo: None,
                instance: None,
            }),
        }
    }

    #[test]
    fn a_derived_name_never_takes_over_another_sources_app() {
        let plan = Plan {
            routes: vec![
                Route {
                    app: "shop".into(),
                    hosts: vec!["shop.localhost".into()],
                    servers: vec![
                        server("a", Some("git:github.com/alice/shop")),
                        server("b", Some("git:github.com/bob/shop")),
                        server("manual", None),
                    ],
                    down: None,
                },
                Route {
                    app: "blog".into(),
                    hosts: vec!["blog.localhost".into()],
                    servers: vec![server("c", Some("image:blog"))],
                    down: None,
                },
            ],
            problems: Vec::new(),
        };
        let alice = "git:github.com/alice/shop";
        let found = occupants(&plan, "shop", alice);
        assert_eq!(found.other_sources, ["git:github.com/bob/shop"]);
        assert_eq!(found.plain_containers, ["manual"]);
        let err = check_name(&found, "shop", alice, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("git:github.com/bob/shop, container manual") && err.contains("--name"),
            "{err}"
        );
        assert!(check_name(&found, "shop", alice, true).is_ok());
        // The same source redeploying, and a new app, are no clash.
        let same = occupants(&plan, "blog", "image:blog");
        assert_eq!(same, Occupants::default());
        assert!(check_name(&same, "blog", "image:blog", false).is_ok());
        assert!(check_name(&occupants(&plan, "new", alice), "new", alice, false).is_ok());
    }

    #[test]
    fn the_deploys_own_labels_are_reserved() {
        let ok: BTreeMap<String, String> = [
            ("team".to_string(), String::new()),
            ("butler.host".into(), String::new()),
        ]
        .into();
        assert!(check_user_labels(ok.keys()).is_ok());
        for key in ["butler.name", "butler.port", "butler.deploy.revision"] {
            let keys = [key.to_string()];
            assert!(check_user_labels(keys.iter()).is_err(), "{key}");
        }
    }

    #[test]
    fn the_port_comes_from_the_flag_or_the_image() {
        let cases: &[(Option<u16>, &[u16], Option<u16>)] = &[
            (Some(9000), &[80], Some(9000)),
            (Some(9000), &[], Some(9000)),
            (None, &[3000], Some(3000)),
            (None, &[443, 8080], Some(8080)),
            (None, &[80, 8080], Some(80)),
            (None, &[], None),
            (None, &[443, 9999], None),
        ];
        for (explicit, exposed, want) in cases {
            let got = match choose_port(*explicit, exposed) {
                Ok((port, _)) => Some(port),
                Err(e) => {
                    assert!(e.to_string().contains("--port"), "{e}");
                    None
                }
            };
            assert_eq!(got, *want, "{explicit:?} {exposed:?}");
        }
    }

    #[test]
    fn disk_space_is_checked_against_the_context_and_a_margin() {
        assert_eq!(disk_needed(None), DISK_MARGIN);
        assert_eq!(disk_needed(Some(10)), DISK_MARGIN + 20);
        assert!(check_disk("/var/lib/docker", DISK_MARGIN, disk_needed(None)).is_ok());
        let err = check_disk("/var/lib/docker", 1024, disk_needed(Some(1 << 30))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("1.0 KiB free") && text.contains("2.2 GiB needed"),
            "{text}"
        );
        assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(Path::new("/nonexistent/x")), None);
        assert_eq!(human_bytes(512), "512 B");
    }
}
