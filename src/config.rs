//! The butler's configuration: one `Config` read from TOML, every key defaulted, unknown keys refused,
//! and every value checked in `validate` so that a bad file stops a worker before it reports READY.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::tls::TlsMode;
pub use crate::vocabulary::Severity;

/// Dashboard action requests nobody claimed for this long are expired rather than run late: an
/// operator who asked for a restart five minutes ago and was told nobody answered does not
/// expect it to happen now. `dashboard.action_timeout` may not exceed it.
pub const REQUEST_MAX_AGE: Duration = Duration::from_secs(300);

/// Where the config lives when neither `--config` nor `BUTLER_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/butler/butler.toml";

/// Let's Encrypt's production directory: `tls.acme.directory` unless set.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits): documented
/// as the one to try a setup against.
pub const LETS_ENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config {path}: {source} (create it, or point --config / BUTLER_CONFIG at one)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{key}` {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub dashboard: DashboardConfig,
    pub state: StateConfig,
    pub docker: DockerConfig,
    pub health: HealthConfig,
    pub recovery: RecoveryConfig,
    pub alerts: AlertsConfig,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Host port the nginx container publishes.
    pub http_port: u16,
    /// Host port for HTTPS (TLS serving is not wired into nginx yet).
    pub https_port: u16,
    /// Apps are served at `<app>.<domain>`.
    pub domain: String,
    /// Bridge network shared by nginx and every app.
    pub network: String,
    /// Image of the nginx container; any image with `nginx` on its PATH works.
    pub image: String,
    pub container_name: String,
    /// Operator overrides of the shipped templates, file by file.
    pub templates_dir: PathBuf,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            http_port: 80,
            https_port: 443,
            domain: "localhost".into(),
            network: "devops-butler-net".into(),
            image: "nginx:stable".into(),
            container_name: "butler-nginx".into(),
            templates_dir: "/etc/butler/templates".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    /// A root-only file holding the bearer token for API actions; none means actions are off.
    pub token_file: Option<PathBuf>,
    /// How long an action request waits for the worker that runs it before the API answers
    /// (503 when no worker took it, 202 while it still runs).
    pub action_timeout: HumanDuration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            token_file: None,
            action_timeout: HumanDuration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: "/var/lib/butler".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; unset means `DOCKER_HOST` or the
    /// local socket.
    pub host: Option<String>,
    /// `KEY=VALUE` (or `KEY`): only containers with this label are apps, for several butlers
    /// sharing one engine, each with its own containers. Unset: every container.
    pub only_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub interval: HumanDuration,
    /// Upper bound for one probe, so one slow app cannot hold up a round.
    pub timeout: HumanDuration,
    /// Warn when a disk is projected to fill within this long.
    pub disk_warning: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::from_secs(10),
            timeout: HumanDuration::from_secs(5),
            disk_warning: HumanDuration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    pub max_attempts: u32,
    pub backoff: HumanDuration,
    /// Restart app containers that did not opt in with `butler.autorestart=true`.
    pub restart_apps: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: HumanDuration::from_secs(5),
            restart_apps: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub rules: Vec<AlertRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Lowest severity that fires the rule.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default = "default_alert_interval")]
    pub min_interval: HumanDuration,
}

fn default_alert_interval() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// `[tls]`: which hosts get certificates from where, and what HTTPS adds. Read today by
/// `butler tls`; nginx's TLS serving and the ACME client are still to come.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `auto` (local names get the local CA, the rest ACME), `acme`, `local` or `off`; the
    /// `butler.tls` label overrides it per container.
    pub mode: TlsMode,
    /// Answer HTTP with a 308 to HTTPS once a host's certificate is there.
    pub redirect: bool,
    /// `Strict-Transport-Security` max-age on HTTPS answers; `"0s"` sends none.
    pub hsts_max_age: HumanDuration,
    /// Bring-your-own certificates: `<host>.crt` (leaf, then chain) and `<host>.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    pub acme: AcmeConfig,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Auto,
            redirect: true,
            hsts_max_age: HumanDuration::from_secs(365 * DAY),
            certs_dir: None,
            acme: AcmeConfig::default(),
        }
    }
}

/// `[tls.acme]`: the ACME server and how the butler may use it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The directory URL (RFC 8555 section 7.1.1).
    pub directory: String,
    /// The account's contact, for the CA's expiry and incident mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The ACME server's own CA (PEM), for private servers whose HTTPS the system roots do not
    /// trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// Renew a certificate this long before it expires.
    pub renew_before: HumanDuration,
    /// New orders at most this many per hour, over all hosts: a loop that keeps failing cannot
    /// run into the CA's rate limits.
    pub max_orders_per_hour: u32,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: LETS_ENCRYPT_DIRECTORY.into(),
            email: None,
            ca_bundle: None,
            renew_before: HumanDuration::from_secs(30 * DAY),
            max_orders_per_hour: 10,
        }
    }
}

const DAY: u64 = 86_400;

/// A duration written with its unit (`"500ms"`, `"10s"`, `"2m"`): a bare number is refused because
/// nobody can tell whether `10` meant seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "\"{text}\" has no unit: write it as \"{text}s\", \"{text}ms\" or \"{text}m\""
            ));
        }
        humantime::parse_duration(text).map(Self).map_err(|e| {
            format!("\"{text}\" is not a duration ({e}); write e.g. \"500ms\", \"10s\", \"2m\"")
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // humantime's months and years are 30.44 and 365.25 days, so 365 days would print as
        // "11months 30days 3h 50m 24s"; whole days from a month up print as days instead.
        let secs = self.0.as_secs();
        if secs >= 28 * DAY && secs.is_multiple_of(DAY) && self.0.subsec_nanos() == 0 {
            return write!(f, "{}days", secs / DAY);
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "durations are strings with a unit, e.g. \"{n}s\" or \"{n}ms\""
            ))),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl Config {
    /// Reads and validates a config file. A missing file at the default path is an empty config
    /// (every key has a default); a missing file that was asked for by name is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(&e, text),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types alone cannot. Keys are named as a user writes them.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if self.proxy.http_port == 0 {
            return Err(invalid(
                "proxy.http_port",
                "must be between 1 and 65535".into(),
            ));
        }
        if self.proxy.https_port == 0 {
            return Err(invalid(
                "proxy.https_port",
                "must be between 1 and 65535".into(),
            ));
        }
        if self.proxy.https_port == self.proxy.http_port {
            return Err(invalid(
                "proxy.https_port",
                format!(
                    "must differ from proxy.http_port (both are {})",
                    self.proxy.http_port
                ),
            ));
        }
        if let Err(reason) = validate_domain(&self.proxy.domain) {
            return Err(invalid("proxy.domain", reason));
        }
        if let Err(reason) = validate_docker_name(&self.proxy.network) {
            return Err(invalid("proxy.network", reason));
        }
        if let Err(reason) = validate_docker_name(&self.proxy.container_name) {
            return Err(invalid("proxy.container_name", reason));
        }
        if let Err(reason) = validate_image(&self.proxy.image) {
            return Err(invalid("proxy.image", reason));
        }
        if !self.proxy.templates_dir.is_absolute() {
            return Err(invalid(
                "proxy.templates_dir",
                "must be an absolute path".into(),
            ));
        }
        if !self.state.dir.is_absolute() {
            return Err(invalid("state.dir", "must be an absolute path".into()));
        }
        if let Some(file) = &self.dashboard.token_file
            && !file.is_absolute()
        {
            return Err(invalid(
                "dashboard.token_file",
                "must be an absolute path".into(),
            ));
        }
        if self.dashboard.action_timeout.0 < Duration::from_secs(1)
            || self.dashboard.action_timeout.0 > REQUEST_MAX_AGE
        {
            return Err(invalid(
                "dashboard.action_timeout",
                "must be between \"1s\" and \"5m\"".into(),
            ));
        }
        if let Some(host) = &self.docker.host {
            let ok = ["unix://", "tcp://", "http://", "https://"]
                .iter()
                .any(|scheme| host.starts_with(scheme) && host.len() > scheme.len());
            if !ok {
                return Err(invalid(
                    "docker.host",
                    format!(
                        "\"{host}\" must look like unix:///var/run/docker.sock or tcp://HOST:PORT"
                    ),
                ));
            }
        }
        if let Some(label) = &self.docker.only_label {
            let key = label.split_once('=').map_or(label.as_str(), |(k, _)| k);
            if key.is_empty() || label.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "docker.only_label",
                    format!("\"{label}\" must be KEY=VALUE or KEY, e.g. \"butler.group=web\""),
                ));
            }
        }
        if self.health.interval.0 < Duration::from_secs(1) {
            return Err(invalid("health.interval", "must be at least \"1s\"".into()));
        }
        if self.health.timeout.0.is_zero() || self.health.timeout > self.health.interval {
            return Err(invalid(
                "health.timeout",
                format!(
                    "must be above zero and at most health.interval ({})",
                    self.health.interval
                ),
            ));
        }
        if self.health.disk_warning.0 < Duration::from_secs(60) {
            return Err(invalid(
                "health.disk_warning",
                "must be at least \"1m\", e.g. \"24h\"".into(),
            ));
        }
        if self.recovery.max_attempts == 0 {
            return Err(invalid(
                "recovery.max_attempts",
                "must be at least 1".into(),
            ));
        }
        for rule in &self.alerts.rules {
            match (&rule.command, &rule.webhook) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        "alerts.rules",
                        "each rule needs exactly one of `command` or `webhook`".into(),
                    ));
                }
                (Some(command), None) if command.is_empty() || command[0].is_empty() => {
                    return Err(invalid(
                        "alerts.rules.command",
                        "must name a program".into(),
                    ));
                }
                (None, Some(url)) if url.starts_with("https://") => {
                    return Err(invalid(
                        "alerts.rules.webhook",
                        format!(
                            "\"{url}\": https webhooks are not supported (the butler has no TLS client); \
                             use an http:// URL, or a command such as [\"curl\", \"-fsS\", \"-d@-\", \"{url}\"]"
                        ),
                    ));
                }
                (None, Some(url)) if crate::http::parse_url(url).is_none() => {
                    return Err(invalid(
                        "alerts.rules.webhook",
                        format!(
                            "\"{url}\" must be an http:// URL like \"http://hooks.local:8080/butler\""
                        ),
                    ));
                }
                _ => {}
            }
        }
        self.validate_tls(&invalid)
    }

    /// `[tls]`'s part of [`validate`](Self::validate); `invalid` names the file.
    fn validate_tls(
        &self,
        invalid: &dyn Fn(&'static str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if let Some(dir) = &tls.certs_dir
            && !dir.is_absolute()
        {
            return Err(invalid("tls.certs_dir", "must be an absolute path".into()));
        }
        if let Err(reason) = validate_acme_directory(&tls.acme.directory) {
            return Err(invalid("tls.acme.directory", reason));
        }
        if let Some(email) = &tls.acme.email
            && let Err(reason) = validate_email(email)
        {
            return Err(invalid("tls.acme.email", reason));
        }
        if let Some(bundle) = &tls.acme.ca_bundle {
            if !bundle.is_absolute() {
                return Err(invalid(
                    "tls.acme.ca_bundle",
                    "must be an absolute path".into(),
                ));
            }
            // Read now: a bundle that cannot be used would otherwise only show when the first
            // order fails, hours after the config was changed.
            if let Err(error) = crate::tls::pair::read_bundle(bundle) {
                return Err(invalid(
                    "tls.acme.ca_bundle",
                    format!("{error} (it must be readable PEM certificates)"),
                ));
            }
        }
        if tls.acme.renew_before.0 < Duration::from_secs(DAY) {
            return Err(invalid(
                "tls.acme.renew_before",
                "must be at least \"1d\", e.g. \"30d\"".into(),
            ));
        }
        if tls.acme.max_orders_per_hour == 0 {
            return Err(invalid(
                "tls.acme.max_orders_per_hour",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// toml's errors are multi-line with a source excerpt; a log line and an exit message want one line
/// that still names the key and where it stands.
fn one_line_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            // Quote the whole line: the span of a bad value does not include its key.
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            let excerpt = text.lines().nth(line - 1).unwrap_or("").trim();
            if excerpt.is_empty() {
                format!("line {line}: {message}")
            } else {
                format!("line {line} (`{excerpt}`): {message}")
            }
        }
        None => message,
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.len() > 200 {
        return Err("must be a DNS name of 1 to 200 characters, e.g. \"localhost\"".into());
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "\"{domain}\" is not a DNS name: use letters, digits, '-' and '.' only"
            ));
        }
    }
    Ok(())
}

/// An ACME directory is an https URL with a host (RFC 8555 requires HTTPS for every request).
fn validate_acme_directory(url: &str) -> Result<(), String> {
    let host = url
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    let ok = host.is_some_and(|h| !h.is_empty())
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{url:?} must be an https:// URL such as \"{LETS_ENCRYPT_DIRECTORY}\" (staging: \"{LETS_ENCRYPT_STAGING_DIRECTORY}\")"
        ))
    }
}

/// `local@domain`: the shape ACME servers accept for a `mailto:` contact, without the scheme.
fn validate_email(email: &str) -> Result<(), String> {
    let shape = format!("{email:?} is not an e-mail address like \"ops@example.com\"");
    if email.starts_with("mailto:") {
        return Err(format!("{shape}: write it without \"mailto:\""));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(shape);
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '@' | ',' | '<' | '>' | '"' | '\\'));
    let domain_ok = domain.contains('.')
        && domain.parse::<std::net::IpAddr>().is_err()
        && crate::tls::policy::validate_host(domain).is_ok();
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(shape)
    }
}

/// Docker's own rule for container and network names.
fn validate_docker_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid Docker name: start with a letter or digit, then letters, digits, '_', '.', '-'"
        ))
    }
}

fn validate_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{image}\" is not an image reference like \"nginx:stable\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.proxy.http_port, 80);
        assert_eq!(config.proxy.https_port, 443);
        assert_eq!(config.proxy.domain, "localhost");
        assert_eq!(config.proxy.network, "devops-butler-net");
        assert_eq!(config.proxy.container_name, "butler-nginx");
        assert_eq!(config.dashboard.listen.to_string(), "127.0.0.1:8888");
        assert_eq!(config.state.dir, PathBuf::from("/var/lib/butler"));
        assert_eq!(config.health.interval.0, Duration::from_secs(10));
        assert_eq!(config.recovery.max_attempts, 3);
        assert_eq!(config.tls.mode, TlsMode::Auto);
        assert!(config.tls.redirect);
        assert_eq!(config.tls.hsts_max_age.0, Duration::from_secs(365 * DAY));
        assert_eq!(config.tls.certs_dir, None);
        assert_eq!(config.tls.acme.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(config.tls.acme.email, None);
        assert_eq!(config.tls.acme.ca_bundle, None);
        assert_eq!(
            config.tls.acme.renew_before.0,
            Duration::from_secs(30 * DAY)
        );
        assert_eq!(config.tls.acme.max_orders_per_hour, 10);
    }

    #[test]
    fn every_key_can_be_set() {
        let config = parse(
            r#"
            [proxy]
            http_port = 8080
            https_port = 8443
            domain = "apps.example.com"
            network = "my-net"
            image = "registry.local/nginx:1.25"
            container_name = "edge"
            templates_dir = "/srv/templates"
            [dashboard]
            listen = "0.0.0.0:9999"
            token_file = "/etc/butler/token"
            action_timeout = "10s"
            [state]
            dir = "/srv/butler"
            [docker]
            host = "tcp://10.0.0.5:2375"
            only_label = "butler.group=web"
            [health]
            interval = "30s"
            timeout = "500ms"
            disk_warning = "12h"
            [recovery]
            max_attempts = 5
            backoff = "2m"
            restart_apps = true
            [[alerts.rules]]
            min_severity = "high"
            webhook = "http://hooks.example.com/x"
            min_interval = "10m"
            [tls]
            mode = "local"
            redirect = false
            hsts_max_age = "0s"
            certs_dir = "/etc/butler/certs"
            [tls.acme]
            directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
            email = "ops@example.com"
            renew_before = "20d"
            max_orders_per_hour = 3
            "#,
        )
        .unwrap();
        assert_eq!(config.proxy.http_port, 8080);
        assert_eq!(config.proxy.https_port, 8443);
        assert_eq!(config.tls.mode, TlsMode::Local);
        assert!(!config.tls.redirect);
        assert!(config.tls.hsts_max_age.0.is_zero());
        assert_eq!(
            config.tls.certs_dir,
            Some(PathBuf::from("/etc/butler/certs"))
        );
        assert_eq!(config.tls.acme.directory, LETS_ENCRYPT_STAGING_DIRECTORY);
        assert_eq!(config.tls.acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(
            config.tls.acme.renew_before.0,
            Duration::from_secs(20 * DAY)
        );
        assert_eq!(config.tls.acme.max_orders_per_hour, 3);
        assert_eq!(
            config.docker.only_label.as_deref(),
            Some("butler.group=web")
        );
        assert_eq!(config.health.timeout.0, Duration::from_millis(500));
        assert_eq!(config.recovery.backoff.0, Duration::from_secs(120));
        assert_eq!(config.alerts.rules[0].min_severity, Some(Severity::High));
        assert_eq!(config.health.disk_warning.0, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn bad_input_names_the_key_and_the_reason() {
        let cases: &[(&str, &[&str])] = &[
            ("[proxy]\nhtp_port = 80", &["htp_port", "line 2"]),
            ("[nope]\nx = 1", &["nope"]),
            ("[proxy]\nhttp_port = 70000", &["http_port"]),
            (
                "[proxy]\nhttp_port = 0",
                &["proxy.http_port", "between 1 and 65535"],
            ),
            ("[proxy]\nhttp_port = \"80\"", &["http_port"]),
            (
                "[proxy]\ndomain = \"bad domain\"",
                &["proxy.domain", "DNS name"],
            ),
            ("[proxy]\nnetwork = \"-x\"", &["proxy.network"]),
            ("[proxy]\nimage = \"ng inx\"", &["proxy.image"]),
            (
                "[proxy]\ncontainer_name = \"a;b\"",
                &["proxy.container_name"],
            ),
            ("[dashboard]\nlisten = \"localhost\"", &["listen"]),
            ("[state]\ndir = \"relative\"", &["state.dir", "absolute"]),
            (
                "[dashboard]\naction_timeout = \"10m\"",
                &["dashboard.action_timeout", "5m"],
            ),
            (
                "[docker]\nhost = \"/var/run/docker.sock\"",
                &["docker.host", "unix://"],
            ),
            (
                "[docker]\nonly_label = \"=web\"",
                &["docker.only_label", "KEY=VALUE"],
            ),
            (
                "[docker]\nonly_label = \"group = web\"",
                &["docker.only_label"],
            ),
            ("[health]\ninterval = 10", &["interval", "unit"]),
            ("[health]\ninterval = \"10\"", &["interval", "no unit"]),
            (
                "[health]\ninterval = \"soon\"",
                &["interval", "not a duration"],
            ),
            ("[health]\ninterval = \"100ms\"", &["health.interval", "1s"]),
            ("[health]\ntimeout = \"1m\"", &["health.timeout"]),
            ("[recovery]\nmax_attempts = 0", &["recovery.max_attempts"]),
            ("[recovery]\nmax_attempts = -1", &["max_attempts"]),
            (
                "[[alerts.rules]]\nmin_severity = \"high\"",
                &["alerts.rules", "exactly one"],
            ),
            (
                "[[alerts.rules]]\nwebhook = \"ftp://x\"",
                &["alerts.rules.webhook"],
            ),
            (
                "[[alerts.rules]]\nwebhook = \"https://x\"",
                &["alerts.rules.webhook", "https", "curl"],
            ),
            (
                "[health]\ndisk_warning = \"10s\"",
                &["health.disk_warning", "1m"],
            ),
            ("[health]\ndisk_warning = \"a day\"", &["disk_warning"]),
            ("[[alerts.rules]]\ncommand = []", &["alerts.rules.command"]),
            (
                "[[alerts.rules]]\ncommand = [\"x\"]\nmin_severity = \"urgent\"",
                &["urgent"],
            ),
            ("[proxy", &["line 1"]),
            (
                "[proxy]\nhttps_port = 0",
                &["proxy.https_port", "between 1 and 65535"],
            ),
            ("[proxy]\nhttps_port = 70000", &["https_port"]),
            (
                "[proxy]\nhttps_port = 80",
                &["proxy.https_port", "differ from proxy.http_port", "80"],
            ),
            (
                "[proxy]\nhttp_port = 8443\nhttps_port = 8443",
                &["proxy.https_port", "8443"],
            ),
            ("[tls]\nmode = \"on\"", &["mode", "on", "auto", "off"]),
            ("[tls]\nmode = \"Auto\"", &["mode", "Auto"]),
            ("[tls]\nredirect = \"yes\"", &["redirect"]),
            ("[tls]\nhsts_max_age = 31536000", &["hsts_max_age", "unit"]),
            ("[tls]\nhsts_max_age = \"a year\"", &["hsts_max_age"]),
            (
                "[tls]\ncerts_dir = \"certs\"",
                &["tls.certs_dir", "absolute"],
            ),
            ("[tls]\ncert_dir = \"/x\"", &["cert_dir"]),
            ("[tls.acme]\nemail_address = \"a@b.c\"", &["email_address"]),
            (
                "[tls.acme]\ndirectory = \"http://acme.local/dir\"",
                &["tls.acme.directory", "https://", "staging"],
            ),
            (
                "[tls.acme]\ndirectory = \"https://\"",
                &["tls.acme.directory"],
            ),
            (
                "[tls.acme]\ndirectory = \"https://ac me/dir\"",
                &["tls.acme.directory"],
            ),
            (
                "[tls.acme]\nemail = \"ops\"",
                &["tls.acme.email", "ops@example.com"],
            ),
            ("[tls.acme]\nemail = \"ops@localhost\"", &["tls.acme.email"]),
            (
                "[tls.acme]\nemail = \"a b@example.com\"",
                &["tls.acme.email"],
            ),
            (
                "[tls.acme]\nemail = \"a@b@example.com\"",
                &["tls.acme.email"],
            ),
            ("[tls.acme]\nemail = \"ops@10.0.0.1\"", &["tls.acme.email"]),
            (
                "[tls.acme]\nemail = \"mailto:ops@example.com\"",
                &["tls.acme.email", "without \"mailto:\""],
            ),
            (
                "[tls.acme]\nca_bundle = \"ca.pem\"",
                &["tls.acme.ca_bundle", "absolute"],
            ),
            (
                "[tls.acme]\nca_bundle = \"/nonexistent/ca.pem\"",
                &[
                    "tls.acme.ca_bundle",
                    "/nonexistent/ca.pem",
                    "does not exist",
                ],
            ),
            (
                "[tls.acme]\nrenew_before = \"1h\"",
                &["tls.acme.renew_before", "1d"],
            ),
            (
                "[tls.acme]\nmax_orders_per_hour = 0",
                &["tls.acme.max_orders_per_hour", "at least 1"],
            ),
            (
                "[tls.acme]\nmax_orders_per_hour = -2",
                &["max_orders_per_hour"],
            ),
        ];
        for (text, needles) in cases {
            let error = parse(text).expect_err(text).to_string();
            assert!(
                !error.contains('\n'),
                "multi-line error for {text:?}: {error}"
            );
            assert!(error.contains("test.toml"), "no path in {error}");
            for needle in *needles {
                assert!(
                    error.contains(needle),
                    "{text:?}: {error:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn a_ca_bundle_must_be_readable_pem_certificates_when_the_config_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("acme-ca.pem");
        let config = format!("[tls.acme]\nca_bundle = \"{}\"\n", bundle.display());
        let cases = [
            ("", "holds no PEM CERTIFICATE"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no PEM CERTIFICATE",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a valid X.509",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&bundle, text).unwrap();
            let error = parse(&config).unwrap_err().to_string();
            assert!(
                error.contains("tls.acme.ca_bundle")
                    && error.contains("acme-ca.pem")
                    && error.contains(want),
                "{text:?}: {error}"
            );
            assert!(!error.contains('\n'), "{error}");
            // Nothing lost: loading never touches the bundle.
            assert_eq!(std::fs::read_to_string(&bundle).unwrap(), text);
        }
        let root = crate::tls::LocalCa::generate("h", std::time::SystemTime::now()).unwrap();
        std::fs::write(&bundle, root.cert_pem()).unwrap();
        let loaded = parse(&config).unwrap();
        assert_eq!(loaded.tls.acme.ca_bundle, Some(bundle));
    }

    #[test]
    fn long_durations_of_whole_days_show_as_days_and_read_back() {
        let config = parse("").unwrap();
        let shown = toml::to_string(&config).unwrap();
        assert!(shown.contains("hsts_max_age = \"365days\""), "{shown}");
        assert!(shown.contains("renew_before = \"30days\""), "{shown}");
        assert!(shown.contains("disk_warning = \"1day\""), "{shown}");
        assert!(
            !shown.contains("email") && !shown.contains("ca_bundle"),
            "{shown}"
        );
        assert_eq!(parse(&shown).unwrap(), config);
        for (text, secs) in [("90d", 90 * DAY), ("29days 1h", 29 * DAY + 3600), ("0s", 0)] {
            let duration: HumanDuration = text.parse().unwrap();
            assert_eq!(duration.0.as_secs(), secs);
            assert_eq!(
                duration.to_string().parse::<HumanDuration>().unwrap(),
                duration
            );
        }
    }

    #[test]
    fn missing_default_file_is_empty_config_but_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        let error = Config::load(&missing, true).unwrap_err().to_string();
        assert!(
            error.contains("absent.toml") && error.contains("--config"),
            "{error}"
        );
    }
}
