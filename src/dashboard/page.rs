//! The HTML page at `/`: rendered on the server from the same [`Overview`] the API serves, so it
//! reads fine without JavaScript; `dashboard.js` only swaps in a fresh copy every 30 s. The
//! template, stylesheet and script are compiled into the binary: nothing is fetched from elsewhere.

use serde::Serialize;
use tera::{Context, Tera};

use super::view::{AppView, Overview, Status};
use crate::systemd::supervisor::{format_memory, format_uptime};

pub const TEMPLATE: &str = include_str!("../../templates/dashboard/index.html");
/// The app directory's rows, rendered apart from the page a slice at a time (see [`ROWS_PER_RENDER`]).
const ROWS_TEMPLATE: &str = include_str!("../../templates/dashboard/app_rows.html");
pub const STYLESHEET: &str = include_str!("../../templates/dashboard/dashboard.css");
pub const SCRIPT: &str = include_str!("../../templates/dashboard/dashboard.js");
/// The name ends in `.html`, so tera escapes every value: app names, reasons and summaries come
/// from containers and checks, and none of them may become markup.
const NAME: &str = "dashboard/index.html";
const ROWS_NAME: &str = "dashboard/app_rows.html";
/// tera renders from a value tree of its whole context: for 1,000 apps that tree, built and freed
/// per page, left the worker's RSS at 22 MB (glibc keeps what was freed). Rendered 100 rows at a
/// time, the tree stays a tenth of that size.
const ROWS_PER_RENDER: usize = 100;
/// How often the page's script fetches fresh data.
pub const REFRESH_SECONDS: u32 = 30;

#[derive(Debug, thiserror::Error)]
#[error("the dashboard page template failed: {0}")]
pub struct PageError(String);

#[derive(Clone)]
pub struct Page {
    tera: Tera,
}

/// Everything the template reads.
#[derive(Serialize)]
struct PageContext<'a> {
    generated_us: u128,
    generated_at: String,
    refresh_seconds: u32,
    domain: &'a str,
    summary: &'a super::view::Summary,
    recoveries_figure: String,
    config_figure: String,
    config_label: &'static str,
    recommendations: &'a [String],
    app_count: usize,
    /// The rows of the app table, already rendered (and escaped) from [`ROWS_TEMPLATE`].
    app_rows: String,
    services: PageServices<'a>,
    incidents: &'a [crate::store::Incident],
    recoveries: &'a [crate::store::Recovery],
    actions_note: &'a str,
}

#[derive(Serialize)]
struct RowsContext<'a> {
    apps: Vec<PageApp<'a>>,
}

#[derive(Serialize)]
struct PageApp<'a> {
    name: &'a str,
    instances: usize,
    status: &'static str,
    status_reason: &'a str,
    proxy_url: Option<&'a str>,
    direct_url: Option<&'a str>,
    port: Option<u16>,
    port_reason: Option<&'a str>,
    uptime: String,
    response: String,
}

#[derive(Serialize)]
struct PageServices<'a> {
    available: bool,
    reason: Option<&'a str>,
    units: Vec<PageUnit<'a>>,
}

#[derive(Serialize)]
struct PageUnit<'a> {
    unit: &'a str,
    state: String,
    ok: bool,
    uptime: String,
    restarts: String,
    memory: String,
}

impl Page {
    pub fn new() -> Result<Self, PageError> {
        let mut tera = Tera::new();
        tera.add_raw_templates([(NAME, TEMPLATE), (ROWS_NAME, ROWS_TEMPLATE)])
            .map_err(|e| PageError(e.to_string()))?;
        Ok(Page { tera })
    }

    pub fn render(
        &self,
        overview: &Overview,
        domain: &str,
        actions_note: &str,
    ) -> Result<String, PageError> {
        let now = std::time::SystemTime::now();
        let summary = &overview.summary;
        let (config_figure, config_label) = match (&summary.pinned_version, &summary.last_version) {
            (Some(pinned), _) => (format!("v{pinned}"), "config pinned by a rollback"),
            (None, Some(v)) if v.applied => (format!("v{}", v.id), "config live"),
            (None, Some(v)) => (format!("v{}", v.id), "config refused (last good serves)"),
            (None, None) => ("—".to_owned(), "no config yet"),
        };
        let context = PageContext {
            generated_us: crate::clock::since_epoch(now).as_micros(),
            generated_at: humantime::format_rfc3339_seconds(now).to_string(),
            refresh_seconds: REFRESH_SECONDS,
            domain,
            summary,
            recoveries_figure: if summary.recovery_attempts == 0 {
                "—".to_owned()
            } else {
                format!(
                    "{}/{}",
                    summary.recovery_successes, summary.recovery_attempts
                )
            },
            config_figure,
            config_label,
            recommendations: &overview.recommendations,
            app_count: overview.apps.len(),
            app_rows: self.render_rows(&overview.apps)?,
            services: PageServices {
                available: overview.services.available,
                reason: overview.services.reason.as_deref(),
                units: overview
                    .services
                    .units
                    .iter()
                    .map(|u| PageUnit {
                        unit: &u.unit,
                        state: format!("{} ({})", u.active_state, u.sub_state),
                        ok: u.is_active(),
                        uptime: u.uptime_secs.map_or("—".into(), format_uptime),
                        restarts: u.restarts.map_or("—".into(), |n| n.to_string()),
                        memory: u.memory_bytes.map_or("—".into(), format_memory),
                    })
                    .collect(),
            },
            incidents: &overview.incidents,
            recoveries: &overview.recoveries,
            actions_note,
        };
        let context = Context::from_serialize(&context).map_err(|e| PageError(e.to_string()))?;
        self.tera
            .render(NAME, &context)
            .map_err(|e| PageError(e.to_string()))
    }

    fn render_rows(&self, apps: &[AppView]) -> Result<String, PageError> {
        let mut rows = Vec::new();
        for slice in apps.chunks(ROWS_PER_RENDER) {
            let context = RowsContext {
                apps: slice.iter().map(page_app).collect(),
            };
            let context =
                Context::from_serialize(&context).map_err(|e| PageError(e.to_string()))?;
            self.tera
                .render_to(ROWS_NAME, &context, &mut rows)
                .map_err(|e| PageError(e.to_string()))?;
        }
        String::from_utf8(rows).map_err(|e| PageError(e.to_string()))
    }
}

fn page_app(app: &AppView) -> PageApp<'_> {
    PageApp {
        name: &app.name,
        instances: app.servers.len(),
        status: app.status.as_str(),
        status_reason: &app.status_reason,
        proxy_url: app.proxy_url.as_deref(),
        direct_url: app.direct_url.as_deref(),
        port: app.port,
        port_reason: app.port_reason.as_deref(),
        uptime: app.uptime_secs.map_or("—".into(), format_uptime),
        response: match (app.latency_ms, app.status) {
            (Some(ms), _) => format!("{ms:.1} ms"),
            (None, Status::Down) => "no answer".into(),
            (None, _) => "—".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::view::{ServicesView, Summary};

    #[test]
    fn every_app_gets_a_row_across_render_slices() {
        let mut overview = overview_with_one_app();
        let app = overview.apps[0].clone();
        overview.apps = (0..ROWS_PER_RENDER * 2 + 50)
            .map(|i| AppView {
                name: format!("app-{i:04}"),
                ..app.clone()
            })
            .collect();
        let html = Page::new()
            .unwrap()
            .render(&overview, "localhost", "actions are off")
            .unwrap();
        assert_eq!(html.matches("<tr class=\"app\"").count(), 250);
        let first = html.find("data-app=\"app-0000\"").unwrap();
        let last = html.find("data-app=\"app-0249\"").unwrap();
        assert!(first < last, "rows keep the directory's order");
    }

    #[test]
    fn values_from_containers_are_escaped_not_markup() {
        let overview = overview_with_one_app();
        let html = Page::new()
            .unwrap()
            .render(&overview, "localhost", "actions are off")
            .unwrap();
        assert!(!html.contains("<script>alert"), "unescaped reason");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;")
                || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("href=\"http://shop.localhost/\"")
                || html.contains("href=\"http:&#x2F;&#x2F;shop.localhost&#x2F;\"")
        );
        assert!(html.contains("2m05s"));
        assert!(html.contains("no systemd here"));
    }

    fn overview_with_one_app() -> Overview {
        Overview {
            summary: Summary {
                status: "down",
                apps: 1,
                ..Summary::default()
            },
            apps: vec![AppView {
                name: "shop".into(),
                hosts: vec!["shop.localhost".into()],
                proxy_url: Some("http://shop.localhost/".into()),
                direct_url: None,
                servers: vec![],
                routed: true,
                port: Some(80),
                port_reason: Some("only exposed port".into()),
                status: Status::Down,
                status_reason: "<script>alert(1)</script>".into(),
                latency_ms: None,
                started_at: None,
                uptime_secs: Some(125),
                checked_at: None,
                down: None,
            }],
            services: ServicesView {
                available: false,
                reason: Some("no systemd here".into()),
                units: vec![],
            },
            incidents: vec![],
            recoveries: vec![],
            recommendations: vec!["do \"this\" & that".into()],
            checks: vec![],
        }
    }
}
