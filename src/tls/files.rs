//! The butler's own certificate files under `<state.dir>/tls/`: `local-ca/root.crt` and
//! `root.key`, and `certs/<host>.crt` (leaf, then its chain) with `certs/<host>.key`.
//! Directories are 0700 and keys 0600; when root writes them (the CLI), they take the state
//! directory's owner, so that the workers, which run as the butler's user, can read them.
//!
//! A pair is replaced so that a crash cannot leave a key beside a certificate it does not
//! match: both go to `.<name>.new` files in the same directory (written, fsynced), then the key
//! and the certificate are renamed over the old ones and the directory is fsynced. The next
//! reader finishes a replacement a crash interrupted between the two renames, or throws away one
//! interrupted before them; the old pair stays until a new one is complete. Writers hold the
//! tree's lock (flock on `tls/`), so two processes never interleave their pairs.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::pair::{PairError, PairFiles, PemPair};
use super::policy::{self, PolicyError};
use super::secret::SecretPem;

pub const TLS_DIR: &str = "tls";
pub const CA_DIR: &str = "local-ca";
pub const CERTS_DIR: &str = "certs";
const DIR_MODE: u32 = 0o700;
const KEY_MODE: u32 = 0o600;
/// Certificates are public; the 0700 directories keep them from other users all the same.
const CERT_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot create {path}: {source} (run as root or as the butler user)")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source} (run as root or as the butler user)")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; the previous files are unchanged")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{present} exists without {missing}: the pair is incomplete; move {present} away to replace it"
    )]
    HalfPair { present: PathBuf, missing: PathBuf },
    #[error("refused to write {files}: {source}")]
    Invalid { files: PairFiles, source: PairError },
    #[error(transparent)]
    Pair(#[from] PairError),
    #[error("no certificate file for it: {0}")]
    Host(#[from] PolicyError),
}

/// Held while one process replaces files in the tree; released on drop.
#[derive(Debug)]
pub struct TlsLock(#[allow(dead_code)] File);

/// The `tls/` tree of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir {
    state_dir: PathBuf,
    root: PathBuf,
}

impl TlsDir {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            root: state_dir.join(TLS_DIR),
        }
    }

    /// `<state.dir>/tls`.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `tls/certs`: the leaves the butler keeps (local CA now, ACME later).
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join(CERTS_DIR)
    }

    /// `tls/local-ca/root.crt` and `root.key`.
    pub fn root_ca(&self) -> PairFiles {
        let dir = self.root.join(CA_DIR);
        PairFiles {
            cert: dir.join("root.crt"),
            key: dir.join("root.key"),
        }
    }

    /// `tls/certs/<host>.crt` and `.key`, for a host a certificate can name (lower-cased). The
    /// check is also what keeps a host from being a path ("../x", "a/b").
    pub fn host(&self, host: &str) -> Result<PairFiles, FilesError> {
        Ok(host_files(&self.certs_dir(), &policy::validate_host(host)?))
    }

    /// Creates the tree (0700) when needed and waits for its lock. Blocking: call it off an
    /// async runtime's worker threads.
    pub fn lock(&self) -> Result<TlsLock, FilesError> {
        if !self.state_dir.exists() {
            std::fs::create_dir_all(&self.state_dir).map_err(|source| FilesError::CreateDir {
                path: self.state_dir.clone(),
                source,
            })?;
        }
        let owner = self.owner();
        for dir in [self.root.clone(), self.root.join(CA_DIR), self.certs_dir()] {
            ensure_dir(&dir, owner)?;
        }
        let lock_err = |source| FilesError::Lock {
            path: self.root.clone(),
            source,
        };
        let dir = File::open(&self.root).map_err(lock_err)?;
        dir.lock().map_err(lock_err)?;
        Ok(TlsLock(dir))
    }

    /// Reads a pair; `None` when neither file exists. A replacement a crash interrupted is
    /// finished (or thrown away) first, under the lock. The pair is not judged here: that is
    /// `PemPair::check`'s job, with the host and the time.
    ///
    /// Not while this process holds the lock itself (flock would wait for it forever): a
    /// holder calls [`recover`](Self::recover) first, after which there is nothing to finish.
    pub fn read(&self, files: &PairFiles) -> Result<Option<PemPair>, FilesError> {
        if exists(&new_file(&files.cert))? || exists(&new_file(&files.key))? {
            let lock = self.lock()?;
            self.recover(&lock, files)?;
        }
        match (exists(&files.cert)?, exists(&files.key)?) {
            (false, false) => Ok(None),
            (true, false) => Err(FilesError::HalfPair {
                present: files.cert.clone(),
                missing: files.key.clone(),
            }),
            (false, true) => Err(FilesError::HalfPair {
                present: files.key.clone(),
                missing: files.cert.clone(),
            }),
            (true, true) => Ok(Some(PemPair::read(files)?)),
        }
    }

    /// Finishes or throws away a replacement of `files` that a crash interrupted.
    pub fn recover(&self, _lock: &TlsLock, files: &PairFiles) -> Result<(), FilesError> {
        finish_interrupted(files)
    }

    /// Replaces the local CA's root pair, which must be a certificate and its key.
    pub fn write_root(
        &self,
        lock: &TlsLock,
        cert_pem: &str,
        key_pem: &SecretPem,
    ) -> Result<(), FilesError> {
        let pair = self.pair(self.root_ca(), cert_pem, key_pem);
        pair.chain().map_err(|source| FilesError::Invalid {
            files: pair.files.clone(),
            source,
        })?;
        self.write(lock, &pair)
    }

    /// Replaces `host`'s pair with one that is usable for it now (`PemPair::check`): a pair
    /// that would not serve is refused and the previous one stays.
    pub fn write_host(
        &self,
        lock: &TlsLock,
        host: &str,
        cert_pem: &str,
        key_pem: &SecretPem,
        now: SystemTime,
    ) -> Result<(), FilesError> {
        let host = policy::validate_host(host)?;
        let pair = self.pair(host_files(&self.certs_dir(), &host), cert_pem, key_pem);
        pair.check(&host, now)
            .map_err(|source| FilesError::Invalid {
                files: pair.files.clone(),
                source,
            })?;
        self.write(lock, &pair)
    }

    fn pair(&self, files: PairFiles, cert_pem: &str, key_pem: &SecretPem) -> PemPair {
        PemPair {
            files,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.clone(),
        }
    }

    /// Writes `.new` files, then renames the key and the certificate over the old ones. The lock
    /// is asked for by reference so that no caller can write without holding it.
    fn write(&self, _lock: &TlsLock, pair: &PemPair) -> Result<(), FilesError> {
        let owner = self.owner();
        let dir = pair.files.cert.parent().unwrap_or(&self.root);
        ensure_dir(dir, owner)?;
        let (cert_new, key_new) = (new_file(&pair.files.cert), new_file(&pair.files.key));
        let staged = write_synced(&key_new, pair.key_pem.expose().as_bytes(), KEY_MODE, owner)
            .and_then(|()| write_synced(&cert_new, pair.cert_pem.as_bytes(), CERT_MODE, owner));
        if let Err(error) = staged {
            let _ = std::fs::remove_file(&key_new);
            let _ = std::fs::remove_file(&cert_new);
            return Err(error);
        }
        rename(&key_new, &pair.files.key)?;
        rename(&cert_new, &pair.files.cert)?;
        sync_dir(dir)
    }

    /// Who new files belong to: the state directory's owner when root writes them, so that the
    /// workers (the butler's user) can read what `sudo butler tls ...` created; otherwise the
    /// writer, as usual.
    fn owner(&self) -> Option<(u32, u32)> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        std::fs::metadata(&self.state_dir)
            .ok()
            .map(|m| (m.uid(), m.gid()))
    }
}

/// Replaces one file outside the tree the same safe way (staged beside it, fsynced, renamed,
/// directory fsynced): a reader sees the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FilesError> {
    let staged = new_file(path);
    if let Err(error) = write_synced(&staged, bytes, mode, None) {
        let _ = std::fs::remove_file(&staged);
        return Err(error);
    }
    rename(&staged, path)?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// The pairs in a directory: every `<host>.crt` or `<host>.key` (hidden files left out), by
/// host name as the file names spell it, sorted. A missing directory has none.
pub fn list_pairs(dir: &Path) -> Result<Vec<(String, PairFiles)>, FilesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FilesError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut hosts = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| FilesError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Some(host) = name
            .strip_suffix(".crt")
            .or_else(|| name.strip_suffix(".key"))
        {
            hosts.insert(host.to_owned());
        }
    }
    Ok(hosts
        .into_iter()
        .map(|host| {
            let files = host_files(dir, &host);
            (host, files)
        })
        .collect())
}

fn host_files(dir: &Path, host: &str) -> PairFiles {
    PairFiles {
        cert: dir.join(format!("{host}.crt")),
        key: dir.join(format!("{host}.key")),
    }
}

/// `dir/.name.new`: the staged file of `dir/name`, in the same directory so that the rename is
/// atomic.
fn new_file(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new"))
}

/// Finishes or throws away a replacement of `files` that a crash interrupted (under the lock).
/// The key is staged first and renamed first, so a staged certificate alone means its key is
/// already in place; either way, staged files are kept only if they form a pair.
fn finish_interrupted(files: &PairFiles) -> Result<(), FilesError> {
    let (cert_new, key_new) = (new_file(&files.cert), new_file(&files.key));
    let staged_key = exists(&key_new)?;
    if !exists(&cert_new)? {
        if staged_key {
            remove(&key_new)?;
        }
        return Ok(());
    }
    let staged = PairFiles {
        cert: cert_new.clone(),
        key: if staged_key {
            key_new.clone()
        } else {
            files.key.clone()
        },
    };
    if PemPair::read(&staged).and_then(|pair| pair.chain()).is_ok() {
        if staged_key {
            rename(&key_new, &files.key)?;
        }
        rename(&cert_new, &files.cert)?;
    } else {
        remove(&cert_new)?;
        if staged_key {
            remove(&key_new)?;
        }
    }
    sync_dir(files.cert.parent().unwrap_or(Path::new("/")))
}

fn ensure_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), FilesError> {
    let create_err = |source| FilesError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            // The umask may have taken bits off; set exactly 0700.
            std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(create_err)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(create_err)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

fn write_synced(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), FilesError> {
    let write_err = |source| FilesError::Write {
        path: path.to_owned(),
        source,
    };
    // A stale staged file from a crash that nothing has cleaned up yet.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(write_err(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_err)?;
    // Exact mode whatever the umask; owner before the first byte of a key is written.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(write_err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(write_err)?;
    }
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

fn rename(from: &Path, to: &Path) -> Result<(), FilesError> {
    std::fs::rename(from, to).map_err(|source| FilesError::Write {
        path: to.to_owned(),
        source,
    })
}

fn remove(path: &Path) -> Result<(), FilesError> {
    std::fs::remove_file(path).map_err(|source| FilesError::Write {
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), FilesError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FilesError::Write {
            path: dir.to_owned(),
            source,
        })
}

fn exists(path: &Path) -> Result<bool, FilesError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FilesError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::pair::tests::{Leaf, now, sign, test_ca};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn leaf() -> (String, SecretPem) {
        sign(&test_ca("Test Root"), Leaf::default())
    }

    /// A state directory with a pair for shop.example.com: (its guard, the tree, the pair's
    /// files, the certificate, the key).
    fn written() -> (tempfile::TempDir, TlsDir, PairFiles, String, SecretPem) {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        let files = dir.host("shop.example.com").unwrap();
        let (cert, key) = leaf();
        let lock = dir.lock().unwrap();
        dir.write_host(&lock, "shop.example.com", &cert, &key, now())
            .unwrap();
        (state, dir, files, cert, key)
    }

    #[test]
    fn a_pair_is_written_with_private_modes_and_read_back() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        let files = dir.host("Shop.Example.com").unwrap();
        assert_eq!(
            files.cert,
            state.path().join("tls/certs/shop.example.com.crt")
        );
        assert_eq!(dir.read(&files).unwrap().map(|p| p.files), None);

        let (cert, key) = leaf();
        let lock = dir.lock().unwrap();
        dir.write_host(&lock, "shop.example.com", &cert, &key, now())
            .unwrap();
        drop(lock);
        for d in ["tls", "tls/certs", "tls/local-ca"] {
            assert_eq!(mode(&state.path().join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!(read.cert_pem, cert);
        assert_eq!(read.key_pem, key);
        // No staged file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.certs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            list_pairs(&dir.certs_dir()).unwrap(),
            vec![("shop.example.com".into(), files)]
        );
    }

    #[test]
    fn a_pair_that_would_not_serve_is_refused_and_the_previous_one_stays() {
        let (_state, dir, files, cert, key) = written();
        let (other_cert, other_key) = leaf();
        let lock = dir.lock().unwrap();
        let cases = [
            (
                cert.clone(),
                other_key.clone(),
                "does not hold the private key",
            ),
            ("garbage".to_owned(), key.clone(), "no PEM CERTIFICATE"),
            (
                other_cert.clone(),
                SecretPem::new("nope".into()),
                "no PEM private key",
            ),
        ];
        for (c, k, want) in cases {
            let error = dir
                .write_host(&lock, "shop.example.com", &c, &k, now())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(want) && error.contains("refused to write"),
                "{error}"
            );
            assert!(!error.contains(k.expose()), "{error}");
        }
        let error = dir
            .write_host(&lock, "other.example.com", &cert, &key, now())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("does not cover other.example.com"),
            "{error}"
        );
        let error = dir
            .write_host(&lock, "../etc/passwd", &cert, &key, now())
            .unwrap_err()
            .to_string();
        assert!(error.contains("'/'"), "{error}");
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((read.cert_pem, read.key_pem), (cert, key));
    }

    #[test]
    fn a_write_that_fails_leaves_the_previous_pair() {
        let (_state, dir, files, cert, key) = written();
        let lock = dir.lock().unwrap();
        // Something in the way of the staged certificate: the write fails after the key is staged.
        std::fs::create_dir(new_file(&files.cert)).unwrap();
        let (cert2, key2) = leaf();
        let error = dir
            .write_host(&lock, "shop.example.com", &cert2, &key2, now())
            .unwrap_err();
        assert!(matches!(error, FilesError::Write { .. }), "{error}");
        assert!(!new_file(&files.key).exists());
        drop(lock);
        std::fs::remove_dir(new_file(&files.cert)).unwrap();
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((read.cert_pem, read.key_pem), (cert, key));
    }

    #[test]
    fn a_replacement_interrupted_by_a_crash_is_finished_or_thrown_away() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        let files = dir.host("shop.example.com").unwrap();
        let (old_cert, old_key) = leaf();
        let (new_cert, new_key) = leaf();
        // As the butler stages them: 0600 (a key anyone may read is refused).
        let write = |path: &Path, text: &str| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        let set = |cert: &str, key: &SecretPem| {
            let lock = dir.lock().unwrap();
            dir.write_host(&lock, "shop.example.com", cert, key, now())
                .unwrap();
        };

        // Crash between the two renames: the new key is in place, the new certificate staged.
        set(&old_cert, &old_key);
        write(&files.key, new_key.expose());
        write(&new_file(&files.cert), &new_cert);
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((&read.cert_pem, &read.key_pem), (&new_cert, &new_key));

        // Crash before the renames, both staged and complete: finished.
        set(&old_cert, &old_key);
        write(&new_file(&files.key), new_key.expose());
        write(&new_file(&files.cert), &new_cert);
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((&read.cert_pem, &read.key_pem), (&new_cert, &new_key));

        // Crash while staging: a half-written certificate is thrown away, the old pair stays.
        set(&old_cert, &old_key);
        write(&new_file(&files.key), new_key.expose());
        write(&new_file(&files.cert), &new_cert[..100]);
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((&read.cert_pem, &read.key_pem), (&old_cert, &old_key));

        // Crash while staging the key: thrown away.
        write(&new_file(&files.key), "-----BEGIN PRIV");
        let read = dir.read(&files).unwrap().unwrap();
        assert_eq!((&read.cert_pem, &read.key_pem), (&old_cert, &old_key));
        for staged in [new_file(&files.cert), new_file(&files.key)] {
            assert!(!staged.exists(), "{}", staged.display());
        }
    }

    #[test]
    fn half_a_pair_is_an_error_that_touches_nothing() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        let files = dir.root_ca();
        drop(dir.lock().unwrap());
        std::fs::write(&files.cert, "cert").unwrap();
        let error = dir.read(&files).unwrap_err().to_string();
        assert!(
            error.contains("root.crt exists without") && error.contains("root.key"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), "cert");
    }

    #[test]
    fn listing_finds_each_host_once_and_skips_staged_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.test.crt",
            "a.test.key",
            "b.test.crt",
            "c.test.key",
            ".a.test.crt.new",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let hosts: Vec<String> = list_pairs(dir.path())
            .unwrap()
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        assert_eq!(hosts, ["a.test", "b.test", "c.test"]);
        assert!(list_pairs(&dir.path().join("absent")).unwrap().is_empty());
    }
}
