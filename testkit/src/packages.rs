//! The butler's packages for tests/packaging.rs: the .deb and .rpm built by `packaging/build.sh`
//! (once per test process), a rebuilt .deb with a newer version for the upgrade, and a local apt
//! repository that serves them to a container that has no Debian mirror.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::{CmdOutput, docker, docker_ok, run_build_script};

/// The packages one `packaging/build.sh` run made.
#[derive(Debug)]
pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    /// The .deb's version (`0.1.0-1`).
    pub version: String,
}

/// Where the tests' packages go: under cargo's tmp dir for integration tests (`<target>/tmp`),
/// apart from `target/packages` (what a person building by hand gets). `CARGO_TARGET_TMPDIR` is set
/// only when cargo compiles a test or bench, not this library, so the directory is found from the
/// test binary, which cargo puts in `<target>/<profile>/deps/`.
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps/", exe.display()));
    target.join("tmp").join("packages")
}

/// The cargo profile of the packaged binary: release without LTO, at opt-level 1 (Cargo.toml), so
/// that a source change costs the package tests about 1.5 minutes of rebuilding, not 5. Same files,
/// scripts and metadata as the release packages: only the compiler's effort differs.
const PROFILE: &str = "package-test";

/// `packaging/build.sh OUT` with `env`; the package paths it printed. The build is incremental:
/// only the first run on a machine compiles the dependencies for the profile.
fn build(env: &[(&str, &str)]) -> Vec<PathBuf> {
    let start = Instant::now();
    let out_dir = out_dir();
    let mut env = env.to_vec();
    env.push(("PROFILE", PROFILE));
    let printed = run_build_script("packaging/build.sh", &[&out_dir.to_string_lossy()], &env);
    let paths: Vec<PathBuf> = printed.lines().map(PathBuf::from).collect();
    eprintln!(
        "testkit: built {paths:?} in {} ms",
        start.elapsed().as_millis()
    );
    paths
}

/// The .deb and .rpm of this checkout, built once per test process.
pub fn packages() -> &'static Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Packages of earlier runs (other versions) must not be mistaken for this one's.
        let _ = std::fs::remove_dir_all(out_dir());
        let paths = build(&[]);
        let [deb, rpm] = paths.as_slice() else {
            panic!("build.sh printed {paths:?}, expected a .deb and an .rpm");
        };
        let version = deb_field(deb, "Version");
        Packages {
            deb: deb.clone(),
            rpm: rpm.clone(),
            version,
        }
    })
}

/// The same build as `packages().deb` with the Debian revision one higher (`0.1.0-1` → `0.1.0-2`),
/// as a rebuilt package of a newer version reaches a user.
pub fn upgrade_deb() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let current = &packages().version;
        let (upstream, revision) = current
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("version {current} has no Debian revision"));
        let revision: u32 = revision.parse().expect("numeric Debian revision");
        let newer = format!("{upstream}-{}", revision + 1);
        let paths = build(&[("DEB_VERSION", &newer), ("SKIP_RPM", "1")]);
        let deb = paths.first().expect("build.sh printed the .deb").clone();
        assert_eq!(deb_field(&deb, "Version"), newer, "{}", deb.display());
        deb
    })
}

/// A field of a .deb's control file (`dpkg-deb --field`).
pub fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(field)
        .output()
        .expect("run dpkg-deb (apt-get install dpkg)");
    assert!(out.status.success(), "dpkg-deb --field {}", deb.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A stand-in for `docker.io` in the test bed. The test bed runs no Docker engine of its own: the
/// butler inside it drives the host's engine through the mounted socket, and a second dockerd on
/// this shared machine is out of the question. It also has no Debian mirror, so apt could not
/// fetch the real package. This one says what it is, and `Provides: docker.io` so that the
/// devops-butler package's `Depends: docker.io | docker-ce` resolves, as on a real host.
pub fn host_docker_stub_deb() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = out_dir().join("host-docker-stub");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        let doc = root.join("usr/share/doc/butler-testbed-host-docker");
        std::fs::create_dir_all(&doc).unwrap();
        std::fs::write(
            doc.join("README"),
            "The Docker engine of this test bed is the host's, reached through the mounted \
             /var/run/docker.sock.\n",
        )
        .unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: butler-testbed-host-docker\nVersion: 1.0\nArchitecture: all\n\
             Maintainer: devops-butler tests <tests@devops-butler.invalid>\nProvides: docker.io\n\
             Description: the host's Docker engine, through the mounted socket (test bed only)\n \
             Satisfies docker.io for apt in the systemd test bed, which uses the host's engine.\n",
        )
        .unwrap();
        let deb = out_dir().join("butler-testbed-host-docker_1.0_all.deb");
        let out = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            .output()
            .expect("run dpkg-deb");
        assert!(
            out.status.success(),
            "dpkg-deb --build the docker.io stand-in: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        deb
    })
}

/// A flat apt repository (`Packages` made by dpkg-scanpackages on the host: the test bed's minbase
/// root has no dpkg-dev), served inside a container as `file:/srv/butler-apt`.
pub struct AptRepo {
    dir: tempfile::TempDir,
}

/// Where the repository lives inside the container.
const REPO_IN_CONTAINER: &str = "/srv/butler-apt";

impl AptRepo {
    pub fn new(debs: &[&Path]) -> AptRepo {
        let repo = AptRepo {
            dir: tempfile::tempdir().expect("temp dir for the apt repository"),
        };
        for deb in debs {
            repo.add(deb);
        }
        repo
    }

    /// Add a package (the index is remade by `publish`).
    pub fn add(&self, deb: &Path) {
        let name = deb.file_name().expect("a .deb file name");
        std::fs::copy(deb, self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("cannot copy {} into the repository: {e}", deb.display()));
    }

    /// (Re)write the index and copy the repository into `container` as its only apt source, then
    /// `apt-get update` there.
    pub fn publish(&self, container: &str) {
        let out = Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(self.dir.path())
            .stderr(Stdio::null())
            .output()
            .expect("run dpkg-scanpackages (apt-get install dpkg-dev)");
        assert!(out.status.success(), "dpkg-scanpackages failed");
        std::fs::write(self.dir.path().join("Packages"), &out.stdout).unwrap();
        // World-readable, so that apt's unprivileged _apt user reads it without a warning.
        let chmod = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(chmod.success());
        in_container(container, &format!("rm -rf {REPO_IN_CONTAINER}"))
            .expect_success("clearing the old repository");
        docker_ok(&[
            "cp",
            &self.dir.path().to_string_lossy(),
            &format!("{container}:{REPO_IN_CONTAINER}"),
        ]);
        // The image's own sources point at a mirror this machine cannot reach.
        in_container(
            container,
            &format!(
                "rm -f /etc/apt/sources.list.d/* && \
                 echo 'deb [trusted=yes] file:{REPO_IN_CONTAINER} ./' >/etc/apt/sources.list"
            ),
        )
        .expect_success("pointing apt at the local repository");
        apt_get(container, "update").expect_success("apt-get update");
    }
}

/// `apt-get -y -q ARGS` in `container`, non-interactive, whatever its outcome. Conffiles a
/// package ships but the admin already has are kept (`--force-confold`), as config management does.
pub fn apt_get(container: &str, args: &str) -> CmdOutput {
    in_container(
        container,
        &format!(
            "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Acquire::Languages=none \
             -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef {args}"
        ),
    )
}

/// `sh -c SCRIPT` in `container` (as root), whatever its outcome.
pub fn in_container(container: &str, script: &str) -> CmdOutput {
    docker(&["exec", container, "sh", "-c", script]).into()
}
