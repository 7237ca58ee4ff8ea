//! `butler tls` as a user meets it, through the real binary with a state directory of its own:
//! the local CA made once and printed, the certificates on disk listed with what is wrong with
//! each, bad input refused without touching a file, and (as root, where the tool exists) the
//! root trusted by the system's own trust store and removed from it again. No Docker needed.
//! openssl (which Debian's ca-certificates depends on) plays the user who brings certificates.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn butler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_butler"))
        .args(args)
        .env_remove("BUTLER_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run butler")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A config whose state directory (and `tls.certs_dir`, when asked) are inside `dir`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("butler.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = \"{}\"\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `openssl req` making a new P-256 key into `key` (then 0600, as a key file should be), with
/// the rest of the arguments.
fn openssl_req(dir: &Path, key: &Path, args: &[&str]) {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
    std::fs::set_permissions(key, PermissionsExt::from_mode(0o600)).unwrap();
}

/// A self-signed certificate for `name` with its key, as `openssl req -x509` makes one.
fn self_signed(dir: &Path, stem: &str, name: &str) {
    openssl_req(
        dir,
        &dir.join(format!("{stem}.key")),
        &[
            "-x509",
            "-out",
            &format!("{stem}.crt"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-days",
            "90",
        ],
    );
}

/// A leaf for `host` signed by the CA in `ca_dir` (root.crt, root.key), written as the local
/// CA's files are: leaf then root in `<host>.crt`, the key in `<host>.key` (0600).
fn signed_leaf(work: &Path, ca_dir: &Path, certs: &Path, host: &str) {
    let ext = work.join("ext.cnf");
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let key = certs.join(format!("{host}.key"));
    let csr = work.join("leaf.csr");
    let leaf = work.join("leaf.crt");
    let (csr, leaf, ext) = (
        csr.to_str().unwrap(),
        leaf.to_str().unwrap(),
        ext.to_str().unwrap(),
    );
    openssl_req(
        work,
        &key,
        &["-new", "-subj", &format!("/CN={host}"), "-out", csr],
    );
    let root_crt = ca_dir.join("root.crt");
    let root_key = ca_dir.join("root.key");
    openssl(
        work,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            root_crt.to_str().unwrap(),
            "-CAkey",
            root_key.to_str().unwrap(),
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            leaf,
        ],
    );
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(leaf).unwrap(),
        std::fs::read_to_string(&root_crt).unwrap()
    );
    std::fs::write(certs.join(format!("{host}.crt")), chain).unwrap();
}

#[test]
fn tls_root_makes_the_local_ca_once_and_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();

    let first = butler(&["tls", "root", "--config", cfg]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let pem = text(&first.stdout);
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE-----\n")
            && pem.ends_with("-----END CERTIFICATE-----\n"),
        "{pem}"
    );
    assert!(
        text(&first.stderr).contains("created a new local CA"),
        "{}",
        text(&first.stderr)
    );

    let ca_dir = dir.path().join("state/tls/local-ca");
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("root.crt")).unwrap(),
        pem
    );
    assert_eq!(mode(&ca_dir.join("root.key")), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&dir.path().join("state/tls")), 0o700);
    // The root is what it says: a CA for ten years, as openssl reads it.
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "basicConstraints,keyUsage",
            "-in",
        ])
        .arg(ca_dir.join("root.crt"))
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(
        shown.contains("devops-butler local CA (")
            && shown.contains("CA:TRUE, pathlen:0")
            && shown.contains("Certificate Sign"),
        "{shown}"
    );

    let again = butler(&["tls", "root", "--config", cfg]);
    assert!(again.status.success());
    assert_eq!(text(&again.stdout), pem, "the root is made once");
    assert!(again.stderr.is_empty(), "{}", text(&again.stderr));

    let json = butler(&["tls", "root", "--config", cfg, "--output", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["pem"], pem.as_str());
    assert_eq!(json["file"], ca_dir.join("root.crt").to_str().unwrap());
    assert!(
        json["subject"]
            .as_str()
            .unwrap()
            .starts_with("CN=devops-butler local CA")
    );
    assert_eq!(json["sha256"].as_str().unwrap().len(), 95);
    // The key is nowhere in what the command prints.
    let key = std::fs::read_to_string(ca_dir.join("root.key")).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    for out in [&first, &again] {
        assert!(!text(&out.stdout).contains(key_line) && !text(&out.stderr).contains(key_line));
    }
}

#[test]
fn tls_list_shows_every_certificate_and_what_is_wrong_with_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    let cfg = config(
        dir.path(),
        &format!("[tls]\ncerts_dir = \"{}\"\n", mine.display()),
    );
    let cfg = cfg.to_str().unwrap();

    let empty = butler(&["tls", "list", "--config", cfg]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(
        text(&empty.stdout).contains("no certificates on disk"),
        "{}",
        text(&empty.stdout)
    );
    assert!(
        !dir.path().join("state/tls").exists(),
        "listing creates nothing"
    );

    assert!(butler(&["tls", "root", "--config", cfg]).status.success());
    let ca_dir = dir.path().join("state/tls/local-ca");
    let certs = dir.path().join("state/tls/certs");
    signed_leaf(dir.path(), &ca_dir, &certs, "shop.localhost");
    // A leaf of another CA (say, a local CA made anew) in the local CA's directory.
    let other_ca = dir.path().join("other-ca");
    std::fs::create_dir(&other_ca).unwrap();
    self_signed(&other_ca, "root", "other-ca.test");
    signed_leaf(dir.path(), &other_ca, &certs, "old.localhost");

    // The operator's own: one good, and one of each mistake.
    self_signed(&mine, "shop.example.com", "shop.example.com");
    self_signed(&mine, "other", "other.example.com");
    std::fs::copy(mine.join("other.crt"), mine.join("wrong.example.com.crt")).unwrap();
    std::fs::copy(mine.join("other.key"), mine.join("wrong.example.com.key")).unwrap();
    std::fs::copy(
        mine.join("other.key"),
        mine.join("mismatch.example.com.key"),
    )
    .unwrap();
    std::fs::copy(
        mine.join("shop.example.com.crt"),
        mine.join("mismatch.example.com.crt"),
    )
    .unwrap();
    std::fs::write(mine.join("garbage.example.com.crt"), "not a certificate\n").unwrap();
    std::fs::copy(mine.join("other.key"), mine.join("garbage.example.com.key")).unwrap();
    std::fs::copy(
        mine.join("shop.example.com.crt"),
        mine.join("lonely.example.com.crt"),
    )
    .unwrap();
    std::fs::remove_file(mine.join("other.crt")).unwrap();
    std::fs::remove_file(mine.join("other.key")).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();

    let out = butler(&["tls", "list", "--config", cfg, "--output", "json"]);
    assert!(
        out.status.success(),
        "a report exits 0: {}",
        text(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = |host: Option<&str>| -> &Value {
        rows.iter()
            .find(|r| r["host"].as_str() == host)
            .unwrap_or_else(|| panic!("no row for {host:?} in {rows:#?}"))
    };
    let root = row(None);
    assert_eq!(
        (root["source"].as_str(), root["state"].as_str()),
        (Some("local-ca-root"), Some("ok"))
    );
    assert!(root["days_left"].as_i64().unwrap() >= 3649);

    let leaf = row(Some("shop.localhost"));
    assert_eq!(
        (leaf["source"].as_str(), leaf["state"].as_str()),
        (Some("local-ca"), Some("ok"))
    );
    assert_eq!(
        leaf["certificate"]["issuer"],
        root["certificate"]["subject"]
    );
    assert_eq!(leaf["certificate"]["chain_len"], 2);
    assert!((29..=30).contains(&leaf["days_left"].as_i64().unwrap()));

    let old = row(Some("old.localhost"));
    assert_eq!(
        (old["source"].as_str(), old["state"].as_str()),
        (Some("local-ca"), Some("renew-due"))
    );
    assert!(
        old["reason"].as_str().unwrap().contains("another root"),
        "{old:#}"
    );

    let good = row(Some("shop.example.com"));
    assert_eq!(
        (good["source"].as_str(), good["state"].as_str()),
        (Some("certs-dir"), Some("ok"))
    );
    assert_eq!(good["certificate"]["sans"][0], "shop.example.com");

    let wanted: [(&str, &str, &str); 4] = [
        (
            "wrong.example.com",
            "wrong.example.com.crt",
            "does not cover wrong.example.com",
        ),
        (
            "mismatch.example.com",
            "mismatch.example.com.key",
            "does not hold the private key",
        ),
        (
            "garbage.example.com",
            "garbage.example.com.crt",
            "no PEM CERTIFICATE",
        ),
        (
            "lonely.example.com",
            "lonely.example.com.key",
            "does not exist",
        ),
    ];
    for (host, file, reason) in wanted {
        let bad = row(Some(host));
        assert_eq!(bad["state"], "invalid", "{bad:#}");
        let why = bad["reason"].as_str().unwrap();
        assert!(why.contains(file) && why.contains(reason), "{host}: {why}");
    }

    let table = butler(&["tls", "list", "--config", cfg]);
    let table = text(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("DAYS LEFT"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("(root)") && l.contains(" ok")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mismatch.example.com") && l.contains("invalid")),
        "{table}"
    );

    // Nothing lost: listing changed no file.
    for (path, bytes) in before {
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{}", path.display());
    }
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, i32, &[&str]); 5] = [
        ("[tls]\nmode = \"on\"\n", 2, &["mode", "`on`", "`auto`"]),
        (
            "[tls.acme]\nca_bundle = \"/nonexistent/ca.pem\"\n",
            2,
            &["tls.acme.ca_bundle", "/nonexistent/ca.pem"],
        ),
        ("[tls.acme]\nemail = \"ops\"\n", 2, &["tls.acme.email"]),
        (
            "[proxy]\nhttps_port = 80\n",
            2,
            &["proxy.https_port", "differ"],
        ),
        (
            "[tls]\ncerts_dir = \"certs\"\n",
            2,
            &["tls.certs_dir", "absolute"],
        ),
    ];
    for (extra, code, wanted) in cases {
        let cfg = config(dir.path(), extra);
        for command in ["root", "list"] {
            let out = butler(&["tls", command, "--config", cfg.to_str().unwrap()]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{extra} {command}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            for want in wanted {
                assert!(stderr.contains(want), "{extra}: {stderr:?} lacks {want:?}");
            }
            assert!(out.stdout.is_empty());
        }
    }
    assert!(
        !dir.path().join("state").exists(),
        "a refused config creates nothing"
    );

    let out = butler(&["tls", "rooot"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("see `butler tls --help`"),
        "{}",
        text(&out.stderr)
    );

    // A local CA whose key was damaged: refused, named, and left for the operator to decide.
    let cfg = config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    assert!(butler(&["tls", "root", "--config", cfg]).status.success());
    let key = dir.path().join("state/tls/local-ca/root.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let damaged = std::fs::read(&key).unwrap();
    let crt = std::fs::read(dir.path().join("state/tls/local-ca/root.crt")).unwrap();
    for command in [
        &["tls", "root", "--config", cfg][..],
        &["tls", "list", "--config", cfg],
    ] {
        let out = butler(command);
        let said = format!("{}{}", text(&out.stderr), text(&out.stdout));
        assert!(
            said.contains("root.key") && said.contains("cannot use"),
            "{command:?}: {said}"
        );
        assert!(!said.contains("AAAA"), "{said}");
    }
    let out = butler(&["tls", "root", "--config", cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("move"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&key).unwrap(), damaged);
    assert_eq!(
        std::fs::read(dir.path().join("state/tls/local-ca/root.crt")).unwrap(),
        crt
    );
}

/// Only root may change the system trust store; anyone else is told so and nothing changes.
#[test]
fn trusting_needs_root() {
    if !nix::unistd::geteuid().is_root() {
        let out = butler(&["tls", "trust"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("sudo butler tls trust"),
            "{}",
            text(&out.stderr)
        );
        return;
    }
    // As root: run the binary as nobody.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o777)).unwrap();
    let cfg = config(dir.path(), "");
    for command in ["trust", "untrust"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_butler"))
            .args(["tls", command, "--config"])
            .arg(&cfg)
            .env_remove("BUTLER_CONFIG")
            .output()
            .expect("setpriv (util-linux)");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("needs root: run `sudo butler tls {command}`")),
            "{stderr}"
        );
    }
    assert!(!dir.path().join("state").exists());
}

/// The real system trust store of this (throwaway, root) machine: after `tls trust` the root is
/// in the bundle every TLS client reads and a leaf it signed verifies against the system store
/// alone; after `tls untrust` neither holds. An anchor already there is put back at the end.
#[test]
fn trust_then_untrust_changes_the_system_bundle() {
    const ANCHOR: &str = "/usr/local/share/ca-certificates/devops-butler-local-ca.crt";
    const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/sbin/update-ca-certificates").exists()
    {
        eprintln!("skipped: needs root and Debian's update-ca-certificates");
        return;
    }
    struct Restore(Option<Vec<u8>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            match &self.0 {
                Some(bytes) => std::fs::write(ANCHOR, bytes).unwrap(),
                None => {
                    let _ = std::fs::remove_file(ANCHOR);
                }
            }
            let _ = Command::new("update-ca-certificates").output();
        }
    }
    let _restore = Restore(std::fs::read(ANCHOR).ok());

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let out = butler(&["tls", "trust", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(ANCHOR) && text(&out.stdout).contains("update-ca-certificates"),
        "{}",
        text(&out.stdout)
    );
    let root = std::fs::read_to_string(dir.path().join("state/tls/local-ca/root.crt")).unwrap();
    let body: String = root.lines().filter(|l| !l.starts_with("-----")).collect();
    let in_bundle = || {
        let bundle: String = std::fs::read_to_string(BUNDLE)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        bundle.contains(&body)
    };
    assert!(in_bundle(), "the root is in {BUNDLE}");
    assert_eq!(std::fs::read_to_string(ANCHOR).unwrap(), root);

    // A leaf the local CA signed verifies against the system store alone.
    let certs = dir.path().join("state/tls/certs");
    signed_leaf(
        dir.path(),
        &dir.path().join("state/tls/local-ca"),
        &certs,
        "shop.localhost",
    );
    let verify = || {
        Command::new("openssl")
            .args(["verify", "-CAfile", BUNDLE])
            .arg(dir.path().join("leaf.crt"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        verify(),
        "a local-CA leaf verifies once the root is trusted"
    );

    let out = butler(&["tls", "untrust"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed"),
        "{}",
        text(&out.stdout)
    );
    assert!(!Path::new(ANCHOR).exists());
    assert!(!in_bundle(), "the root is gone from {BUNDLE}");
    assert!(!verify(), "and its leaves no longer verify");

    let again = butler(&["tls", "untrust", "--output", "json"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let json: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["removed"], false);
}
