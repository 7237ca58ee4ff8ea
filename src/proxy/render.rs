//! From a `Plan` to the files of one nginx config tree (nginx.conf, sites/, html/), with tera.
//! Pure apart from reading template overrides once at load; deterministic, so the tree's hash names
//! a config version. Staging, `nginx -t`, upload and reload belong to the apply edge, not here.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tera::{Context, ErrorKind, Tera};

use crate::proxy::model::{Plan, Route};
use crate::proxy::plan::RESERVED_APP_NAMES;
use crate::proxy::routes_data::RoutesData;
use crate::proxy::sanitize::{self, quote};

pub const NGINX_CONF: &str = "nginx.conf";
pub const DEFAULT_SITE: &str = "default.conf";
pub const SITE: &str = "site.conf";
pub const INDEX_PAGE: &str = "index.html";
pub const ERROR_PAGE: &str = "error-page.html";
pub const DATA_SITE: &str = "dynamic.conf";
/// The data nginx routes by on the data path, in the tree like any file so that it is versioned,
/// validated and restored with the rest (see `routes_data`).
pub const DATA_FILE: &str = "routes.txt";
/// The data path's Lua code, in the tree under this path.
pub const DATA_LUA: &str = "lua/butler.lua";

/// The shipped templates, by the file name an override must have to replace one.
const SHIPPED: [(&str, &str); 6] = [
    (NGINX_CONF, include_str!("../../templates/nginx.conf")),
    (DEFAULT_SITE, include_str!("../../templates/default.conf")),
    (SITE, include_str!("../../templates/site.conf")),
    (INDEX_PAGE, include_str!("../../templates/index.html")),
    (ERROR_PAGE, include_str!("../../templates/error-page.html")),
    (DATA_SITE, include_str!("../../templates/dynamic.conf")),
];

/// Not a template: the code is the same for every tree.
const LUA_CODE: &str = include_str!("../../templates/butler.lua");

/// Overriding any of these changes the shape of the config (server blocks per app), which the
/// data path does without: with such an override the butler renders for the reload path.
pub const STRUCTURAL_TEMPLATES: [&str; 3] = [NGINX_CONF, DEFAULT_SITE, SITE];

/// Rendered path of the default server; sorts before every app file (app names cannot be
/// "000-default": the planner reserves it).
pub const DEFAULT_SITE_PATH: &str = "sites/000-default.conf";

/// How long the 502/503/504 pages wait before reloading themselves.
const ERROR_PAGE_RELOAD_SECONDS: u32 = 5;

/// The error pages nginx shows for its own failures, as (status, title, explanation).
const ERROR_PAGES: [(u16, &str, &str); 3] = [
    (
        502,
        "This app is not answering",
        "The proxy found the app, but the app refused or dropped the connection. It is probably \
         starting or restarting.",
    ),
    (
        503,
        "This app is not available right now",
        "The proxy has no running instance of this app to send your request to. It may be \
         restarting or being deployed.",
    ),
    (
        504,
        "This app is taking too long",
        "The app did not answer in time. It may be busy, or still starting.",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderSettings {
    /// Where the tree is served from inside the nginx container (a symlink to the live version).
    pub config_root: String,
    /// The port nginx listens on inside its container.
    pub listen_port: u16,
    /// The port users reach the proxy on (`proxy.http_port`, published to `listen_port`): the
    /// directory page's links use it.
    #[serde(default = "default_public_port")]
    pub public_port: u16,
    /// Shown on the app directory page.
    pub domain: String,
    /// Render for the data path (nginx with the Lua module): one server block routing by the
    /// data in [`DATA_FILE`], which changes without a reload. Off: a server block per app.
    #[serde(default)]
    pub data_path: bool,
}

fn default_public_port() -> u16 {
    80
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            config_root: "/etc/butler-nginx/live".into(),
            listen_port: 80,
            public_port: 80,
            domain: "localhost".into(),
            data_path: false,
        }
    }
}

/// One rendered config tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedConfig {
    /// Path relative to the config root → file contents.
    pub files: BTreeMap<String, String>,
    /// SHA-256 (hex) over every path and content: the config's version id.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "cannot read template override {path}: {source}; fix its permissions, or remove it to \
         use the shipped template"
    )]
    ReadOverride { path: PathBuf, source: io::Error },
    #[error("template {origin} does not parse: {reason}; fix it{hint}")]
    Parse {
        origin: String,
        reason: String,
        hint: &'static str,
    },
    #[error("template {origin} failed to render {what}: {reason}; fix it{hint}")]
    Render {
        origin: String,
        what: String,
        reason: String,
        hint: &'static str,
    },
    #[error("render setting {setting}={value} is not valid: {reason}; fix it in the configuration", value = quote(.value))]
    InvalidSetting {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "route {app} holds a value that did not pass validation ({what}); routes must come \
         from proxy::plan, which validates every value",
        app = quote(.app)
    )]
    Unvalidated { app: String, what: String },
}

/// The compiled templates: parsed once, rendered many times.
#[derive(Clone)]
pub struct Templates {
    tera: Tera,
    /// Template name → the override file that replaced the shipped template.
    overrides: BTreeMap<&'static str, PathBuf>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads the shipped templates, each replaced by a file of the same name in `override_dir`
    /// when there is one. A missing `override_dir` means no overrides (the usual case: the
    /// directory exists only when an operator created it); other files in it are ignored.
    pub fn load(override_dir: Option<&Path>) -> Result<Templates, RenderError> {
        let mut tera = Tera::new();
        let mut overrides = BTreeMap::new();
        for (name, shipped) in SHIPPED {
            let over = match override_dir {
                Some(dir) => read_override(&dir.join(name))?,
                None => None,
            };
            let (content, origin, hint) = match &over {
                Some((path, text)) => (text.as_str(), path.display().to_string(), OVERRIDE_HINT),
                None => (shipped, format!("templates/{name} (shipped)"), ""),
            };
            tera.add_raw_template(name, content)
                .map_err(|e| RenderError::Parse {
                    origin,
                    reason: describe(&e),
                    hint,
                })?;
            if let Some((path, _)) = over {
                overrides.insert(name, path);
            }
        }
        Ok(Templates { tera, overrides })
    }

    /// Template name → the override file in use, for logs and `butler config check`.
    pub fn overrides(&self) -> &BTreeMap<&'static str, PathBuf> {
        &self.overrides
    }

    /// Whether these templates can render for the data path: none of the structural ones is
    /// overridden.
    pub fn allow_data_path(&self) -> bool {
        !STRUCTURAL_TEMPLATES
            .iter()
            .any(|name| self.overrides.contains_key(name))
    }

    fn render(&self, name: &str, what: &str, ctx: &Context) -> Result<String, RenderError> {
        self.tera.render(name, ctx).map_err(|e| {
            let (origin, hint) = match self.overrides.get(name) {
                Some(p) => (p.display().to_string(), OVERRIDE_HINT),
                None => (format!("templates/{name} (shipped)"), ""),
            };
            RenderError::Render {
                origin,
                what: what.to_string(),
                reason: describe(&e),
                hint,
            }
        })
    }
}

const OVERRIDE_HINT: &str = ", or remove the override to use the shipped template";

/// `Ok(None)` when there is no such file, including when the override directory does not exist.
fn read_override(path: &Path) -> Result<Option<(PathBuf, String)>, RenderError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some((path.to_path_buf(), text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RenderError::ReadOverride {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// tera's own report spans several lines with the source quoted; a one-line form fits a log line
/// and an error message.
fn describe(e: &tera::Error) -> String {
    let text = match e.kind() {
        ErrorKind::SyntaxError(r) | ErrorKind::RenderingError(r) => format!(
            "line {}, column {}: {}",
            r.span().start_line,
            r.span().start_col + 1,
            r.message()
        ),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders the whole config tree for `plan`. Only `Route` data reaches the config files, and it is
/// checked again here so that a hand-built `Plan` cannot smuggle an unvalidated string in.
pub fn render(
    plan: &Plan,
    settings: &RenderSettings,
    templates: &Templates,
) -> Result<RenderedConfig, RenderError> {
    validate_settings(settings)?;
    for route in &plan.routes {
        validate_route(route)?;
    }

    let mut files = BTreeMap::new();
    let port_suffix = match settings.public_port {
        80 => String::new(),
        p => format!(":{p}"),
    };

    // On the data path no server block names an app's host: the hash sizes stay the same as apps
    // come and go, so that a new host is not a change to nginx.conf (which would cost a reload).
    let named_routes = if settings.data_path {
        &[][..]
    } else {
        &plan.routes[..]
    };
    let longest = named_routes
        .iter()
        .flat_map(|r| &r.hosts)
        .map(String::len)
        .chain(std::iter::once("_".len()))
        .max()
        .unwrap_or(1);
    let name_count: usize = named_routes.iter().map(|r| r.hosts.len()).sum::<usize>() + 1;
    let mut ctx = Context::new();
    ctx.insert("config_root", &settings.config_root);
    ctx.insert("listen_port", &settings.listen_port);
    ctx.insert("longest_server_name", &longest);
    ctx.insert("server_name_count", &name_count);
    ctx.insert("server_names_hash_bucket_size", &hash_bucket_size(longest));
    ctx.insert("server_names_hash_max_size", &hash_max_size(name_count));
    ctx.insert("data_path", &settings.data_path);
    ctx.insert("data_file", DATA_FILE);
    ctx.insert("control_token_file", crate::nginx::CONTROL_TOKEN_FILE);
    files.insert(
        NGINX_CONF.to_string(),
        templates.render(NGINX_CONF, "nginx.conf", &ctx)?,
    );

    let mut base = Context::new();
    base.insert("config_root", &settings.config_root);
    base.insert("listen_port", &settings.listen_port);
    if settings.data_path {
        base.insert("control_port", &crate::nginx::CONTROL_PORT);
        files.insert(
            DEFAULT_SITE_PATH.to_string(),
            templates.render(DATA_SITE, DEFAULT_SITE_PATH, &base)?,
        );
        files.insert(DATA_LUA.to_string(), LUA_CODE.to_string());
    } else {
        files.insert(
            DEFAULT_SITE_PATH.to_string(),
            templates.render(DEFAULT_SITE, DEFAULT_SITE_PATH, &base)?,
        );
    }
    let mut data = RoutesData::default();

    let mut index_apps = Vec::with_capacity(plan.routes.len());
    for route in &plan.routes {
        if settings.data_path {
            data.add_route(route);
        }
        let path = format!("sites/{}.conf", route.app);
        let servers: Vec<SiteServer> = route
            .servers
            .iter()
            .map(|s| SiteServer {
                address: std::net::SocketAddr::new(s.ip, s.port).to_string(),
                port_reason: s.port_reason.text(),
            })
            .collect();
        let mut ctx = base.clone();
        ctx.insert("app", &route.app);
        ctx.insert("upstream", &format!("app_{}", route.app));
        ctx.insert("hosts", &route.hosts);
        ctx.insert("servers", &servers);
        if let Some(down) = &route.down {
            ctx.insert(
                "down",
                &serde_json::json!({ "state": down.state(), "since": down.since }),
            );
        }
        if !settings.data_path {
            let text = templates.render(SITE, &path, &ctx)?;
            files.insert(path, text);
        }
        if let Some(down) = &route.down {
            let path = format!("html/down-{}.html", route.app);
            let mut ctx = Context::new();
            ctx.insert("status", &503);
            ctx.insert("title", &format!("{} is {}", route.app, down.state()));
            ctx.insert("explanation", &down_explanation(down));
            ctx.insert("reload_seconds", &ERROR_PAGE_RELOAD_SECONDS);
            let text = templates.render(ERROR_PAGE, &path, &ctx)?;
            if settings.data_path {
                data.add_down_page(&route.app, text);
            } else {
                files.insert(path, text);
            }
        }

        index_apps.push(IndexApp {
            name: &route.app,
            urls: route
                .hosts
                .iter()
                .map(|h| format!("http://{h}{port_suffix}/"))
                .collect(),
            servers: route.servers.len(),
            state: route.down.as_ref().map(|d| d.state()),
        });
    }

    let mut ctx = Context::new();
    ctx.insert("domain", &settings.domain);
    ctx.insert("apps", &index_apps);
    let index = templates.render(INDEX_PAGE, "html/index.html", &ctx)?;
    if settings.data_path {
        data.index = Some(index);
        files.insert(DATA_FILE.to_string(), data.encode());
    } else {
        files.insert("html/index.html".to_string(), index);
    }

    for (status, title, explanation) in ERROR_PAGES {
        let path = format!("html/{status}.html");
        let mut ctx = Context::new();
        ctx.insert("status", &status);
        ctx.insert("title", title);
        ctx.insert("explanation", explanation);
        ctx.insert("reload_seconds", &ERROR_PAGE_RELOAD_SECONDS);
        let text = templates.render(ERROR_PAGE, &path, &ctx)?;
        files.insert(path, text);
    }

    let hash = tree_hash(&files);
    Ok(RenderedConfig { files, hash })
}

#[derive(Serialize)]
struct SiteServer {
    address: String,
    port_reason: String,
}

#[derive(Serialize)]
struct IndexApp<'a> {
    name: &'a str,
    urls: Vec<String>,
    servers: usize,
    /// `down` or `stopped` for an app whose containers have all exited.
    state: Option<&'static str>,
}

/// What an app's 503 page says when its containers have all exited.
fn down_explanation(down: &crate::proxy::Down) -> String {
    let what = down.describe();
    if down.stopped {
        format!(
            "Its {what}, and it has not been started again. The proxy serves it again as soon as \
             a container of it runs."
        )
    } else {
        format!(
            "Its {what}, and nothing restarted it. `butler health` and the dashboard show it as \
             down; the proxy serves it again as soon as a container of it runs."
        )
    }
}

/// At least the next power of two >= longest + 2 (nginx's rule for one name), and room for two
/// of the longest entries (name + 2 length bytes + a pointer, pointer-aligned, plus the bucket's
/// end marker): with room for only one, nginx cannot build the hash for a few hundred names
/// without a collision and warns "could not build optimal server_names_hash" on every reload.
fn hash_bucket_size(longest_name: usize) -> usize {
    let entry = (longest_name + 2 + 8).next_multiple_of(8);
    (2 * entry + 8).next_power_of_two().max(64)
}

/// Generous, so that nginx can always build its server-name hash: it only allocates the size it
/// finds it needs, and failing to build the hash stops nginx from loading the config.
fn hash_max_size(names: usize) -> usize {
    (names * 4).next_power_of_two().max(1024)
}

/// The hash of everything in a tree but its routes data: two trees with the same structure hash
/// differ only in data, which the data path applies without a reload.
pub fn structure_hash(files: &BTreeMap<String, String>) -> String {
    hash_of(files.iter().filter(|(path, _)| path.as_str() != DATA_FILE))
}

/// Length-prefixed so that no two different trees hash alike (a path cannot run into a content).
fn tree_hash(files: &BTreeMap<String, String>) -> String {
    hash_of(files.iter())
}

fn hash_of<'a>(files: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut h = Sha256::new();
    for (path, content) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    hex::encode(h.finalize())
}

fn validate_settings(s: &RenderSettings) -> Result<(), RenderError> {
    let invalid = |setting, reason: &str| RenderError::InvalidSetting {
        setting,
        value: s.config_root.clone(),
        reason: reason.to_string(),
    };
    let root = &s.config_root;
    if !root.starts_with('/') {
        return Err(invalid("config_root", "it must be an absolute path"));
    }
    if root.len() > 1 && root.ends_with('/') {
        return Err(invalid("config_root", "it must not end with '/'"));
    }
    if !root
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "config_root",
            "only letters, digits, '/', '.', '_' and '-' are allowed in it",
        ));
    }
    if root.split('/').any(|part| part == "..") {
        return Err(invalid("config_root", "it must not contain '..'"));
    }
    for (setting, port) in [
        ("listen_port", s.listen_port),
        ("public_port", s.public_port),
    ] {
        if port == 0 {
            return Err(RenderError::InvalidSetting {
                setting,
                value: "0".into(),
                reason: "a port is 1 to 65535".into(),
            });
        }
    }
    Ok(())
}

fn validate_route(r: &Route) -> Result<(), RenderError> {
    let unvalidated = |what: String| RenderError::Unvalidated {
        app: r.app.clone(),
        what,
    };
    if !sanitize::is_app_name(&r.app) || RESERVED_APP_NAMES.contains(&r.app.as_str()) {
        return Err(unvalidated("its app name".into()));
    }
    if r.hosts.is_empty() {
        return Err(unvalidated("it has no host".into()));
    }
    for h in &r.hosts {
        let valid = |checked: Result<String, _>| checked.as_deref() == Ok(h.as_str());
        if !valid(sanitize::validate_host(h))
            && !valid(sanitize::validate_full_name_host(h, &r.app))
        {
            return Err(unvalidated(format!("host {}", quote(h))));
        }
    }
    match &r.down {
        None if r.servers.is_empty() => {
            return Err(unvalidated("its upstream has no server".into()));
        }
        Some(_) if !r.servers.is_empty() => {
            return Err(unvalidated("it is down but has servers".into()));
        }
        Some(down) => {
            let plain_time = |t: &String| {
                t.len() == "2026-01-01 00:00:00 UTC".len()
                    && t.bytes()
                        .all(|b| b.is_ascii_digit() || b" :-UTC".contains(&b))
            };
            if !(down.container_name.is_empty() || sanitize::is_app_name(&down.container_name))
                || !down.since.as_ref().is_none_or(plain_time)
            {
                return Err(unvalidated("how it ended".into()));
            }
        }
        None => {}
    }
    if r.servers.iter().any(|s| s.port == 0) {
        return Err(unvalidated("a server has port 0".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::proxy::model::UpstreamServer;
    use crate::proxy::ports::PortReason;

    fn route(app: &str, hosts: &[&str], servers: usize) -> Route {
        Route {
            app: app.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            servers: (0..servers)
                .map(|i| UpstreamServer {
                    container_id: format!("{app}-{i}"),
                    container_name: format!("{app}-{i}"),
                    ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 2) as u8)),
                    port: 8080,
                    port_reason: PortReason::OnlyExposed,
                    deployment: None,
                })
                .collect(),
            down: None,
        }
    }

    fn shipped() -> Templates {
        Templates::load(None).expect("shipped templates parse")
    }

    fn one_app_plan() -> Plan {
        Plan {
            routes: vec![route("web", &["web.localhost", "www.example.com"], 2)],
            problems: vec![],
        }
    }

    fn down_route(app: &str) -> Route {
        Route {
            down: Some(crate::proxy::Down {
                container_name: app.into(),
                exit_code: 137,
                oom_killed: true,
                stopped: false,
                since: Some("2026-12-02 11:40:20 UTC".into()),
            }),
            ..route(app, &[&format!("{app}.localhost")], 0)
        }
    }

    fn data_path() -> RenderSettings {
        RenderSettings {
            data_path: true,
            ..RenderSettings::default()
        }
    }

    #[test]
    fn on_the_data_path_apps_coming_and_going_change_only_the_routes_data() {
        let plans = [
            Plan::default(),
            one_app_plan(),
            Plan {
                routes: vec![route("web", &["web.localhost", "www.example.com"], 3)],
                problems: vec![],
            },
            Plan {
                routes: vec![
                    down_route("shop"),
                    route("a-much-longer-app-name-than-before", &["x.localhost"], 1),
                ],
                problems: vec![],
            },
        ];
        let rendered: Vec<RenderedConfig> = plans
            .iter()
            .map(|p| render(p, &data_path(), &shipped()).unwrap())
            .collect();
        let structures: BTreeSet<String> =
            rendered.iter().map(|r| structure_hash(&r.files)).collect();
        assert_eq!(structures.len(), 1, "the structure changed with the routes");
        let hashes: BTreeSet<&str> = rendered.iter().map(|r| r.hash.as_str()).collect();
        assert_eq!(hashes.len(), plans.len(), "every plan is its own version");
        for out in &rendered {
            let paths: Vec<&str> = out.files.keys().map(String::as_str).collect();
            assert_eq!(
                paths,
                [
                    "html/502.html",
                    "html/503.html",
                    "html/504.html",
                    "lua/butler.lua",
                    "nginx.conf",
                    "routes.txt",
                    "sites/000-default.conf",
                ],
                "no file per app on the data path"
            );
        }
        // The reload path's trees differ in structure as apps come and go.
        let reload: BTreeSet<String> = plans
            .iter()
            .map(|p| {
                structure_hash(
                    &render(p, &RenderSettings::default(), &shipped())
                        .unwrap()
                        .files,
                )
            })
            .collect();
        assert_eq!(reload.len(), plans.len());
    }

    #[test]
    fn the_routes_data_names_every_host_and_server_and_carries_the_pages() {
        let plan = Plan {
            routes: vec![down_route("shop"), route("web", &["web.localhost"], 2)],
            problems: vec![],
        };
        let out = render(&plan, &data_path(), &shipped()).unwrap();
        let data = &out.files[DATA_FILE];
        assert!(
            data.starts_with("butler-routes 1\nupstream web 10.0.0.2:8080 10.0.0.3:8080\n"),
            "{data}"
        );
        assert!(
            data.contains("\nhost shop.localhost shop\nhost web.localhost web\n"),
            "{data}"
        );
        assert!(data.contains("\ndown shop "), "{data}");
        assert!(
            data.contains("out of memory"),
            "the down page says how it ended: {data}"
        );
        assert!(data.contains("\nindex "), "{data}");
        assert!(data.ends_with("end\n"), "{data}");
        let conf = &out.files[NGINX_CONF];
        assert!(conf.contains("load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"));
        assert!(conf.contains(crate::nginx::CONTROL_TOKEN_FILE));
        let site = &out.files[DEFAULT_SITE_PATH];
        assert!(site.contains("balancer_by_lua_block"), "{site}");
        assert!(
            site.contains(&format!("listen {};", crate::nginx::CONTROL_PORT)),
            "{site}"
        );
    }

    #[test]
    fn a_structural_override_keeps_the_reload_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Templates::load(Some(dir.path())).unwrap().allow_data_path());
        std::fs::write(dir.path().join(INDEX_PAGE), "<p>{{ domain }}</p>").unwrap();
        assert!(Templates::load(Some(dir.path())).unwrap().allow_data_path());
        std::fs::write(dir.path().join(SITE), "server { listen 80; }").unwrap();
        assert!(!Templates::load(Some(dir.path())).unwrap().allow_data_path());
    }

    #[test]
    fn a_down_app_answers_503_with_a_page_saying_since_when() {
        let plan = Plan {
            routes: vec![down_route("shop"), route("web", &["web.localhost"], 1)],
            problems: vec![],
        };
        let out = render(&plan, &RenderSettings::default(), &shipped()).unwrap();
        let site = &out.files["sites/shop.conf"];
        assert!(!site.contains("upstream"), "{site}");
        assert!(site.contains("return 503;"), "{site}");
        assert!(
            site.contains("error_page 503 /__butler/down-shop.html;"),
            "{site}"
        );
        assert!(
            site.contains("location = /.well-known/butler-route"),
            "{site}"
        );
        let page = &out.files["html/down-shop.html"];
        assert!(page.contains("shop is down"), "{page}");
        assert!(
            page.contains(
                "exited with code 137 (killed, out of memory) at 2026-12-02 11:40:20 UTC"
            ),
            "{page}"
        );
        assert!(out.files["html/index.html"].contains("down: no container of it is running"));
        assert!(out.files["sites/web.conf"].contains("upstream app_web"));
    }

    #[test]
    fn a_down_route_is_only_rendered_as_validated() {
        let mut with_servers = down_route("shop");
        with_servers.servers = route("shop", &["shop.localhost"], 1).servers;
        let mut odd_time = down_route("shop");
        odd_time.down.as_mut().unwrap().since = Some("<script>".into());
        for bad in [with_servers, odd_time] {
            let plan = Plan {
                routes: vec![bad],
                problems: vec![],
            };
            assert!(matches!(
                render(&plan, &RenderSettings::default(), &shipped()),
                Err(RenderError::Unvalidated { .. })
            ));
        }
    }

    #[test]
    fn renders_the_whole_tree() {
        let out = render(&one_app_plan(), &RenderSettings::default(), &shipped()).unwrap();
        let paths: Vec<_> = out.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "html/502.html",
                "html/503.html",
                "html/504.html",
                "html/index.html",
                "nginx.conf",
                "sites/000-default.conf",
                "sites/web.conf"
            ]
        );
        let site = &out.files["sites/web.conf"];
        assert!(site.contains("upstream app_web {"), "{site}");
        assert!(
            site.contains("server 10.0.0.2:8080 max_fails=1 fail_timeout=3s;"),
            "{site}"
        );
        assert!(
            site.contains("server 10.0.0.3:8080 max_fails=1 fail_timeout=3s;"),
            "{site}"
        );
        assert!(site.contains("keepalive 16;"), "{site}");
        assert!(
            site.contains("server_name web.localhost www.example.com;"),
            "{site}"
        );
        assert!(site.contains("proxy_pass http://app_web;"), "{site}");
        assert!(site.contains("proxy_connect_timeout 500ms;"), "{site}");
        assert!(
            site.contains("proxy_next_upstream error timeout;"),
            "{site}"
        );
        let main = &out.files["nginx.conf"];
        assert!(main.contains("include sites/*.conf;"), "{main}");
        assert!(!main.contains("daemon"), "{main}");
        assert!(!main.contains("\nuser "), "{main}");
        let index = &out.files["html/index.html"];
        assert!(
            index.contains("href=\"http://www.example.com/\""),
            "{index}"
        );
        assert_eq!(out.hash.len(), 64);
    }

    #[test]
    fn ipv6_servers_are_bracketed() {
        let mut plan = one_app_plan();
        plan.routes[0].servers[0].ip = "fd00::2".parse().unwrap();
        let out = render(&plan, &RenderSettings::default(), &shipped()).unwrap();
        assert!(out.files["sites/web.conf"].contains("server [fd00::2]:8080 "));
    }

    #[test]
    fn a_non_default_port_is_in_listen_and_the_public_one_in_links() {
        let s = RenderSettings {
            listen_port: 8081,
            public_port: 8080,
            ..RenderSettings::default()
        };
        let out = render(&one_app_plan(), &s, &shipped()).unwrap();
        assert!(out.files["sites/web.conf"].contains("listen 8081;"));
        assert!(out.files["sites/000-default.conf"].contains("listen 8081 default_server;"));
        assert!(out.files["html/index.html"].contains("http://web.localhost:8080/"));
        assert!(!out.files["html/index.html"].contains(":8081"));
    }

    #[test]
    fn the_hash_bucket_grows_with_the_longest_name() {
        // (longest name, bucket): two entries of align8(len + 10) plus an 8-byte end marker.
        let cases = [
            (1, 64),
            (14, 64),
            (15, 128),
            (46, 128),
            (47, 256),
            (110, 256),
            (111, 512),
            (253, 1024),
        ];
        for (longest, want) in cases {
            assert_eq!(hash_bucket_size(longest), want, "longest {longest}");
        }
        let long = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(63));
        let plan = Plan {
            routes: vec![route("web", &["web.localhost", &long], 1)],
            problems: vec![],
        };
        let out = render(&plan, &RenderSettings::default(), &shipped()).unwrap();
        assert!(out.files["nginx.conf"].contains("server_names_hash_bucket_size 512;"));
    }

    #[test]
    fn the_same_plan_renders_byte_identical_files() {
        let a = render(&one_app_plan(), &RenderSettings::default(), &shipped()).unwrap();
        let b = render(&one_app_plan(), &RenderSettings::default(), &shipped()).unwrap();
        assert_eq!(a, b);
        let mut other = one_app_plan();
        other.routes[0].servers[1].port = 8081;
        let c = render(&other, &RenderSettings::default(), &shipped()).unwrap();
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn renders_a_thousand_apps() {
        let routes: Vec<Route> = (0..1000)
            .map(|i| {
                let app = format!("app-{i:04}");
                let own = format!("{app}.localhost");
                let extra = format!("{app}.example.com");
                route(&app, &[&own, &extra], 1 + i % 3)
            })
            .collect();
        let plan = Plan {
            routes,
            problems: vec![],
        };
        let out = render(&plan, &RenderSettings::default(), &shipped()).unwrap();
        // 1,000 sites + default + nginx.conf + index + 3 error pages.
        assert_eq!(out.files.len(), 1006);
        assert!(
            out.files["sites/app-0999.conf"]
                .contains("server_name app-0999.localhost app-0999.example.com;")
        );
        assert_eq!(out.files["html/index.html"].matches("<li>").count(), 1000);
        assert!(out.files["nginx.conf"].contains("server_names_hash_max_size 8192;"));
    }

    #[test]
    fn a_hand_built_plan_with_unvalidated_values_is_refused() {
        let cases: Vec<Route> = vec![
            route("web; }", &["web.localhost"], 1),
            route("Web", &["web.localhost"], 1),
            route("000-default", &["web.localhost"], 1),
            route("web", &["web.localhost; }"], 1),
            route("web", &["Web.localhost"], 1),
            route("web", &[], 1),
            route("web", &["web.localhost"], 0),
        ];
        for r in cases {
            let plan = Plan {
                routes: vec![r.clone()],
                problems: vec![],
            };
            let err = render(&plan, &RenderSettings::default(), &shipped()).unwrap_err();
            assert!(
                matches!(err, RenderError::Unvalidated { .. }),
                "{r:?}: {err}"
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let roots = [
            "relative/path",
            "/etc/x/",
            "/etc/x; }",
            "/etc/../x",
            "/etc/x y",
        ];
        for root in roots {
            let s = RenderSettings {
                config_root: root.into(),
                ..RenderSettings::default()
            };
            let err = render(&one_app_plan(), &s, &shipped()).unwrap_err();
            assert!(
                matches!(
                    err,
                    RenderError::InvalidSetting {
                        setting: "config_root",
                        ..
                    }
                ),
                "{root}: {err}"
            );
        }
        let s = RenderSettings {
            listen_port: 0,
            ..RenderSettings::default()
        };
        assert!(render(&one_app_plan(), &s, &shipped()).is_err());
    }

    #[test]
    fn the_directory_page_escapes_what_it_shows() {
        let s = RenderSettings {
            domain: "<script>x</script>".into(),
            ..RenderSettings::default()
        };
        let out = render(&one_app_plan(), &s, &shipped()).unwrap();
        let index = &out.files["html/index.html"];
        assert!(!index.contains("<script>x"), "{index}");
        assert!(index.contains("&lt;script&gt;x"), "{index}");
    }

    #[test]
    fn an_override_replaces_the_shipped_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "apps: {{ apps | length }}\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(
            t.overrides().keys().copied().collect::<Vec<_>>(),
            ["index.html"]
        );
        let out = render(&one_app_plan(), &RenderSettings::default(), &t).unwrap();
        assert_eq!(out.files["html/index.html"], "apps: 1\n");
        // The others are still the shipped ones.
        assert!(out.files["nginx.conf"].contains("include sites/*.conf;"));
    }

    #[test]
    fn a_missing_override_directory_means_no_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let t = Templates::load(Some(&dir.path().join("absent"))).unwrap();
        assert!(t.overrides().is_empty());
    }

    #[test]
    fn an_override_that_does_not_parse_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.conf");
        std::fs::write(&path, "upstream {{ upstream }\n{% for x in %}").unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Parse { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("remove the override"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn an_override_that_fails_to_render_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default.conf");
        std::fs::write(&path, "listen {{ no_such_value }};\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let err = render(&one_app_plan(), &RenderSettings::default(), &t).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Render { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(DEFAULT_SITE_PATH), "{msg}");
    }

    #[test]
    fn an_unreadable_override_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where a file is expected cannot be read as a template.
        std::fs::create_dir(dir.path().join("nginx.conf")).unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        assert!(matches!(err, RenderError::ReadOverride { .. }), "{err}");
    }
}
