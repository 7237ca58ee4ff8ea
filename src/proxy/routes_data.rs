//! The data nginx routes by on the data path: hosts → app, app → servers, and the pages nginx
//! answers itself (an app's down page, the directory), as one text that `templates/butler.lua`
//! parses. Pure. Every value in it comes from a validated `Route`; the Lua side checks the text
//! again, so a refused update can never replace the data that serves.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::proxy::model::Route;

/// The first line of every routes text; `butler.lua` refuses any other.
pub const FORMAT_LINE: &str = "butler-routes 1";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutesData {
    /// (app, servers) of the apps that have servers.
    upstreams: Vec<(String, Vec<SocketAddr>)>,
    /// (host, app) for every host of every route, up or down.
    hosts: Vec<(String, String)>,
    /// (app, HTML) of the apps whose containers have all exited.
    down_pages: Vec<(String, String)>,
    /// The directory page, answered at `/` for a host that is no app's.
    pub index: Option<String>,
}

impl RoutesData {
    pub fn add_route(&mut self, route: &Route) {
        if route.down.is_none() {
            let servers = route
                .servers
                .iter()
                .map(|s| SocketAddr::new(s.ip, s.port))
                .collect();
            self.upstreams.push((route.app.clone(), servers));
        }
        for host in &route.hosts {
            self.hosts.push((host.clone(), route.app.clone()));
        }
    }

    pub fn add_down_page(&mut self, app: &str, html: String) {
        self.down_pages.push((app.to_owned(), html));
    }

    /// The text `butler.lua` reads: deterministic for the same routes (the plan sorts them), so
    /// it hashes into the config version like any file.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        text.push_str(FORMAT_LINE);
        text.push('\n');
        for (app, servers) in &self.upstreams {
            let _ = write!(text, "upstream {app}");
            for server in servers {
                let _ = write!(text, " {server}");
            }
            text.push('\n');
        }
        for (host, app) in &self.hosts {
            let _ = writeln!(text, "host {host} {app}");
        }
        for (app, html) in &self.down_pages {
            let _ = writeln!(text, "down {app} {}", html.len());
            text.push_str(html);
        }
        if let Some(index) = &self.index {
            let _ = writeln!(text, "index {}", index.len());
            text.push_str(index);
        }
        text.push_str("end\n");
        text
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::proxy::model::UpstreamServer;
    use crate::proxy::ports::PortReason;
    use crate::store::Down;

    fn server(ip: IpAddr, port: u16) -> UpstreamServer {
        UpstreamServer {
            container_id: "id".into(),
            container_name: "name".into(),
            ip,
            port,
            port_reason: PortReason::OnlyExposed,
            deployment: None,
        }
    }

    #[test]
    fn routes_encode_as_lines_with_sized_pages() {
        let mut data = RoutesData::default();
        data.add_route(&Route {
            app: "shop".into(),
            hosts: vec!["shop.localhost".into(), "shop.example.test".into()],
            servers: vec![
                server(IpAddr::V4(Ipv4Addr::new(172, 18, 0, 5)), 8080),
                server(IpAddr::V6(Ipv6Addr::LOCALHOST), 3000),
            ],
            down: None,
        });
        data.add_route(&Route {
            app: "old".into(),
            hosts: vec!["old.localhost".into()],
            servers: vec![],
            down: Some(Down {
                container_name: "old-1".into(),
                exit_code: 1,
                oom_killed: false,
                stopped: false,
                since: None,
            }),
        });
        data.add_down_page("old", "<p>down\nhere</p>".into());
        data.index = Some("<h1>apps</h1>\n".into());
        assert_eq!(
            data.encode(),
            "butler-routes 1\n\
             upstream shop 172.18.0.5:8080 [::1]:3000\n\
             host shop.localhost shop\n\
             host shop.example.test shop\n\
             host old.localhost old\n\
             down old 16\n<p>down\nhere</p>\
             index 14\n<h1>apps</h1>\n\
             end\n"
        );
    }
}
