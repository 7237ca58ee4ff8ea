//! The system trust store: putting the local CA's root where the distribution's own tool picks
//! it up, and taking it out again. Debian and its family read
//! `/usr/local/share/ca-certificates/*.crt` with `update-ca-certificates`; the RPM family reads
//! `/etc/pki/ca-trust/source/anchors/` with `update-ca-trust extract`. Which one is chosen by
//! which tool exists. Browsers with their own store (Firefox, Chrome's NSS on some systems) are
//! not touched: they say so in their settings, and README's "HTTPS" says how.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::files::{self, FilesError};

/// The file name of the installed root, the same in both families.
pub const ANCHOR_NAME: &str = "devops-butler-local-ca.crt";
/// Where tools live besides `$PATH`: `sudo` and root's shells do not always have the sbin dirs.
const SBIN_DIRS: [&str; 4] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"];
/// Lines of a failed tool's output worth quoting.
const OUTPUT_TAIL: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("changing the system trust store needs root: run `sudo butler tls {command}`")]
    NotRoot { command: &'static str },
    #[error(
        "no system trust store tool found: this needs update-ca-certificates (Debian, Ubuntu: \
         apt install ca-certificates) or update-ca-trust (Fedora, RHEL: dnf install ca-certificates)"
    )]
    NoTool,
    #[error("cannot install the root as {path}: {source}")]
    Install {
        path: PathBuf,
        source: Box<FilesError>,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Run {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    Tool {
        program: PathBuf,
        status: String,
        output: String,
    },
}

/// One family's store: where the root goes and the command that rebuilds the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    pub anchor: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl TrustStore {
    pub fn debian(program: PathBuf) -> Self {
        Self {
            anchor: Path::new("/usr/local/share/ca-certificates").join(ANCHOR_NAME),
            program,
            args: Vec::new(),
        }
    }

    pub fn rpm(program: PathBuf) -> Self {
        Self {
            anchor: Path::new("/etc/pki/ca-trust/source/anchors").join(ANCHOR_NAME),
            program,
            args: vec!["extract".into()],
        }
    }

    /// The store of this system: Debian's tool when it exists, else the RPM family's. `path` is
    /// `$PATH`; the sbin directories are searched after it.
    pub fn detect(path: Option<&OsStr>) -> Result<TrustStore, TrustError> {
        let mut dirs: Vec<PathBuf> = path
            .map(|p| std::env::split_paths(p).collect())
            .unwrap_or_default();
        dirs.extend(SBIN_DIRS.iter().map(PathBuf::from));
        TrustStore::find_in(&dirs)
    }

    /// [`detect`](Self::detect) over exactly these directories.
    pub fn find_in(dirs: &[PathBuf]) -> Result<TrustStore, TrustError> {
        let find = |name: &str| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate))
        };
        if let Some(program) = find("update-ca-certificates") {
            return Ok(TrustStore::debian(program));
        }
        if let Some(program) = find("update-ca-trust") {
            return Ok(TrustStore::rpm(program));
        }
        Err(TrustError::NoTool)
    }

    /// The tool's name, for messages.
    pub fn tool(&self) -> String {
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::iter::once(name)
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Installs `root_pem` as the anchor (replacing an older one atomically) and rebuilds the
    /// bundle.
    pub fn install(&self, root_pem: &str) -> Result<(), TrustError> {
        if let Some(dir) = self.anchor.parent() {
            std::fs::create_dir_all(dir).map_err(|source| TrustError::Install {
                path: self.anchor.clone(),
                source: Box::new(FilesError::CreateDir {
                    path: dir.to_owned(),
                    source,
                }),
            })?;
        }
        files::write_atomic(&self.anchor, root_pem.as_bytes(), 0o644).map_err(|source| {
            TrustError::Install {
                path: self.anchor.clone(),
                source: Box::new(source),
            }
        })?;
        self.run()
    }

    /// Removes the anchor and rebuilds the bundle, also when there was no anchor (a bundle
    /// built while it was there would still hold it). `true` when there was one.
    pub fn remove(&self) -> Result<bool, TrustError> {
        let removed = match std::fs::remove_file(&self.anchor) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(source) => {
                return Err(TrustError::Remove {
                    path: self.anchor.clone(),
                    source,
                });
            }
        };
        self.run()?;
        Ok(removed)
    }

    fn run(&self) -> Result<(), TrustError> {
        let output = Command::new(&self.program)
            .args(&self.args)
            .output()
            .map_err(|source| TrustError::Run {
                program: self.program.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(TrustError::Tool {
            program: self.program.clone(),
            status: output.status.to_string(),
            output: lines[lines.len().saturating_sub(OUTPUT_TAIL)..].join("; "),
        })
    }
}

/// Refuses to go on unless this process is root: the store's files and tools are root's.
pub fn require_root(command: &'static str) -> Result<(), TrustError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(TrustError::NotRoot { command })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_debian_tool_is_preferred_then_the_rpm_one_and_none_is_an_error() {
        let both = tempfile::tempdir().unwrap();
        let deb = script(both.path(), "update-ca-certificates", "true");
        let rpm = script(both.path(), "update-ca-trust", "true");
        let found = TrustStore::find_in(&[both.path().into()]).unwrap();
        assert_eq!(found, TrustStore::debian(deb));
        assert_eq!(
            found.anchor,
            PathBuf::from("/usr/local/share/ca-certificates/devops-butler-local-ca.crt")
        );

        let rpm_only = tempfile::tempdir().unwrap();
        // A file that is not executable is no tool.
        std::fs::write(rpm_only.path().join("update-ca-certificates"), "").unwrap();
        let found = TrustStore::find_in(&[rpm_only.path().into(), both.path().into()]).unwrap();
        assert_eq!(found.program, both.path().join("update-ca-certificates"));
        std::fs::remove_file(both.path().join("update-ca-certificates")).unwrap();
        let found = TrustStore::find_in(&[rpm_only.path().into(), both.path().into()]).unwrap();
        assert_eq!(found, TrustStore::rpm(rpm));
        assert_eq!(
            found.anchor,
            PathBuf::from("/etc/pki/ca-trust/source/anchors/devops-butler-local-ca.crt")
        );
        assert_eq!(found.tool(), "update-ca-trust extract");

        let error = TrustStore::find_in(&[rpm_only.path().into()]).unwrap_err();
        assert!(matches!(error, TrustError::NoTool));
        assert!(
            error.to_string().contains("apt install ca-certificates"),
            "{error}"
        );
    }

    #[test]
    fn install_writes_the_anchor_and_runs_the_tool_and_remove_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let program = script(
            dir.path(),
            "tool",
            &format!("echo \"$@\" >> {}", log.display()),
        );
        let store = TrustStore {
            anchor: dir.path().join("anchors").join(ANCHOR_NAME),
            program,
            args: vec!["extract".into()],
        };
        store.install("PEM ROOT\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&store.anchor).unwrap(),
            "PEM ROOT\n"
        );
        let mode = std::fs::metadata(&store.anchor)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        assert!(store.remove().unwrap());
        assert!(!store.anchor.exists());
        assert!(!store.remove().unwrap());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "extract\nextract\nextract\n"
        );
    }

    #[test]
    fn a_failing_tool_is_an_error_with_its_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(
            dir.path(),
            "tool",
            "echo one; echo two >&2; echo 'bad bundle' >&2; exit 3",
        );
        let store = TrustStore {
            anchor: dir.path().join(ANCHOR_NAME),
            program,
            args: Vec::new(),
        };
        let error = store.install("PEM").unwrap_err().to_string();
        assert!(
            error.contains("tool failed")
                && error.contains("exit status: 3")
                && error.contains("two; bad bundle"),
            "{error}"
        );
        let missing = TrustStore {
            program: dir.path().join("absent"),
            ..store
        };
        let error = missing.remove().unwrap_err().to_string();
        assert!(
            error.contains("cannot run") && error.contains("absent"),
            "{error}"
        );
    }
}
