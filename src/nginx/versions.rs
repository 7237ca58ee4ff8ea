//! Config versions inside the container: `versions/<hash>/` trees uploaded as tar archives, the
//! `live` link swapped to one, validated and reloaded in one exec when the image allows (step by
//! step through the archive API when it does not), read back, and pruned.

use std::sync::atomic::Ordering;

use super::*;

/// Validate, swap and reload in one exec: each Docker round trip costs tens of milliseconds, and
/// an app's route should be live before the app is. `mv -T` renames the new link over `live`
/// atomically. Exit codes: 11 refused by `nginx -t`, 12 cannot take this path (nothing changed).
const ACTIVATE_SCRIPT: &str = r#"
read -r comm < /proc/1/comm && [ "$comm" = nginx ] || exit 12
out=$(nginx -t -q -c "$1/versions/$2/nginx.conf" 2>&1) || { printf '%s' "$out"; exit 11; }
ln -sfn "versions/$2" "$1/live.next" || exit 12
mv -Tf "$1/live.next" "$1/live" || { rm -f "$1/live.next"; exit 12; }
kill -HUP 1
"#;

/// [`ACTIVATE_SCRIPT`] after extracting the version's archive from stdin: the whole apply up to
/// the reload in one Docker call. Exit code 13: no `tar` (nothing changed).
const STAGE_AND_ACTIVATE_SCRIPT: &str = r#"
read -r comm < /proc/1/comm && [ "$comm" = nginx ] || exit 12
command -v tar >/dev/null 2>&1 || exit 13
tar -x -f - -C /etc || exit 14
"#;

/// Whether the image can run [`ACTIVATE_SCRIPT`]: 0 not known yet, 1 yes, 2 no.
pub(super) const SHELL_UNKNOWN: u8 = 0;
const SHELL_YES: u8 = 1;
const SHELL_NO: u8 = 2;

impl Nginx {
    /// Writes `tree` as version `hash`, validates it, points `live` at it and sends SIGHUP, all in
    /// one exec. `None` when the image cannot (no shell or no `tar`): nothing was changed, and the
    /// caller stages with [`Nginx::stage`] and goes on with [`Nginx::activate`].
    pub async fn stage_and_activate(
        &self,
        tree: &ConfigTree,
        hash: &str,
    ) -> Result<Option<Activation>, NginxError> {
        if self.shell.load(Ordering::Relaxed) == SHELL_NO
            || self.tar.load(Ordering::Relaxed) == SHELL_NO
        {
            return Ok(None);
        }
        let archive = tree_archive(tree, hash, false)?;
        let script = format!("{STAGE_AND_ACTIVATE_SCRIPT}{ACTIVATE_SCRIPT}");
        let out = self
            .exec_with_input(
                &["sh", "-c", &script, "sh", CONFIG_ROOT, hash],
                Some(archive),
            )
            .await?;
        match out.exit_code {
            0 => {
                self.shell.store(SHELL_YES, Ordering::Relaxed);
                self.tar.store(SHELL_YES, Ordering::Relaxed);
                Ok(Some(Activation::Activated))
            }
            11 => {
                self.tar.store(SHELL_YES, Ordering::Relaxed);
                Ok(Some(Activation::Invalid(out.output.trim().to_owned())))
            }
            13 | 14 => {
                // No tar, or it could not extract (a read-only /etc would fail the upload too,
                // and then says why).
                tracing::info!(
                    container = %self.name(),
                    output = %out.output.trim(),
                    "nginx image cannot take config through tar on stdin; uploading it instead"
                );
                self.tar.store(SHELL_NO, Ordering::Relaxed);
                Ok(None)
            }
            _ => {
                // No shell, or the rest of the one-exec path is not possible: `activate` learns
                // which and remembers it.
                self.tar.store(SHELL_NO, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Validates version `hash`, points `live` at it and sends SIGHUP in one exec, when the image
    /// allows (learned on the first call and remembered).
    pub async fn activate(&self, hash: &str) -> Result<Activation, NginxError> {
        check_hash(hash)?;
        if self.shell.load(Ordering::Relaxed) == SHELL_NO {
            return Ok(Activation::Unsupported);
        }
        let out = self
            .exec(&["sh", "-c", ACTIVATE_SCRIPT, "sh", CONFIG_ROOT, hash])
            .await?;
        let known = match out.exit_code {
            0 => Some(Activation::Activated),
            11 => Some(Activation::Invalid(out.output.trim().to_owned())),
            _ => None,
        };
        match known {
            Some(activation) => {
                self.shell.store(SHELL_YES, Ordering::Relaxed);
                Ok(activation)
            }
            None => {
                // 126/127: no shell; 12: no `mv -T` or nginx is not PID 1. Both are facts about
                // the image, so the step-by-step path is used from now on.
                tracing::info!(
                    container = %self.name(),
                    exit_code = out.exit_code,
                    output = %out.output.trim(),
                    "nginx image cannot validate, swap and reload in one exec; using one Docker call per step"
                );
                self.shell.store(SHELL_NO, Ordering::Relaxed);
                Ok(Activation::Unsupported)
            }
        }
    }

    /// Extracts a tar archive at `dir` inside the container (which must exist there).
    pub(super) async fn upload(&self, dir: &str, archive: Vec<u8>) -> Result<(), NginxError> {
        self.docker
            .upload(self.name(), dir, archive)
            .await
            .map_err(self.docker_err("upload archive"))
    }

    /// Writes `tree` to `versions/<hash>/` (the live config is untouched).
    pub async fn stage(&self, tree: &ConfigTree, hash: &str) -> Result<(), NginxError> {
        self.upload("/etc", tree_archive(tree, hash, false)?).await
    }

    /// Points `live` at `versions/<hash>` by uploading a tar holding only that symlink. The archive
    /// API needs nothing in the image (no shell, no `ln`/`mv`); the engine replaces the old link
    /// in place, and nothing reads `live` in between because nginx only does at start and on the
    /// SIGHUP the butler sends afterwards.
    pub async fn point_live(&self, hash: &str) -> Result<(), NginxError> {
        check_hash(hash)?;
        let mut builder = tar::Builder::new(Vec::new());
        append_symlink(&mut builder, "live", &format!("versions/{hash}"))?;
        self.upload(CONFIG_ROOT, builder.into_inner()?).await
    }

    /// The hash `live` points to, if any.
    pub async fn live_version(&self) -> Result<Option<String>, NginxError> {
        let target = self
            .docker
            .link_target(self.name(), LIVE_LINK)
            .await
            .map_err(self.docker_err("stat live link"))?;
        Ok(target.and_then(|target| {
            target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
        }))
    }

    /// The files of `versions/<hash>` as they are now in the container (paths relative to the
    /// version directory). What the health-monitor compares with the recorded version.
    pub async fn read_version(&self, hash: &str) -> Result<ConfigTree, NginxError> {
        check_hash(hash)?;
        let bytes = self
            .docker
            .download(self.name(), &format!("{VERSIONS_DIR}/{hash}"))
            .await
            .map_err(self.docker_err("download config"))?;
        let mut tree = ConfigTree::new();
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            // The archive's root is the version directory itself: `<hash>/nginx.conf`.
            let Some((_, relative)) = path.split_once('/') else {
                continue;
            };
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content)?;
            tree.insert(
                relative.to_owned(),
                String::from_utf8_lossy(&content).into_owned(),
            );
        }
        Ok(tree)
    }

    /// Removes version directories except `keep` and the newest `keep_newest`. Needs `ls` and `rm`
    /// in the image; without them old versions simply stay (they are small).
    pub async fn prune_versions(
        &self,
        keep: &[&str],
        keep_newest: usize,
    ) -> Result<usize, NginxError> {
        let listed = self.exec(&["ls", "-1t", VERSIONS_DIR]).await?;
        if listed.exit_code != 0 {
            return Ok(0);
        }
        let doomed: Vec<String> = listed
            .output
            .lines()
            .map(str::trim)
            .filter(|h| check_hash(h).is_ok())
            .skip(keep_newest)
            .filter(|h| !keep.contains(h))
            .map(|h| format!("{VERSIONS_DIR}/{h}"))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut argv = vec!["rm", "-rf", "--"];
        argv.extend(doomed.iter().map(String::as_str));
        let removed = self.exec(&argv).await?;
        Ok(if removed.exit_code == 0 {
            doomed.len()
        } else {
            0
        })
    }
}

fn check_hash(hash: &str) -> Result<(), NginxError> {
    if !hash.is_empty()
        && hash.len() <= 128
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(NginxError::BadPath { path: hash.into() })
    }
}

/// A tar to extract at `/etc`: `butler-nginx/`, `butler-nginx/versions/`, the tree under
/// `butler-nginx/versions/<hash>/` with every parent directory (the archive API does not create
/// them), and optionally the `live` symlink.
pub(super) fn tree_archive(
    tree: &ConfigTree,
    hash: &str,
    with_live: bool,
) -> Result<Vec<u8>, NginxError> {
    check_hash(hash)?;
    if !tree.contains_key("nginx.conf") {
        return Err(NginxError::NoMainConf);
    }
    let root = format!("butler-nginx/versions/{hash}");
    let mut dirs = BTreeSet::from([
        "butler-nginx".to_owned(),
        "butler-nginx/versions".to_owned(),
        root.clone(),
    ]);
    for path in tree.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        if path.starts_with('/')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(NginxError::BadPath { path: path.clone() });
        }
        for depth in 1..parts.len() {
            dirs.insert(format!("{root}/{}", parts[..depth].join("/")));
        }
    }
    let mtime = crate::clock::now_since_epoch().as_secs();
    let mut builder = tar::Builder::new(Vec::new());
    // BTreeSet order puts every parent before its children.
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(mtime);
        builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    for (path, content) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(mtime);
        builder.append_data(&mut header, format!("{root}/{path}"), content.as_bytes())?;
    }
    if with_live {
        append_symlink(
            &mut builder,
            "butler-nginx/live",
            &format!("versions/{hash}"),
        )?;
    }
    Ok(builder.into_inner()?)
}

/// The control token file (see `data`), readable by root only: nginx's master reads it at start,
/// before its workers drop privileges.
pub(super) fn token_archive(token: &str) -> Result<Vec<u8>, NginxError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(token.len() as u64);
    header.set_mtime(crate::clock::now_since_epoch().as_secs());
    let path = CONTROL_TOKEN_FILE.trim_start_matches("/etc/");
    builder.append_data(&mut header, path, token.as_bytes())?;
    Ok(builder.into_inner()?)
}

fn append_symlink(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder.append_link(&mut header, path, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType)> {
        tar::Archive::new(archive)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn archive_holds_every_parent_directory_before_its_files() {
        let tree = ConfigTree::from([
            ("nginx.conf".into(), "events {}".into()),
            ("sites/a/app.conf".into(), "x".into()),
        ]);
        let names: Vec<String> = entries(&tree_archive(&tree, "abc", true).unwrap())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x.trim_end_matches('/') == n)
                .unwrap()
        };
        assert!(pos("butler-nginx/versions/abc/sites") < pos("butler-nginx/versions/abc/sites/a"));
        assert!(
            pos("butler-nginx/versions/abc/sites/a")
                < pos("butler-nginx/versions/abc/sites/a/app.conf")
        );
        assert_eq!(names.last().unwrap(), "butler-nginx/live");
    }

    #[test]
    fn escaping_paths_and_hashes_are_refused() {
        for bad in ["../etc/passwd", "/abs.conf", "a//b", "./x"] {
            let tree = ConfigTree::from([
                ("nginx.conf".into(), String::new()),
                (bad.into(), String::new()),
            ]);
            assert!(
                matches!(
                    tree_archive(&tree, "h", false),
                    Err(NginxError::BadPath { .. })
                ),
                "{bad}"
            );
        }
        let tree = ConfigTree::from([("nginx.conf".into(), String::new())]);
        assert!(tree_archive(&tree, "../x", false).is_err());
        assert!(matches!(
            tree_archive(&ConfigTree::new(), "h", false),
            Err(NginxError::NoMainConf)
        ));
    }
}
