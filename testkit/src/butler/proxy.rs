//! What the proxy resilience tests (tests/proxy_resilience.rs, tests/proxy_burst.rs) read from a
//! butler: template overrides, the nginx container's view of the config, and the config history.

use std::path::{Path, PathBuf};

use super::ButlerProcess;
use crate::{CmdOutput, docker};

impl ButlerProcess {
    /// The directory this butler reads template overrides from (it does not exist until written to).
    pub fn templates_dir(&self) -> PathBuf {
        self._dir.path().join("templates")
    }

    /// Installs a template override (`site.conf`, `nginx.conf`, ...) atomically: the butler reads
    /// the directory on every round and must never see half a file.
    pub fn write_template(&self, name: &str, contents: &str) {
        let dir = self.templates_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).unwrap();
        std::fs::rename(&partial, dir.join(name)).unwrap();
    }

    /// Removes a template override, so the shipped template is used again.
    pub fn remove_template(&self, name: &str) {
        std::fs::remove_file(self.templates_dir().join(name)).unwrap();
    }

    /// `butler ARGS --output json --config <this butler's config>`: what it said, and its stdout
    /// parsed (panics naming the command when stdout is not JSON).
    pub fn cli_json(&self, binary: &Path, args: &[&str]) -> (CmdOutput, serde_json::Value) {
        let mut argv = args.to_vec();
        argv.extend(["--output", "json"]);
        let out = self.cli(binary, &argv);
        let json = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`butler {}` printed no JSON ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                argv.join(" "),
                out.code,
                out.stdout,
                out.stderr
            )
        });
        (out, json)
    }

    /// `butler proxy history --output json`, which must succeed.
    pub fn history(&self, binary: &Path) -> ConfigHistory {
        let (out, json) = self.cli_json(binary, &["proxy", "history", "--limit", "1000"]);
        assert!(out.success(), "butler proxy history failed: {out:?}");
        let versions = json["versions"]
            .as_array()
            .unwrap_or_else(|| panic!("no versions in {json}"))
            .iter()
            .map(|v| ConfigVersionRow {
                id: v["id"].as_i64().expect("version id"),
                hash: v["hash"].as_str().unwrap_or_default().to_owned(),
                applied: v["applied"].as_bool().expect("version applied"),
                cause: v["cause"].as_str().unwrap_or_default().to_owned(),
                summary: v["summary"].as_str().unwrap_or_default().to_owned(),
                error: v["error"].as_str().map(str::to_owned),
            })
            .collect();
        ConfigHistory {
            versions,
            pinned: json["pinned"].as_i64(),
        }
    }

    /// The id of this butler's nginx container, "" when there is none.
    pub fn nginx_id(&self) -> String {
        let out = docker(&["inspect", "-f", "{{.Id}}", &self.nginx]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The config nginx serves, as nginx itself reads it: `nginx -T` on the live tree, every
    /// included file with its name.
    pub fn live_nginx_config(&self) -> String {
        let out: CmdOutput = docker(&[
            "exec",
            &self.nginx,
            "nginx",
            "-T",
            "-q",
            "-c",
            "/etc/butler-nginx/live/nginx.conf",
        ])
        .into();
        out.expect_success("nginx -T in the butler's nginx container")
            .stdout
    }

    /// The routes data of the live version (the data path's `routes.txt`), `None` on the reload
    /// path, whose trees have none.
    pub fn live_routes_data(&self) -> Option<String> {
        let out: CmdOutput = docker(&[
            "exec",
            &self.nginx,
            "cat",
            "/etc/butler-nginx/live/routes.txt",
        ])
        .into();
        out.success().then_some(out.stdout)
    }

    /// The config version the nginx container serves: the hash its `live` link points to.
    pub fn live_hash(&self) -> String {
        let out: CmdOutput =
            docker(&["exec", &self.nginx, "readlink", "/etc/butler-nginx/live"]).into();
        let target = out
            .expect_success("readlink live in the nginx container")
            .stdout;
        target
            .trim()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned()
    }

    /// Every file under the nginx container's config root (live, staged and old versions alike)
    /// that contains `needle`, as `grep -rlF` lists them.
    pub fn config_files_containing(&self, needle: &str) -> Vec<String> {
        let out: CmdOutput = docker(&[
            "exec",
            &self.nginx,
            "grep",
            "-rlF",
            "--",
            needle,
            "/etc/butler-nginx",
        ])
        .into();
        // grep: 0 = found, 1 = nothing found, anything else is an error.
        assert!(out.code == 0 || out.code == 1, "grep failed: {out:?}");
        out.stdout.lines().map(str::to_owned).collect()
    }
}

/// `butler proxy history`, newest version first.
#[derive(Debug, Clone)]
pub struct ConfigHistory {
    pub versions: Vec<ConfigVersionRow>,
    pub pinned: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ConfigVersionRow {
    pub id: i64,
    pub hash: String,
    pub applied: bool,
    pub cause: String,
    pub summary: String,
    pub error: Option<String>,
}

impl ConfigHistory {
    /// The applied versions, newest first.
    pub fn applied(&self) -> Vec<&ConfigVersionRow> {
        self.versions.iter().filter(|v| v.applied).collect()
    }
    pub fn newest_id(&self) -> i64 {
        self.versions.first().map_or(0, |v| v.id)
    }
}
