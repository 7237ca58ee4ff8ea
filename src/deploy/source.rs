//! SOURCE → an image on the engine. What the user typed is classified (an existing directory with
//! `.git` is a git repository, one with a Dockerfile is built, a URL is a git remote, anything else
//! must be an image reference); a git repository is cloned with the `git` CLI into the state
//! directory and checked out at `--ref`; a directory is sent to the engine as a tar and built there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use super::naming::{NamingError, REVISION_LEN, SourceId, SourceKind, revision_of};
use crate::docker::{BuildProgress, Engine, EngineError, ImageInfo};
use crate::proxy::sanitize::quote;

/// Repository of the images the butler builds: `butler-deploy/<app>:<revision>` and `:latest`.
pub const BUILT_IMAGE_REPO: &str = "butler-deploy";
/// The checkouts of git sources, under the state directory; each is removed after its build.
pub const CHECKOUT_DIR: &str = "deploy/checkouts";
/// Longest wait for pulling an image that is not on the engine yet.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// Build output lines kept to explain a failed build.
const BUILD_LOG_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "SOURCE {0} does not exist: pass an image reference, a directory with a Dockerfile, or a git repository (path or URL)"
    )]
    Missing(String),
    #[error(
        "SOURCE {0} is neither an existing path nor an image reference: pass an image ([REGISTRY/]NAME[:TAG]), a directory with a Dockerfile, or a git repository (path or URL)"
    )]
    Unrecognised(String),
    #[error(
        "SOURCE {0} is a file: pass the directory that holds the Dockerfile, or an image reference"
    )]
    NotADirectory(String),
    #[error(
        "{0} has no Dockerfile and is not a git repository: add a Dockerfile, or pass an image reference"
    )]
    NoDockerfile(String),
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error("--ref {0} applies to git sources only; SOURCE is {1}")]
    RefWithoutGit(String, String),
    #[error("--ref {0} is not a branch, tag or commit name")]
    BadRefSyntax(String),
    #[error(
        "cannot run the git CLI ({0}); it is needed to deploy from a git repository: install git"
    )]
    GitMissing(std::io::Error),
    #[error(
        "cannot clone {url}: {stderr} (check the URL or path, and that this host can reach it)"
    )]
    Clone { url: String, stderr: String },
    #[error("--ref {git_ref} is not a branch, tag or commit of {url}")]
    UnknownRef { git_ref: String, url: String },
    #[error("git {what} in {dir} failed: {stderr}")]
    Git {
        what: &'static str,
        dir: String,
        stderr: String,
    },
    #[error("cannot prepare {path}: {error} (check the state directory's permissions)")]
    Io { path: String, error: std::io::Error },
    #[error(
        "image {reference} is not on this host and could not be pulled ({reason}): check the name, or load the image (`docker load`, `docker build -t {reference} .`)"
    )]
    ImageUnavailable { reference: String, reason: String },
    #[error("building the image from {what} failed: {error}\nlast build output:\n{log}")]
    Build {
        what: String,
        error: String,
        log: String,
    },
    #[error("Docker call `{op}` failed: {source}")]
    Docker {
        op: &'static str,
        source: EngineError,
    },
}

impl SourceError {
    /// What the user must fix in what they typed: exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SourceError::Missing(_)
                | SourceError::Unrecognised(_)
                | SourceError::NotADirectory(_)
                | SourceError::NoDockerfile(_)
                | SourceError::Naming(_)
                | SourceError::RefWithoutGit(..)
                | SourceError::BadRefSyntax(_)
                | SourceError::UnknownRef { .. }
                | SourceError::ImageUnavailable { .. }
        )
    }
}

/// What SOURCE is, before anything is fetched or built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Image(String),
    /// A directory with a Dockerfile (absolute).
    Dockerfile(PathBuf),
    /// A git repository: a remote URL, or a local path (absolute).
    Git {
        location: String,
        local: bool,
    },
}

impl Source {
    /// Classifies `arg`. A path that exists decides by what it holds; a URL-looking argument is a
    /// git remote; anything else must parse as an image reference.
    pub fn classify(arg: &str, git_ref: Option<&str>) -> Result<Source, SourceError> {
        let source = Self::classify_path_or_name(arg)?;
        if let Some(r) = git_ref {
            if !matches!(source, Source::Git { .. }) {
                return Err(SourceError::RefWithoutGit(quote(r), source.describe()));
            }
            check_ref_syntax(r)?;
        }
        Ok(source)
    }

    fn classify_path_or_name(arg: &str) -> Result<Source, SourceError> {
        if looks_like_url(arg) {
            SourceId::git_remote(arg)?;
            return Ok(Source::Git {
                location: arg.to_owned(),
                local: false,
            });
        }
        let path = Path::new(arg);
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let dir = std::fs::canonicalize(path).map_err(|error| SourceError::Io {
                    path: arg.to_owned(),
                    error,
                })?;
                if dir.join(".git").exists() {
                    Ok(Source::Git {
                        location: dir.to_string_lossy().into_owned(),
                        local: true,
                    })
                } else if dir.join("Dockerfile").is_file() {
                    Ok(Source::Dockerfile(dir))
                } else {
                    Err(SourceError::NoDockerfile(quote(&dir.to_string_lossy())))
                }
            }
            Ok(_) => Err(SourceError::NotADirectory(quote(arg))),
            Err(_) if looks_like_path(arg) => Err(SourceError::Missing(quote(arg))),
            Err(_) => match SourceId::image(arg) {
                Ok(_) => Ok(Source::Image(arg.to_owned())),
                Err(_) => Err(SourceError::Unrecognised(quote(arg))),
            },
        }
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Image(_) => SourceKind::Image,
            Source::Dockerfile(_) => SourceKind::Dockerfile,
            Source::Git { .. } => SourceKind::Git,
        }
    }

    /// How it is recorded and shown: the image reference, path or URL.
    pub fn describe(&self) -> String {
        match self {
            Source::Image(reference) => format!("image {reference}"),
            Source::Dockerfile(dir) => format!("directory {}", dir.display()),
            Source::Git { location, .. } => format!("git repository {location}"),
        }
    }

    pub fn location(&self) -> String {
        match self {
            Source::Image(reference) => reference.clone(),
            Source::Dockerfile(dir) => dir.to_string_lossy().into_owned(),
            Source::Git { location, .. } => location.clone(),
        }
    }
}

fn looks_like_url(arg: &str) -> bool {
    arg.contains("://") || {
        // scp-like `user@host:path`
        let before_colon = arg.split(':').next().unwrap_or("");
        arg.contains(':') && before_colon.contains('@') && !before_colon.contains('/')
    }
}

/// An argument that can only be meant as a path (an image reference never starts like this).
fn looks_like_path(arg: &str) -> bool {
    arg.starts_with(['/', '.', '~']) || arg.ends_with('/') || arg.contains('\\')
}

fn check_ref_syntax(r: &str) -> Result<(), SourceError> {
    let ok = !r.is_empty()
        && !r.starts_with('-')
        && r.len() <= 255
        && r.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'\\' | b'~' | b'^' | b':' | b'?' | b'*' | b'[')
        });
    if ok {
        Ok(())
    } else {
        Err(SourceError::BadRefSyntax(quote(r)))
    }
}

/// What names `source`: the image's repository, the directory, the git remote. A local repository
/// is named by its `origin` remote when it has one, else by its path.
pub async fn identify(source: &Source) -> Result<SourceId, SourceError> {
    Ok(match source {
        Source::Image(reference) => SourceId::image(reference)?,
        Source::Dockerfile(dir) => SourceId::dir(dir),
        Source::Git {
            location,
            local: false,
        } => SourceId::git_remote(location)?,
        Source::Git {
            location,
            local: true,
        } => {
            let out = git(&["remote", "get-url", "origin"], Some(Path::new(location))).await?;
            let remote = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match SourceId::git_remote(&remote) {
                Ok(id) if out.status.success() => id,
                _ => SourceId::git_local(Path::new(location)),
            }
        }
    })
}

/// A git checkout in the state directory, removed when dropped.
#[derive(Debug)]
pub struct Checkout {
    pub dir: PathBuf,
    /// The commit checked out (full hash).
    pub commit: String,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn git(args: &[&str], dir: Option<&Path>) -> Result<std::process::Output, SourceError> {
    let mut command = tokio::process::Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command.output().await.map_err(SourceError::GitMissing)
}

fn stderr_of(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text.lines().collect::<Vec<_>>().join("; ")
    }
}

/// Clones `location` into `<state_dir>/deploy/checkouts/…` and checks out `git_ref` (default: the
/// remote's HEAD).
pub async fn checkout(
    location: &str,
    git_ref: Option<&str>,
    state_dir: &Path,
) -> Result<Checkout, SourceError> {
    let parent = state_dir.join(CHECKOUT_DIR);
    std::fs::create_dir_all(&parent).map_err(|error| SourceError::Io {
        path: parent.to_string_lossy().into_owned(),
        error,
    })?;
    let nanos = crate::clock::now_since_epoch().as_nanos();
    let dir = parent.join(format!("{}-{}", std::process::id(), nanos));
    let dir_text = dir.to_string_lossy().into_owned();
    let out = git(
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--",
            location,
            &dir_text,
        ],
        None,
    )
    .await?;
    // From here on the directory is the guard's to remove, whatever fails next.
    let mut checkout = Checkout {
        dir,
        commit: String::new(),
    };
    if !out.status.success() {
        return Err(SourceError::Clone {
            url: quote(location),
            stderr: stderr_of(&out),
        });
    }
    let wanted = match git_ref {
        None => "HEAD".to_owned(),
        Some(r) => {
            let mut found = None;
            for candidate in [format!("origin/{r}"), r.to_owned()] {
                let spec = format!("{candidate}^{{commit}}");
                let out = git(
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        "--end-of-options",
                        &spec,
                    ],
                    Some(&checkout.dir),
                )
                .await?;
                if out.status.success() {
                    found = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
                    break;
                }
            }
            found.ok_or_else(|| SourceError::UnknownRef {
                git_ref: quote(r),
                url: quote(location),
            })?
        }
    };
    let out = git(
        &["checkout", "--quiet", "--detach", &wanted, "--"],
        Some(&checkout.dir),
    )
    .await?;
    if !out.status.success() {
        return Err(SourceError::Git {
            what: "checkout",
            dir: checkout.dir.to_string_lossy().into_owned(),
            stderr: stderr_of(&out),
        });
    }
    let out = git(&["rev-parse", "HEAD"], Some(&checkout.dir)).await?;
    if !out.status.success() {
        return Err(SourceError::Git {
            what: "rev-parse HEAD",
            dir: checkout.dir.to_string_lossy().into_owned(),
            stderr: stderr_of(&out),
        });
    }
    checkout.commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !checkout.dir.join("Dockerfile").is_file() {
        return Err(SourceError::NoDockerfile(format!(
            "{} at {}",
            quote(location),
            revision_of(&checkout.commit)
        )));
    }
    Ok(checkout)
}

/// The build context: every file under `dir` except a top-level `.git`, symlinks kept as links.
/// Returns the tar and the bytes of file content in it (for the disk-space check).
pub fn context_tar(dir: &Path) -> Result<(Vec<u8>, u64), SourceError> {
    let io = |path: &Path| {
        let path = path.to_string_lossy().into_owned();
        move |error| SourceError::Io { path, error }
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut bytes = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let absolute = dir.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&absolute)
            .map_err(io(&absolute))?
            .collect::<Result<_, _>>()
            .map_err(io(&absolute))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = relative.join(entry.file_name());
            if relative.as_os_str().is_empty() && entry.file_name() == ".git" {
                continue;
            }
            let file_type = entry.file_type().map_err(io(&entry.path()))?;
            builder
                .append_path_with_name(entry.path(), &name)
                .map_err(io(&entry.path()))?;
            if file_type.is_dir() {
                stack.push(name);
            } else if file_type.is_file() {
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let tar = builder.into_inner().map_err(io(dir))?;
    Ok((tar, bytes))
}

/// The image `reference` on the engine, pulled when it is not there yet.
pub async fn image(docker: &dyn Engine, reference: &str) -> Result<ImageInfo, SourceError> {
    match docker.inspect_image(reference).await {
        Ok(Some(image)) => return Ok(image),
        Ok(None) => {}
        Err(source) => {
            return Err(SourceError::Docker {
                op: "inspect image",
                source,
            });
        }
    }
    let unavailable = |reason: String| SourceError::ImageUnavailable {
        reference: quote(reference),
        reason,
    };
    match tokio::time::timeout(PULL_TIMEOUT, docker.pull_image(reference)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Err(_) => return Err(unavailable(format!("no result within {PULL_TIMEOUT:?}"))),
    }
    match docker.inspect_image(reference).await {
        Ok(Some(image)) => Ok(image),
        Ok(None) => Err(unavailable("it is not there after the pull".to_owned())),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// Builds `context` (a tar with a Dockerfile at its root) through the engine and tags the result
/// `butler-deploy/<app>:latest` and `:<revision>` (the commit for a git source, else the image id),
/// so the image survives a prune of dangling images and a rollback finds it.
pub async fn build(
    docker: &dyn Engine,
    context: Vec<u8>,
    what: &str,
    app: &str,
    commit: Option<&str>,
) -> Result<ImageInfo, SourceError> {
    let latest = format!("{BUILT_IMAGE_REPO}/{app}:latest");
    let mut stream = docker.build_image(context, &latest);
    let mut log: Vec<String> = Vec::new();
    let mut built_id = None;
    let failed = |error: String, log: &[String]| SourceError::Build {
        what: what.to_owned(),
        error,
        log: log.join("\n"),
    };
    while let Some(item) = stream.next().await {
        match item {
            Err(e) => return Err(failed(e.to_string(), &log)),
            Ok(BuildProgress::Output(text)) => {
                for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                    log.push(line.to_owned());
                    if log.len() > BUILD_LOG_LINES {
                        log.remove(0);
                    }
                }
            }
            Ok(BuildProgress::Failed(message)) => return Err(failed(message, &log)),
            Ok(BuildProgress::Built(id)) => built_id = Some(id),
        }
    }
    let reference = built_id.unwrap_or_else(|| latest.clone());
    let facts = match docker.inspect_image(&reference).await {
        Ok(Some(image)) => image,
        Ok(None) => {
            return Err(failed(
                "the built image is not on the engine".to_owned(),
                &log,
            ));
        }
        Err(e) => {
            return Err(failed(
                format!("the built image cannot be inspected: {e}"),
                &log,
            ));
        }
    };
    let revision = commit.map_or_else(|| revision_of(&facts.id), revision_of);
    debug_assert!(revision.len() <= REVISION_LEN);
    docker
        .tag_image(&facts.id, &format!("{BUILT_IMAGE_REPO}/{app}"), &revision)
        .await
        .map_err(|source| SourceError::Docker {
            op: "tag image",
            source,
        })?;
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_by_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let built = root.join("built");
        std::fs::create_dir_all(&built).unwrap();
        std::fs::write(built.join("Dockerfile"), "FROM scratch\n").unwrap();
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let file = root.join("file.txt");
        std::fs::write(&file, "x").unwrap();
        let text = |p: &Path| p.to_string_lossy().into_owned();

        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(
            Source::classify(&text(&built), None).unwrap(),
            Source::Dockerfile(canonical(&built))
        );
        assert_eq!(
            Source::classify(&text(&repo), Some("v2")).unwrap(),
            Source::Git {
                location: text(&canonical(&repo)),
                local: true
            }
        );
        for url in [
            "https://github.com/alice/shop.git",
            "git@github.com:alice/shop.git",
        ] {
            assert_eq!(
                Source::classify(url, None).unwrap(),
                Source::Git {
                    location: url.into(),
                    local: false
                }
            );
        }
        assert_eq!(
            Source::classify("alice/shop:v2", None).unwrap(),
            Source::Image("alice/shop:v2".into())
        );

        let usage = |arg: &str, git_ref: Option<&str>| {
            let err = Source::classify(arg, git_ref).unwrap_err();
            assert!(err.is_usage(), "{arg}: {err}");
            err.to_string()
        };
        assert!(usage(&text(&root.join("nope")), None).contains("does not exist"));
        assert!(usage("./nope", None).contains("does not exist"));
        assert!(usage(&text(&empty), None).contains("no Dockerfile"));
        assert!(usage(&text(&file), None).contains("is a file"));
        assert!(usage("Not An Image", None).contains("neither"));
        assert!(usage("alice/shop:v2", Some("main")).contains("git sources only"));
        assert!(usage(&text(&repo), Some("-x")).contains("--ref"));
        assert!(usage(&text(&repo), Some("a b")).contains("--ref"));
        assert!(usage("https://github.com/", None).contains("git remote"));
    }

    #[test]
    fn the_context_holds_every_file_but_the_git_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/deep/a.txt"), "hello").unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::os::unix::fs::symlink("src/deep/a.txt", root.join("link")).unwrap();
        let (tar, bytes) = context_tar(root).unwrap();
        let mut names: Vec<(String, tar::EntryType)> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let just_names: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            just_names,
            ["Dockerfile", "link", "src", "src/deep", "src/deep/a.txt"]
        );
        assert_eq!(names[1].1, tar::EntryType::Symlink);
        assert_eq!(bytes, 5 + "FROM scratch\nCOPY . /\n".len() as u64);
    }
}
