//! The bearer token that guards the API's actions. It is read from `dashboard.token_file`, a file
//! only its owner may read; a file anyone else could read (or that someone else owns) is refused and
//! actions stay off. The file is looked at again when an action arrives, so a token written or
//! rotated after start takes effect without a restart.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

/// A secret that never shows in Debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Compares in constant time: both sides are hashed first, so neither the length nor the
    /// position of the first difference shows in how long the comparison takes.
    pub fn matches(&self, offered: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(offered.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(****)")
    }
}

/// Why actions are off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("actions are off: no dashboard.token_file is configured")]
    NotConfigured,
    #[error("actions are off: cannot read the token file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "actions are off: the token file {path} has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "actions are off: the token file {path} is owned by uid {uid}; it must belong to root or to the user the dashboard runs as (uid {euid})"
    )]
    WrongOwner { path: PathBuf, uid: u32, euid: u32 },
    #[error("actions are off: the token file {path} is empty")]
    Empty { path: PathBuf },
}

/// What the file looked like when it was last read: a change of any of these means read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
    mode: u32,
    uid: u32,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            size: meta.size(),
            mode: meta.mode(),
            uid: meta.uid(),
        }
    }
}

/// The token as last read from its file, re-read when the file changes.
#[derive(Debug)]
pub struct TokenSource {
    path: Option<PathBuf>,
    current: Mutex<(Option<Stamp>, Result<Token, TokenError>)>,
}

impl TokenSource {
    /// Reads the file now and logs whether actions are on.
    pub fn load(path: Option<&Path>) -> Self {
        let source = TokenSource {
            path: path.map(Path::to_owned),
            current: Mutex::new((None, Err(TokenError::NotConfigured))),
        };
        match source.token() {
            Ok(_) => tracing::info!("API actions are on (token from dashboard.token_file)"),
            Err(TokenError::NotConfigured) => {
                tracing::info!("API actions are off: no dashboard.token_file is configured")
            }
            // Reading the file logged why already.
            Err(_) => {}
        }
        source
    }

    /// The token, read again first if the file changed since the last look.
    pub fn token(&self) -> Result<Token, TokenError> {
        let Some(path) = &self.path else {
            return Err(TokenError::NotConfigured);
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = std::fs::metadata(path).ok().map(|m| Stamp::of(&m));
        if current.0.is_none() || current.0 != stamp {
            let read = read_token(path);
            if let Err(error) = &read
                && current.1.as_ref().err() != Some(error)
            {
                tracing::warn!("{error}");
            } else if read.is_ok() && current.1.is_err() && current.0.is_some() {
                tracing::info!("API actions are on again: the token file is usable");
            }
            *current = (stamp, read);
        }
        current.1.clone()
    }
}

fn read_token(path: &Path) -> Result<Token, TokenError> {
    let unreadable = |reason: String| TokenError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(TokenError::WrongOwner {
            path: path.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Token(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_file_gives_a_token_that_matches_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "s3cret-token\n", 0o600);
        let token = TokenSource::load(Some(&path)).token().unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches(""));
        assert_eq!(
            format!("{token:?}"),
            "Token(****)",
            "the secret never shows"
        );
    }

    #[test]
    fn open_missing_and_empty_files_leave_actions_off_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert_eq!(
            TokenSource::load(None).token().unwrap_err(),
            TokenError::NotConfigured
        );
        let missing = TokenSource::load(Some(&path)).token().unwrap_err();
        assert!(
            matches!(missing, TokenError::Unreadable { .. }),
            "{missing}"
        );
        write(&path, "abc", 0o640);
        let open = TokenSource::load(Some(&path)).token().unwrap_err();
        assert!(open.to_string().contains("0640"), "{open}");
        assert!(open.to_string().contains("chmod 600"), "{open}");
        write(&path, "  \n", 0o600);
        let empty = TokenSource::load(Some(&path)).token().unwrap_err();
        assert!(matches!(empty, TokenError::Empty { .. }), "{empty}");
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = TokenSource::load(Some(&path));
        assert!(source.token().is_err());
        write(&path, "first", 0o600);
        assert!(source.token().unwrap().matches("first"));
        // A different size and inode: the rotation is seen even within one mtime tick.
        let next = dir.path().join("token.new");
        write(&next, "second-token", 0o400);
        std::fs::rename(&next, &path).unwrap();
        assert!(source.token().unwrap().matches("second-token"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            source.token().unwrap_err(),
            TokenError::TooOpen { .. }
        ));
    }
}
