//! An app's way in: its containers' addresses on the proxy network, whether the applied config
//! routes it, and why a route server refused connections (another port, another address, nothing
//! listening).

use std::net::SocketAddr;

use super::Problem;
use crate::health::Kind;
use crate::health::model::{ContainerObs, ProbeResult, RouteObs};

/// How long a new container may run unrouted before that is a problem (`route_missing`).
pub const ROUTE_GRACE_SECS: f64 = 10.0;

/// The running containers nginx can reach: the ones with an address on the proxy network.
pub(super) fn on_network<'a>(running: &[&'a ContainerObs]) -> Vec<&'a ContainerObs> {
    running.iter().copied().filter(|c| c.ip.is_some()).collect()
}

/// A `not_on_network` for each running container without an address on the proxy network;
/// partial while another one has one.
pub(super) fn off_network(running: &[&ContainerObs]) -> Vec<Problem> {
    let some_on = running.iter().any(|c| c.ip.is_some());
    running
        .iter()
        .filter(|c| c.ip.is_none())
        .map(|c| {
            Problem::partial(
                Kind::NotOnNetwork,
                some_on,
                format!(
                    "container {} has no address on the proxy network, so nginx cannot reach it",
                    c.name
                ),
            )
        })
        .collect()
}

/// Every container nginx could reach started within [`ROUTE_GRACE_SECS`]. The dynamic proxy
/// routes a new container within a second or two: an incident now would only send the recovery
/// to reconcile alongside it (one more reload per start).
pub(super) fn awaiting_route(on_network: &[&ContainerObs]) -> bool {
    !on_network.is_empty()
        && on_network
            .iter()
            .all(|c| c.up_secs.is_some_and(|up| up < ROUTE_GRACE_SECS))
}

/// A `route_missing` for an app without a route whose containers nginx could reach, once they
/// are past the grace time.
pub(super) fn route_missing(on_network: &[&ContainerObs]) -> Option<Problem> {
    (!on_network.is_empty() && !awaiting_route(on_network)).then(|| {
        Problem::new(
            Kind::RouteMissing,
            "the app runs on the proxy network but the applied config has no route for it"
                .to_owned(),
        )
    })
}

/// Why a route server refused connections.
#[derive(Debug, PartialEq)]
enum Refusal<'a> {
    /// The container at the server's address listens, on other ports (`port_mismatch`).
    OtherPort(&'a ContainerObs),
    /// No container has the address now, and the app's containers listen, but none on the
    /// route's port: it came back at another address and on another port (`port_mismatch`).
    Moved(&'a ContainerObs),
    /// No container of the app has the address now (`route_stale`).
    Stale,
    /// The container at the address does not accept connections, and no port it listens on
    /// explains why (`app_unresponsive`).
    Unresponsive(&'a ContainerObs),
}

fn refusal<'a>(
    server: SocketAddr,
    route_port: u16,
    on_network: &[&'a ContainerObs],
) -> Refusal<'a> {
    let listens_elsewhere = |c: &ContainerObs, port: u16| {
        c.listening
            .as_ref()
            .is_some_and(|p| !p.is_empty() && !p.contains(&port))
    };
    let owner = on_network
        .iter()
        .copied()
        .find(|c| c.ip == Some(server.ip()));
    match owner {
        Some(c) if listens_elsewhere(c, server.port()) => Refusal::OtherPort(c),
        Some(c) => Refusal::Unresponsive(c),
        None => {
            let listening_known =
                !on_network.is_empty() && on_network.iter().all(|c| c.listening.is_some());
            let listens_on_route_port = on_network.iter().any(|c| {
                c.listening
                    .as_ref()
                    .is_some_and(|p| p.contains(&route_port))
            });
            let listens_somewhere = on_network
                .iter()
                .any(|c| c.listening.as_ref().is_some_and(|p| !p.is_empty()));
            if listening_known && !listens_on_route_port && listens_somewhere {
                Refusal::Moved(on_network[0])
            } else {
                Refusal::Stale
            }
        }
    }
}

/// A problem for each route server that refused connections (`port_mismatch`, `route_stale` or
/// `app_unresponsive`); partial while another server accepts them. `tcp` is in the route's
/// order.
pub(super) fn refused_servers(
    route: &RouteObs,
    tcp: &[ProbeResult],
    on_network: &[&ContainerObs],
) -> Vec<Problem> {
    let partial = tcp.iter().any(|t| t.ok);
    route
        .servers
        .iter()
        .zip(tcp)
        .filter(|(_, probe)| !probe.ok)
        .map(|(&server, probe)| {
            let why = refusal(server, route.port, on_network);
            let (kind, summary) = describe_refusal(why, server, probe, route, on_network);
            Problem::partial(kind, partial, summary)
        })
        .collect()
}

/// The kind of problem a refusal is, and what to say about it.
fn describe_refusal(
    why: Refusal<'_>,
    server: SocketAddr,
    probe: &ProbeResult,
    route: &RouteObs,
    on_network: &[&ContainerObs],
) -> (Kind, String) {
    match why {
        Refusal::OtherPort(c) => (
            Kind::PortMismatch,
            format!(
                "the route sends to port {} ({}) but container {} listens on {}{}",
                server.port(),
                route.reason,
                c.name,
                ports_text(c),
                forced_hint(c)
            ),
        ),
        Refusal::Moved(c) => (
            Kind::PortMismatch,
            format!(
                "the route sends to {server} ({}) but the app's container {} now has {} and listens on {}{}",
                route.reason,
                c.name,
                c.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                ports_text(c),
                forced_hint(c)
            ),
        ),
        Refusal::Stale => (
            Kind::RouteStale,
            format!(
                "the route points at {server}, which no container of the app has now ({})",
                on_network
                    .iter()
                    .map(|c| format!(
                        "{} is at {}",
                        c.name,
                        c.ip.map(|ip| ip.to_string()).unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Refusal::Unresponsive(c) => (
            Kind::AppUnresponsive,
            format!(
                "nothing accepts connections on {server} (container {}{}): {}",
                c.name,
                match c.listening.as_deref() {
                    Some([]) => ", which listens on no port".to_owned(),
                    _ => String::new(),
                },
                probe.error.as_deref().unwrap_or("refused")
            ),
        ),
    }
}

/// What to change when a container listens elsewhere than routed: the label that forces the
/// port, or the label to set when it listens on several and nothing picks one.
fn forced_hint(c: &ContainerObs) -> String {
    let listening = c.listening.as_deref().unwrap_or_default();
    let to = match listening {
        [only] => format!("={only}"),
        _ => " to one of them".to_owned(),
    };
    match &c.forced_port {
        Some(p) => format!(
            "; the port is forced to {p} by the label butler.port or VIRTUAL_PORT: set \
             butler.port{to} (or remove both to let the butler choose)"
        ),
        None if listening.len() > 1 => format!(
            "; it listens on several ports and neither a common web port nor its logs \
             pick one: set the label butler.port{to}"
        ),
        None => String::new(),
    }
}

fn ports_text(c: &ContainerObs) -> String {
    c.listening
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::health::classify::fixtures::{
        IP, OLD_IP, OTHER_IP, container, healthy_app, probe, refusing, route,
    };
    use crate::health::classify::{Rules, classify_app};

    fn listening(name: &str, ip: IpAddr, ports: Option<Vec<u16>>) -> ContainerObs {
        ContainerObs {
            listening: ports,
            ..container(name, Some(ip))
        }
    }

    #[test]
    fn containers_without_an_address_are_off_the_network() {
        let on = container("shop", Some(IP));
        let off = container("shop-2", None);
        assert_eq!(on_network(&[&on, &off]), [&on]);
        let problems = off_network(&[&on, &off]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].kind, Kind::NotOnNetwork);
        assert!(problems[0].facts.partial, "shop is still on it");
        assert!(!off_network(&[&off])[0].facts.partial);
        assert!(off_network(&[&on]).is_empty());
    }

    #[test]
    fn an_unrouted_app_is_missing_its_route_after_the_grace_time() {
        let up = |secs: Option<f64>| ContainerObs {
            up_secs: secs,
            ..container("shop", Some(IP))
        };
        let new = up(Some(ROUTE_GRACE_SECS / 2.0));
        let old = up(Some(ROUTE_GRACE_SECS));
        let unknown = up(None);
        assert!(awaiting_route(&[&new]));
        assert!(route_missing(&[&new]).is_none());
        assert!(
            !awaiting_route(&[&new, &old]),
            "one has been up for a while"
        );
        assert_eq!(
            route_missing(&[&new, &old]).map(|p| p.kind),
            Some(Kind::RouteMissing)
        );
        assert!(!awaiting_route(&[&unknown]), "no start time: no grace");
        assert!(route_missing(&[&unknown]).is_some());
        assert!(!awaiting_route(&[]));
        assert!(route_missing(&[]).is_none(), "nothing nginx could reach");
    }

    #[test]
    fn a_refused_server_is_explained_by_what_the_containers_listen_on() {
        let server = SocketAddr::new(IP, 3000);
        let at_ip = |ports| listening("shop", IP, ports);
        let moved = |ports| listening("shop", OTHER_IP, ports);
        let cases: Vec<(&str, Vec<ContainerObs>, &str)> = vec![
            (
                "listens on another port",
                vec![at_ip(Some(vec![4000]))],
                "other port",
            ),
            (
                "listens on the port",
                vec![at_ip(Some(vec![3000]))],
                "unresponsive",
            ),
            (
                "listens on nothing",
                vec![at_ip(Some(vec![]))],
                "unresponsive",
            ),
            ("ports unknown", vec![at_ip(None)], "unresponsive"),
            (
                "moved, on another port",
                vec![moved(Some(vec![5000]))],
                "moved",
            ),
            ("moved, same port", vec![moved(Some(vec![3000]))], "stale"),
            ("moved, ports unknown", vec![moved(None)], "stale"),
            (
                "moved, listens on nothing",
                vec![moved(Some(vec![]))],
                "stale",
            ),
            (
                "moved, one of two with unknown ports",
                vec![moved(Some(vec![5000])), listening("b", OLD_IP, None)],
                "stale",
            ),
            ("no container on the network", vec![], "stale"),
        ];
        for (what, containers, want) in cases {
            let on: Vec<&ContainerObs> = containers.iter().collect();
            let got = match refusal(server, 3000, &on) {
                Refusal::OtherPort(_) => "other port",
                Refusal::Moved(_) => "moved",
                Refusal::Stale => "stale",
                Refusal::Unresponsive(_) => "unresponsive",
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn only_refused_servers_are_problems_and_partial_while_another_answers() {
        let servers = [SocketAddr::new(IP, 3000), SocketAddr::new(OTHER_IP, 3000)];
        let r = route(&servers);
        let a = container("shop", Some(IP));
        let b = container("shop-2", Some(OTHER_IP));
        let tcp = |a_ok, b_ok| {
            vec![
                probe(&servers[0].to_string(), a_ok, None),
                probe(&servers[1].to_string(), b_ok, None),
            ]
        };
        assert!(refused_servers(&r, &tcp(true, true), &[&a, &b]).is_empty());
        let one = refused_servers(&r, &tcp(false, true), &[&a, &b]);
        assert_eq!(one.len(), 1, "{one:#?}");
        assert_eq!(
            (one[0].kind, one[0].facts.partial),
            (Kind::AppUnresponsive, true)
        );
        assert!(
            one[0]
                .summary
                .contains("10.7.0.2:3000 (container shop): connection refused"),
            "{}",
            one[0].summary
        );
        let both = refused_servers(&r, &tcp(false, false), &[&a, &b]);
        assert!(both.iter().all(|p| !p.facts.partial), "{both:#?}");
    }

    #[test]
    fn a_forced_port_is_named_in_the_finding() {
        let mut app = refusing(healthy_app(), Some(vec![3000]));
        let forced = SocketAddr::new(IP, 9999);
        app.route = Some(route(&[forced]));
        app.tcp[0].target = forced.to_string();
        app.containers[0].forced_port = Some("9999".into());
        let (_, findings) = classify_app(&app, true, &Rules::default());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, "port_mismatch");
        assert!(
            findings[0].summary.contains("forced to 9999"),
            "{}",
            findings[0].summary
        );
        assert!(
            findings[0].summary.contains("set butler.port=3000"),
            "names the port it listens on and the label to change: {}",
            findings[0].summary
        );
    }

    #[test]
    fn several_listening_ports_with_nothing_to_choose_by_are_named() {
        let app = refusing(healthy_app(), Some(vec![9100, 9200]));
        let (_, findings) = classify_app(&app, true, &Rules::default());
        assert_eq!(findings[0].kind, "port_mismatch", "{findings:#?}");
        assert!(
            findings[0].summary.contains("listens on 9100, 9200")
                && findings[0].summary.contains("butler.port to one of them"),
            "{}",
            findings[0].summary
        );
    }
}
