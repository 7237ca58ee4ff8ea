//! From container snapshots to routes: which containers are apps, what each app is called, which
//! hosts it answers and which `ip:port` servers it has. Pure and deterministic; every untrusted
//! value is validated here, and a bad one becomes a `Problem` for its own container only.

use std::collections::{BTreeMap, BTreeSet};

use crate::docker::ContainerSnapshot;
use crate::labels::{
    DeployLabels, ENV_VIRTUAL_HOST, LABEL_DEPLOY_ID, LABEL_ENABLE, LABEL_HOST, LABEL_NAME,
    LABEL_ROLE,
};
use crate::proxy::model::{Down, Plan, PlanSettings, Problem, ProblemKind, Route, UpstreamServer};
use crate::proxy::ports::{self, PortError};
use crate::proxy::sanitize::{self, quote};

/// App names the renderer needs for itself: `sites/000-default.conf` is the default server.
pub const RESERVED_APP_NAMES: [&str; 1] = ["000-default"];

/// Shortest id prefix accepted in `own_container_ids`: Docker's short id. A shorter one (or an
/// empty string) would match unrelated containers.
const MIN_ID_PREFIX: usize = 12;

/// Plans the routes for `containers`. Never fails: whatever is wrong is in `Plan::problems`.
pub fn plan(containers: &[ContainerSnapshot], settings: &PlanSettings) -> Plan {
    let mut problems = Vec::new();
    let mut apps: BTreeMap<String, Vec<Member<'_>>> = BTreeMap::new();

    for c in containers {
        if !c.running || is_own(c, settings) || is_held(c, settings) || !in_scope(c, settings) {
            continue;
        }
        if let Some(member) = evaluate(c, settings, &mut problems) {
            apps.entry(member.app.clone()).or_default().push(member);
        }
    }

    // Apps that cannot serve anything take no part in host claims, so they cannot take a host
    // away from an app that can.
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    // An app with any running container is not down, even when none of them can serve.
    let running_apps: BTreeSet<String> = containers
        .iter()
        .filter(|c| c.running)
        .filter_map(|c| app_of(c, settings))
        .collect();
    for (app, members) in apps {
        let servers = healthy_servers(&members, &mut problems);
        if servers.is_empty() {
            not_routed(
                &app,
                &members,
                "none of its containers is a usable upstream server (see the other problems)",
                &mut problems,
            );
            continue;
        }
        let own_hosts = own_host(&app, settings, &members, &mut problems)
            .into_iter()
            .chain(
                members
                    .first()
                    .and_then(|m| full_name_host(m.c, &app, settings)),
            )
            .collect();
        candidates.push(Candidate {
            app,
            own_hosts,
            members,
            servers,
        });
    }

    let winners = resolve_host_claims(&candidates);
    let mut routes = Vec::new();
    for cand in candidates {
        let mut hosts: Vec<String> = cand.own_hosts.clone();
        let extras: BTreeSet<&String> = cand
            .members
            .iter()
            .flat_map(|m| &m.hosts)
            .filter(|h| !cand.own_hosts.contains(h))
            .collect();
        for host in extras {
            let winner = &winners[host.as_str()];
            if *winner == cand.app {
                hosts.push(host.clone());
                continue;
            }
            for m in cand.members.iter().filter(|m| m.hosts.contains(host)) {
                problems.push(m.problem(
                    ProblemKind::HostConflict,
                    format!(
                        "host {host} is also claimed by app {winner}, which gets it (an app's own \
                         <app>.<domain> host comes first, then the alphabetically first app); \
                         {app} is served without it; remove the host from one of the two apps",
                        app = cand.app
                    ),
                ));
            }
        }
        if hosts.is_empty() {
            not_routed(
                &cand.app,
                &cand.members,
                "it has no valid host name left (see the other problems)",
                &mut problems,
            );
            continue;
        }
        let mut servers = cand.servers;
        servers.sort_by(|a, b| {
            (&a.container_name, &a.container_id, a.ip, a.port).cmp(&(
                &b.container_name,
                &b.container_id,
                b.ip,
                b.port,
            ))
        });
        servers.dedup();
        routes.push(Route {
            app: cand.app,
            hosts,
            servers,
            down: None,
        });
    }
    let mut taken: BTreeSet<String> = routes.iter().flat_map(|r| r.hosts.clone()).collect();
    routes.extend(down_routes(containers, settings, &running_apps, &mut taken));
    routes.sort_by(|a, b| a.app.cmp(&b.app));

    problems.sort_by(|a, b| {
        (
            &a.app,
            &a.container_name,
            &a.container_id,
            a.kind,
            &a.reason,
        )
            .cmp(&(
                &b.app,
                &b.container_name,
                &b.container_id,
                b.kind,
                &b.reason,
            ))
    });
    problems.dedup();
    Plan { routes, problems }
}

/// One container that belongs to an app: its values passed validation, though it may still lack
/// a port or an address (then `server` is `None`).
struct Member<'a> {
    c: &'a ContainerSnapshot,
    app: String,
    /// Extra hosts from `butler.host` and `VIRTUAL_HOST`, validated.
    hosts: Vec<String>,
    server: Option<UpstreamServer>,
}

impl Member<'_> {
    fn problem(&self, kind: ProblemKind, reason: String) -> Problem {
        Problem {
            container_id: self.c.id.clone(),
            container_name: self.c.name.clone(),
            app: Some(self.app.clone()),
            kind,
            reason,
        }
    }
}

struct Candidate<'a> {
    app: String,
    /// `<app>.<domain>` and, for a name cut to one DNS label, `<full name>.<domain>`.
    own_hosts: Vec<String>,
    members: Vec<Member<'a>>,
    servers: Vec<UpstreamServer>,
}

/// The app's upstream servers. An instance Docker reports `starting` or `unhealthy` (its image has
/// a HEALTHCHECK) stays out while another instance can serve; when none can, all stay in, so the
/// upstream is never empty and nginx's error page says what is wrong.
fn healthy_servers(members: &[Member<'_>], problems: &mut Vec<Problem>) -> Vec<UpstreamServer> {
    let not_ready =
        |m: &Member<'_>| matches!(m.c.health.as_deref(), Some("starting" | "unhealthy"));
    let with_server = || members.iter().filter(|m| m.server.is_some());
    if with_server().all(not_ready) {
        return with_server().filter_map(|m| m.server.clone()).collect();
    }
    for m in with_server().filter(|m| not_ready(m)) {
        problems.push(m.problem(
            ProblemKind::Unhealthy,
            format!(
                "Docker reports it {}: out of the upstream until its health check passes; the \
                 app's other instances serve meanwhile",
                m.c.health.as_deref().unwrap_or_default()
            ),
        ));
    }
    with_server()
        .filter(|m| !not_ready(m))
        .filter_map(|m| m.server.clone())
        .collect()
}

fn is_own(c: &ContainerSnapshot, settings: &PlanSettings) -> bool {
    c.labels.contains_key(LABEL_ROLE)
        || settings.own_container_names.contains(&c.name)
        || settings
            .own_container_ids
            .iter()
            .any(|id| *id == c.id || (id.len() >= MIN_ID_PREFIX && c.id.starts_with(id.as_str())))
}

/// Whether the container carries the label `docker.only_label` asks for (always, without one).
pub fn in_scope(c: &ContainerSnapshot, settings: &PlanSettings) -> bool {
    match settings.only_label.as_deref() {
        None => true,
        Some(spec) => match spec.split_once('=') {
            Some((key, value)) => c.labels.get(key).is_some_and(|v| v == value),
            None => c.labels.contains_key(spec),
        },
    }
}

/// The app a container belongs to, named as `plan` names it; `None` for the butler's own
/// containers, opted-out ones and names no app can be built from. The health-monitor uses it to
/// find an app's stopped containers, which `plan` never sees.
pub fn app_of(c: &ContainerSnapshot, settings: &PlanSettings) -> Option<String> {
    if is_own(c, settings) || !in_scope(c, settings) {
        return None;
    }
    match c.labels.get(LABEL_ENABLE).map(|v| parse_bool(v)) {
        None | Some(Some(true)) => app_name(c).ok(),
        _ => None,
    }
}

/// A container of a deployment that is not (or no longer) allowed in the upstream: `butler deploy`
/// holds new instances back until they are healthy and old ones while they drain.
fn is_held(c: &ContainerSnapshot, settings: &PlanSettings) -> bool {
    c.labels
        .get(LABEL_DEPLOY_ID)
        .is_some_and(|id| settings.held_deployments.contains(id))
}

/// Validates one container's values. `None` when it is opted out or when any value is invalid;
/// in the latter case every invalid value has been reported, not just the first.
fn evaluate<'a>(
    c: &'a ContainerSnapshot,
    settings: &PlanSettings,
    problems: &mut Vec<Problem>,
) -> Option<Member<'a>> {
    let problem = |app: Option<&str>, kind, reason: String| Problem {
        container_id: c.id.clone(),
        container_name: c.name.clone(),
        app: app.map(str::to_string),
        kind,
        reason,
    };

    match c.labels.get(LABEL_ENABLE).map(|v| parse_bool(v)) {
        None | Some(Some(true)) => {}
        Some(Some(false)) => return None,
        Some(None) => {
            // A typo in an opt-out must not publish the app: fail closed.
            problems.push(problem(
                None,
                ProblemKind::InvalidLabel,
                format!(
                    "label {LABEL_ENABLE}={} is neither true nor false, so the container is not \
                     served; set {LABEL_ENABLE}=false to opt out or remove the label",
                    quote(&c.labels[LABEL_ENABLE])
                ),
            ));
            return None;
        }
    }

    let app = match app_name(c) {
        Ok(app) => app,
        Err(reason) => {
            problems.push(problem(None, ProblemKind::InvalidName, reason));
            return None;
        }
    };
    let app_ref = Some(app.as_str());

    let mut valid = true;
    let mut hosts = Vec::new();
    let host_sources = [
        ("label", LABEL_HOST, c.labels.get(LABEL_HOST)),
        (
            "environment variable",
            ENV_VIRTUAL_HOST,
            c.env.get(ENV_VIRTUAL_HOST),
        ),
    ];
    for (what, key, value) in host_sources {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        match sanitize::parse_host_list(value) {
            Ok(list) => hosts.extend(list),
            Err((entry, err)) => {
                valid = false;
                problems.push(problem(
                    app_ref,
                    ProblemKind::InvalidHost,
                    format!(
                        "{what} {key}={} is rejected: host {} {err}; fix the value or remove it \
                         (the container is not served until then)",
                        quote(value),
                        quote(&entry)
                    ),
                ));
            }
        }
    }

    let port = match ports::choose_port(c) {
        Ok(choice) => Some(choice),
        Err(err @ PortError::Invalid { .. }) => {
            valid = false;
            problems.push(problem(
                app_ref,
                ProblemKind::InvalidPort,
                format!("{err} (the container is not served until then)"),
            ));
            None
        }
        Err(err @ PortError::NotFound { .. }) => {
            problems.push(problem(app_ref, ProblemKind::NoPort, err.to_string()));
            None
        }
    };
    if !valid {
        return None;
    }

    // Reported even without a port: the edge connects the container, and a connect probe on its
    // new address may then find the port.
    let on_proxy = c.networks.get(&settings.network).copied();
    let meanwhile = settings
        .also_reachable
        .iter()
        .find_map(|net| Some((net, *c.networks.get(net)?)));
    if on_proxy.is_none() {
        let reason = match meanwhile {
            Some((other, _)) => format!(
                "the container has no address on network {net}; it is served at its address on \
                 {other} until it is connected (`docker network connect {net} {name}`)",
                net = settings.network,
                name = shell_word(&c.name),
            ),
            None => format!(
                "the container has no address on network {net}, so nginx cannot reach it; connect \
                 it with `docker network connect {net} {name}`",
                net = settings.network,
                name = shell_word(&c.name),
            ),
        };
        problems.push(problem(app_ref, ProblemKind::NotOnNetwork, reason));
    }
    let ip = on_proxy.or(meanwhile.map(|(_, ip)| ip));
    let server = ip.zip(port).map(|(ip, choice)| UpstreamServer {
        container_id: c.id.clone(),
        container_name: c.name.clone(),
        ip,
        port: choice.port,
        port_reason: choice.reason,
        deployment: DeployLabels::parse(&c.labels),
    });

    Some(Member {
        c,
        app,
        hosts,
        server,
    })
}

/// The app name from `butler.name`, else from the container name, sanitized.
fn app_name(c: &ContainerSnapshot) -> Result<String, String> {
    let label = c.labels.get(LABEL_NAME).filter(|v| !v.is_empty());
    let (source, raw) = match label {
        Some(v) => (format!("label {LABEL_NAME}"), v.as_str()),
        None => ("container name".to_string(), c.name.as_str()),
    };
    // Sanitizing would turn `x"; } server {` into the harmless name `x-server`, but a value like
    // that is an attempt to write config, not a name: publishing it under any name would surprise.
    if let Some(ch) = raw.chars().find(|ch| is_config_syntax(*ch)) {
        return Err(format!(
            "{source} {} contains {ch:?}, which is never part of a name, so the container is not \
             served; use letters, digits and '-'",
            quote(raw)
        ));
    }
    let Some(app) = sanitize::sanitize_app_name(raw) else {
        return Err(format!(
            "{source} {} has no letter or digit to build an app name from, so the container is \
             not served; set the label {LABEL_NAME}=<name>",
            quote(raw)
        ));
    };
    if RESERVED_APP_NAMES.contains(&app.as_str()) {
        return Err(format!(
            "{source} {} gives the app name {app}, which the butler reserves for itself, so the \
             container is not served; set the label {LABEL_NAME}=<another name>",
            quote(raw)
        ));
    }
    Ok(app)
}

/// A name as it can be pasted into a shell: Docker's own names need no quoting; anything else is
/// quoted and escaped, so a hostile name cannot break the suggested command or the log line.
fn shell_word(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if plain { name.to_string() } else { quote(name) }
}

fn is_config_syntax(ch: char) -> bool {
    ch.is_control() || matches!(ch, '"' | '\'' | '`' | ';' | '{' | '}' | '$' | '\\' | '#')
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `<app>.<domain>`, validated like any other host: a bad `proxy.domain` must not reach nginx
/// either. When it is invalid every member is told, and the app keeps its other hosts.
fn own_host(
    app: &str,
    settings: &PlanSettings,
    members: &[Member<'_>],
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let host = format!("{app}.{}", settings.domain);
    match sanitize::validate_host(&host) {
        Ok(host) => Some(host),
        Err(err) => {
            for m in members {
                problems.push(m.problem(
                    ProblemKind::InvalidHost,
                    format!(
                        "the app's own host {} {err}; check proxy.domain ({}) in butler.toml, or \
                         shorten the app name with the label {LABEL_NAME}",
                        quote(&host),
                        quote(&settings.domain)
                    ),
                ));
            }
            None
        }
    }
}

/// `<full name>.<domain>` for an app whose name (label `butler.name`, else the container name)
/// was cut to one DNS label: the name the user typed answers too, beside the cut alias.
fn full_name_host(c: &ContainerSnapshot, app: &str, settings: &PlanSettings) -> Option<String> {
    let raw = c
        .labels
        .get(LABEL_NAME)
        .filter(|v| !v.is_empty())
        .unwrap_or(&c.name);
    let full = sanitize::sanitize_full_name(raw)?;
    if full.len() <= sanitize::MAX_APP_NAME_LEN {
        return None;
    }
    sanitize::validate_full_name_host(&format!("{full}.{}", settings.domain), app).ok()
}

/// Host → the app that serves it. An app's own `<app>.<domain>` beats an extra host claimed by
/// another app (nobody can take an app's own address away); otherwise the alphabetically first
/// app wins, so the outcome never depends on the order Docker lists containers in.
fn resolve_host_claims(candidates: &[Candidate<'_>]) -> BTreeMap<String, String> {
    let mut best: BTreeMap<&str, (u8, &str)> = BTreeMap::new();
    for cand in candidates {
        let own = cand.own_hosts.iter().map(|h| (0u8, h));
        let extra = cand.members.iter().flat_map(|m| &m.hosts).map(|h| (1u8, h));
        for (rank, host) in own.chain(extra) {
            let claim = (rank, cand.app.as_str());
            best.entry(host.as_str())
                .and_modify(|cur| *cur = (*cur).min(claim))
                .or_insert(claim);
        }
    }
    best.into_iter()
        .map(|(h, (_, app))| (h.to_string(), app.to_string()))
        .collect()
}

/// Routes for apps that were routed and whose containers have all exited: the hosts they had
/// (those no running app has taken since) answer a 503 page saying the app is down and since
/// when. Their values are validated as for a running container; an invalid one is left out here
/// without a problem, because the container is not running and nothing else depends on it.
fn down_routes(
    containers: &[ContainerSnapshot],
    settings: &PlanSettings,
    running_apps: &BTreeSet<String>,
    taken: &mut BTreeSet<String>,
) -> Vec<Route> {
    let mut exited: BTreeMap<String, Vec<&ContainerSnapshot>> = BTreeMap::new();
    for c in containers {
        if c.running || c.exited.is_none() || is_held(c, settings) {
            continue;
        }
        let Some(app) = app_of(c, settings) else {
            continue;
        };
        if !running_apps.contains(&app) && settings.routed_apps.contains(&app) {
            exited.entry(app).or_default().push(c);
        }
    }
    let mut routes = Vec::new();
    for (app, members) in exited {
        let ended = |c: &&ContainerSnapshot| {
            let exit = c.exited.as_ref().expect("only exited containers");
            (exit.finished_at.clone(), c.name.clone(), c.id.clone())
        };
        let Some(last) = members.iter().copied().max_by_key(ended) else {
            continue;
        };
        let exit = last.exited.as_ref().expect("only exited containers");
        let mut hosts = Vec::new();
        let own = sanitize::validate_host(&format!("{app}.{}", settings.domain)).ok();
        let full = own.as_ref().and(full_name_host(last, &app, settings));
        hosts.extend(own.into_iter().chain(full).filter(|h| !taken.contains(h)));
        let extras: BTreeSet<String> = members
            .iter()
            .flat_map(|c| [c.labels.get(LABEL_HOST), c.env.get(ENV_VIRTUAL_HOST)])
            .flatten()
            .filter_map(|value| sanitize::parse_host_list(value).ok())
            .flatten()
            .filter(|h| !taken.contains(h) && !hosts.contains(h))
            .collect();
        hosts.extend(extras);
        if hosts.is_empty() {
            continue;
        }
        taken.extend(hosts.iter().cloned());
        routes.push(Route {
            hosts,
            servers: Vec::new(),
            down: Some(Down {
                container_name: sanitize::sanitize_app_name(&last.name).unwrap_or_default(),
                exit_code: exit.exit_code,
                oom_killed: exit.oom_killed,
                stopped: !exit.crashed(),
                since: exit.finished_at.as_deref().and_then(plain_utc_time),
            }),
            app,
        });
    }
    routes
}

/// `2026-12-02T11:40:20.123456789Z` → `2026-12-02 11:40:20 UTC`; anything else (another zone, a
/// malformed value) → `None`. The engine's text goes into a page only in this checked form.
pub fn plain_utc_time(rfc3339: &str) -> Option<String> {
    let b = rfc3339.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.ends_with(b"Z")
        && b[19..b.len() - 1]
            .iter()
            .all(|c| *c == b'.' || c.is_ascii_digit());
    shape.then(|| format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..19]))
}

fn not_routed(app: &str, members: &[Member<'_>], why: &str, problems: &mut Vec<Problem>) {
    for m in members {
        problems.push(m.problem(
            ProblemKind::NotRouted,
            format!("app {app} is not routed: {why}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use super::*;
    use crate::proxy::ports::PortReason;

    const NET: &str = "devops-butler-net";

    fn settings() -> PlanSettings {
        PlanSettings::default()
    }

    /// A running container on the proxy network exposing port 80.
    fn app(id: &str, name: &str, ip: &str) -> ContainerSnapshot {
        ContainerSnapshot {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            exposed_ports: vec![80],
            networks: BTreeMap::from([(NET.to_string(), ip.parse::<IpAddr>().unwrap())]),
            running: true,
            ..Default::default()
        }
    }

    fn with_label(mut c: ContainerSnapshot, k: &str, v: &str) -> ContainerSnapshot {
        c.labels.insert(k.into(), v.into());
        c
    }

    fn with_env(mut c: ContainerSnapshot, k: &str, v: &str) -> ContainerSnapshot {
        c.env.insert(k.into(), v.into());
        c
    }

    fn kinds(p: &Plan) -> Vec<(String, ProblemKind)> {
        p.problems
            .iter()
            .map(|p| (p.container_name.clone(), p.kind))
            .collect()
    }

    #[test]
    fn one_app_gets_its_own_host_and_server() {
        let p = plan(&[app("id1", "web", "172.18.0.2")], &settings());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.routes.len(), 1);
        let r = &p.routes[0];
        assert_eq!(r.app, "web");
        assert_eq!(r.hosts, ["web.localhost"]);
        assert_eq!(r.servers.len(), 1);
        assert_eq!(r.servers[0].ip.to_string(), "172.18.0.2");
        assert_eq!(r.servers[0].port, 80);
        assert_eq!(r.servers[0].port_reason, PortReason::OnlyExposed);
    }

    fn exited(c: ContainerSnapshot, code: i64, at: &str) -> ContainerSnapshot {
        ContainerSnapshot {
            running: false,
            networks: BTreeMap::new(),
            exited: Some(crate::docker::Exited {
                exit_code: code,
                oom_killed: false,
                finished_at: Some(at.into()),
                stopped_by_user: false,
            }),
            ..c
        }
    }

    fn routed(apps: &[&str]) -> PlanSettings {
        PlanSettings {
            routed_apps: apps.iter().map(|a| a.to_string()).collect(),
            ..settings()
        }
    }

    #[test]
    fn an_app_whose_containers_all_exited_keeps_a_down_route() {
        let shop = with_label(
            exited(
                app("s1", "shop", "172.18.0.2"),
                137,
                "2026-12-02T11:40:20.5Z",
            ),
            LABEL_HOST,
            "shop.example.com",
        );
        let p = plan(std::slice::from_ref(&shop), &routed(&["shop"]));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let [route] = p.routes.as_slice() else {
            panic!("one route: {:?}", p.routes)
        };
        assert_eq!(route.hosts, ["shop.localhost", "shop.example.com"]);
        assert!(route.servers.is_empty());
        let down = route.down.as_ref().expect("down");
        assert_eq!(down.state(), "down");
        assert_eq!(down.since.as_deref(), Some("2026-12-02 11:40:20 UTC"));
        assert_eq!(
            down.describe(),
            "container shop exited with code 137 (killed) at 2026-12-02 11:40:20 UTC"
        );

        // Never routed (a finished one-off job): not an app at all.
        assert!(
            plan(std::slice::from_ref(&shop), &settings())
                .routes
                .is_empty()
        );

        // A user's `docker stop` or a clean exit: stopped, not down.
        let mut stopped = shop.clone();
        stopped.exited.as_mut().unwrap().stopped_by_user = true;
        let p = plan(&[stopped], &routed(&["shop"]));
        assert_eq!(p.routes[0].down.as_ref().unwrap().state(), "stopped");
        let clean = exited(app("s2", "shop", "172.18.0.2"), 0, "2026-12-02T11:40:20Z");
        let p = plan(&[clean], &routed(&["shop"]));
        assert_eq!(p.routes[0].down.as_ref().unwrap().state(), "stopped");
    }

    #[test]
    fn a_down_app_never_takes_a_host_from_a_running_one() {
        let old = with_label(
            exited(app("o1", "old", "172.18.0.2"), 1, "2026-12-02T10:00:00Z"),
            LABEL_HOST,
            "www.example.com",
        );
        let new = with_label(
            app("n1", "new", "172.18.0.3"),
            LABEL_HOST,
            "www.example.com",
        );
        let p = plan(&[old, new], &routed(&["old", "new"]));
        let hosts: Vec<(&str, Vec<String>)> = p
            .routes
            .iter()
            .map(|r| (r.app.as_str(), r.hosts.clone()))
            .collect();
        assert_eq!(
            hosts,
            [
                (
                    "new",
                    vec!["new.localhost".into(), "www.example.com".into()]
                ),
                ("old", vec!["old.localhost".into()]),
            ]
        );
    }

    #[test]
    fn an_app_with_a_running_instance_is_not_down() {
        let dead = exited(app("d1", "web", "172.18.0.2"), 137, "2026-12-02T10:00:00Z");
        let live = app("l1", "web", "172.18.0.3");
        let p = plan(&[dead, live], &routed(&["web"]));
        assert_eq!(p.routes.len(), 1);
        assert!(p.routes[0].down.is_none());
        assert_eq!(p.routes[0].servers.len(), 1);
    }

    #[test]
    fn of_several_exited_instances_the_last_to_end_is_described() {
        let a = exited(app("a1", "web", "172.18.0.2"), 1, "2026-12-02T10:00:00Z");
        let b = exited(
            with_label(app("b1", "web-2", "172.18.0.3"), LABEL_NAME, "web"),
            137,
            "2026-12-02T10:05:00Z",
        );
        let p = plan(&[a, b], &routed(&["web"]));
        let down = p.routes[0].down.as_ref().unwrap();
        assert_eq!(
            (down.container_name.as_str(), down.exit_code),
            ("web-2", 137)
        );
    }

    #[test]
    fn a_name_longer_than_a_label_is_served_under_its_full_name_too() {
        let name = format!("shop-{}", "x".repeat(75));
        let long = app("l1", &name, "172.18.0.2");
        // A label cannot name the full-name host: it is no valid host for anything but its app.
        let thief = with_label(
            app("t1", "thief", "172.18.0.3"),
            LABEL_HOST,
            &format!("{name}.localhost"),
        );
        let p = plan(&[long, thief], &settings());
        let alias = sanitize::sanitize_app_name(&name).unwrap();
        let route = p.routes.iter().find(|r| r.app == alias).expect("routed");
        assert_eq!(
            route.hosts,
            [format!("{alias}.localhost"), format!("{name}.localhost")]
        );
        assert!(p.routes.iter().all(|r| r.app != "thief"));
        assert_eq!(kinds(&p), [("thief".to_string(), ProblemKind::InvalidHost)]);
        // A short name has one own host.
        let p = plan(&[app("s1", "short", "172.18.0.4")], &settings());
        assert_eq!(p.routes[0].hosts, ["short.localhost"]);
    }

    #[test]
    fn only_a_plain_utc_time_reaches_a_page() {
        let cases = [
            ("2026-12-02T11:40:20Z", Some("2026-12-02 11:40:20 UTC")),
            (
                "2026-12-02T11:40:20.123456789Z",
                Some("2026-12-02 11:40:20 UTC"),
            ),
            ("2026-12-02T11:40:20+01:00", None),
            ("2026-12-02T11:40:20.<b>Z", None),
            ("0001-01-01", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(plain_utc_time(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn which_containers_are_apps() {
        let mut stopped = app("id2", "stopped", "172.18.0.3");
        stopped.running = false;
        let s = PlanSettings {
            own_container_names: vec!["butler".into()],
            own_container_ids: vec!["abcdef123456".into(), "".into()],
            ..settings()
        };
        let cases: &[(&str, ContainerSnapshot, bool)] = &[
            ("plain", app("id1", "web", "172.18.0.2"), true),
            ("stopped", stopped, false),
            (
                "opt-out",
                with_label(app("id3", "a", "172.18.0.4"), LABEL_ENABLE, "false"),
                false,
            ),
            (
                "opt-out FALSE",
                with_label(app("id3", "a", "172.18.0.4"), LABEL_ENABLE, "FALSE"),
                false,
            ),
            (
                "explicit enable",
                with_label(app("id3", "a", "172.18.0.4"), LABEL_ENABLE, "true"),
                true,
            ),
            (
                "role label",
                with_label(
                    app("id4", "butler-nginx", "172.18.0.5"),
                    LABEL_ROLE,
                    "nginx",
                ),
                false,
            ),
            ("own name", app("id5", "butler", "172.18.0.6"), false),
            (
                "own id prefix",
                app("abcdef1234567890", "x", "172.18.0.7"),
                false,
            ),
            (
                "empty own id matches nothing",
                app("zzz", "y", "172.18.0.8"),
                true,
            ),
        ];
        for (name, c, routed) in cases {
            let p = plan(std::slice::from_ref(c), &s);
            assert_eq!(!p.routes.is_empty(), *routed, "case {name}: {p:?}");
            assert!(p.problems.is_empty(), "case {name}: {:?}", p.problems);
        }
    }

    #[test]
    fn only_label_limits_the_apps_to_the_labelled_containers() {
        let web = with_label(app("id1", "web", "172.18.0.2"), "butler.group", "web");
        let blog = with_label(app("id2", "blog", "172.18.0.3"), "butler.group", "blog");
        let plain = app("id3", "plain", "172.18.0.4");
        let all = [web.clone(), blog.clone(), plain.clone()];
        let cases: &[(Option<&str>, &[&str])] = &[
            (None, &["blog", "plain", "web"]),
            (Some("butler.group=web"), &["web"]),
            (Some("butler.group"), &["blog", "web"]),
            (Some("butler.group=shop"), &[]),
        ];
        for (only_label, apps) in cases {
            let s = PlanSettings {
                only_label: only_label.map(str::to_owned),
                ..settings()
            };
            let p = plan(&all, &s);
            let routed: Vec<&str> = p.routes.iter().map(|r| r.app.as_str()).collect();
            assert_eq!(routed, *apps, "{only_label:?}");
            let found: Vec<String> = all.iter().filter_map(|c| app_of(c, &s)).collect();
            assert_eq!(found, {
                let mut a = apps.to_vec();
                a.sort_by_key(|app| all.iter().position(|c| c.name == *app));
                a
            });
        }
    }

    #[test]
    fn an_unreadable_enable_label_fails_closed() {
        let c = with_label(app("id1", "web", "172.18.0.2"), LABEL_ENABLE, "nope");
        let p = plan(&[c], &settings());
        assert!(p.routes.is_empty());
        assert_eq!(kinds(&p), [("web".to_string(), ProblemKind::InvalidLabel)]);
    }

    #[test]
    fn names_come_from_the_label_or_the_container() {
        let cases: &[(ContainerSnapshot, Option<&str>)] = &[
            (app("1", "My_Web", "10.0.0.1"), Some("my-web")),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "Shop"),
                Some("shop"),
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, ""),
                Some("x"),
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "___"),
                None,
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "000-default"),
                None,
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "a\"; } server {"),
                None,
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "a\nb"),
                None,
            ),
            (
                with_label(app("1", "x", "10.0.0.1"), LABEL_NAME, "$host"),
                None,
            ),
        ];
        for (c, want) in cases {
            let p = plan(std::slice::from_ref(c), &settings());
            let got = p.routes.first().map(|r| r.app.as_str());
            assert_eq!(got, *want, "{:?}", c.labels);
            if want.is_none() {
                assert_eq!(kinds(&p), [("x".to_string(), ProblemKind::InvalidName)]);
            }
        }
    }

    #[test]
    fn hosts_come_from_the_label_and_virtual_host() {
        let c = with_env(
            with_label(
                app("1", "web", "10.0.0.1"),
                LABEL_HOST,
                "b.example.com, A.example.com",
            ),
            ENV_VIRTUAL_HOST,
            "c.example.com,web.localhost",
        );
        let p = plan(&[c], &settings());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            p.routes[0].hosts,
            [
                "web.localhost",
                "a.example.com",
                "b.example.com",
                "c.example.com"
            ]
        );
    }

    #[test]
    fn hostile_values_make_a_problem_for_that_container_only() {
        let hostile: &[(&str, &str, ProblemKind)] = &[
            (LABEL_HOST, "x.com\"", ProblemKind::InvalidHost),
            (LABEL_HOST, "x.com;", ProblemKind::InvalidHost),
            (LABEL_HOST, "x.com { }", ProblemKind::InvalidHost),
            (LABEL_HOST, "x.com\nserver", ProblemKind::InvalidHost),
            (
                LABEL_HOST,
                "x.com; } server { listen 80; server_name evil.com",
                ProblemKind::InvalidHost,
            ),
            (LABEL_HOST, "*.x.com", ProblemKind::InvalidHost),
            (LABEL_HOST, "ok.com,", ProblemKind::InvalidHost),
            (ENV_VIRTUAL_HOST, "$host", ProblemKind::InvalidHost),
            (crate::labels::LABEL_PORT, "80; }", ProblemKind::InvalidPort),
            (crate::labels::LABEL_PORT, "http", ProblemKind::InvalidPort),
        ];
        for (key, value, kind) in hostile {
            let bad = if key.starts_with("butler.") {
                with_label(app("bad", "evil", "10.0.0.9"), key, value)
            } else {
                with_env(app("bad", "evil", "10.0.0.9"), key, value)
            };
            let good = app("good", "web", "10.0.0.2");
            let p = plan(&[bad, good], &settings());
            assert_eq!(p.routes.len(), 1, "{key}={value:?}: {p:?}");
            assert_eq!(p.routes[0].app, "web");
            assert_eq!(kinds(&p), [("evil".to_string(), *kind)], "{key}={value:?}");
            assert_eq!(p.problems[0].app.as_deref(), Some("evil"));
            assert!(
                !p.problems[0].reason.contains('\n'),
                "{}",
                p.problems[0].reason
            );
        }
    }

    #[test]
    fn every_invalid_value_of_a_container_is_reported() {
        let c = with_env(
            with_label(app("1", "web", "10.0.0.1"), crate::labels::LABEL_PORT, "x"),
            ENV_VIRTUAL_HOST,
            "a b",
        );
        let p = plan(&[c], &settings());
        assert!(p.routes.is_empty());
        assert_eq!(
            kinds(&p),
            [
                ("web".to_string(), ProblemKind::InvalidHost),
                ("web".to_string(), ProblemKind::InvalidPort)
            ]
        );
    }

    #[test]
    fn instances_sharing_a_name_are_load_balanced() {
        let a = with_label(app("id-b", "shop-2", "10.0.0.3"), LABEL_NAME, "shop");
        let b = with_label(app("id-a", "shop-1", "10.0.0.2"), LABEL_NAME, "shop");
        let p = plan(&[a, b], &settings());
        assert_eq!(p.routes.len(), 1);
        let names: Vec<_> = p.routes[0]
            .servers
            .iter()
            .map(|s| s.container_name.as_str())
            .collect();
        assert_eq!(names, ["shop-1", "shop-2"]);
    }

    /// A container `butler deploy` started for deployment `id`, revision `rev`.
    fn deployed(id: &str, rev: &str, ip: &str) -> ContainerSnapshot {
        let meta = DeployLabels {
            deployment: id.into(),
            app: "shop".into(),
            revision: rev.into(),
            source: "git:github.com/alice/shop".into(),
            owner: Some("alice".into()),
            repo: Some("shop".into()),
            instance: Some(1),
        };
        let mut c = app(&format!("id-{id}"), &format!("butler-shop-{rev}-1"), ip);
        c.labels = meta.to_labels();
        with_label(c, LABEL_NAME, "shop")
    }

    #[test]
    fn held_deployments_stay_out_of_the_upstream() {
        let old = deployed("1", "aaa", "10.0.0.2");
        let new = deployed("2", "bbb", "10.0.0.3");
        let servers = |held: &[&str]| {
            let s = PlanSettings {
                held_deployments: held.iter().map(|h| h.to_string()).collect(),
                ..settings()
            };
            let p = plan(&[old.clone(), new.clone()], &s);
            // Held is not a problem: the deploy says why, nothing needs fixing.
            assert!(p.problems.is_empty(), "{:?}", p.problems);
            p.routes
                .iter()
                .flat_map(|r| &r.servers)
                .map(|s| s.deployment.as_ref().unwrap().revision.clone())
                .collect::<Vec<_>>()
        };
        // New instances held until healthy, then both serve, then the old ones are held to drain.
        assert_eq!(servers(&["2"]), ["aaa"]);
        assert_eq!(servers(&[]), ["aaa", "bbb"]);
        assert_eq!(servers(&["1"]), ["bbb"]);
        assert!(servers(&["1", "2"]).is_empty());
        // Only the deploy label counts: a plain container of the same app is never held.
        let plain = with_label(app("id-x", "shop-manual", "10.0.0.4"), LABEL_NAME, "shop");
        let s = PlanSettings {
            held_deployments: ["1".to_string(), "2".to_string()].into(),
            ..settings()
        };
        let p = plan(&[old, new, plain], &s);
        assert_eq!(p.routes[0].servers.len(), 1);
        assert_eq!(p.routes[0].servers[0].container_name, "shop-manual");
        assert_eq!(p.routes[0].servers[0].deployment, None);
    }

    #[test]
    fn unhealthy_instances_leave_the_upstream_while_another_can_serve() {
        let health = |mut c: ContainerSnapshot, h: Option<&str>| {
            c.health = h.map(str::to_owned);
            c
        };
        let shop = |id: &str, name: &str, ip: &str, h: Option<&str>| {
            health(with_label(app(id, name, ip), LABEL_NAME, "shop"), h)
        };
        let servers = |p: &Plan| -> Vec<String> {
            p.routes[0]
                .servers
                .iter()
                .map(|s| s.container_name.clone())
                .collect()
        };
        // (each instance's Docker health, the servers routed, how many reported unhealthy)
        type Case<'a> = (&'a [Option<&'a str>], &'a [&'a str], usize);
        let cases: [Case<'_>; 5] = [
            (&[Some("healthy"), Some("unhealthy")], &["shop-1"], 1),
            (&[None, Some("starting")], &["shop-1"], 1),
            (
                &[Some("healthy"), Some("healthy")],
                &["shop-1", "shop-2"],
                0,
            ),
            // None can serve: all stay, never an empty upstream.
            (
                &[Some("unhealthy"), Some("starting")],
                &["shop-1", "shop-2"],
                0,
            ),
            (&[Some("unhealthy")], &["shop-1"], 0),
        ];
        for (states, expected, unhealthy) in cases {
            let containers: Vec<_> = states
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    shop(
                        &format!("id-{i}"),
                        &format!("shop-{}", i + 1),
                        &format!("10.0.0.{}", i + 2),
                        *h,
                    )
                })
                .collect();
            let p = plan(&containers, &settings());
            assert_eq!(servers(&p), expected, "{states:?}");
            let reported = p
                .problems
                .iter()
                .filter(|pr| pr.kind == ProblemKind::Unhealthy)
                .count();
            assert_eq!(reported, unhealthy, "{states:?}: {:?}", p.problems);
        }
    }

    #[test]
    fn a_container_off_the_network_is_reported_and_not_a_server() {
        let mut off = with_label(app("id-off", "shop-2", "10.0.0.3"), LABEL_NAME, "shop");
        off.networks = BTreeMap::from([("bridge".to_string(), "172.17.0.2".parse().unwrap())]);
        let on = with_label(app("id-on", "shop-1", "10.0.0.2"), LABEL_NAME, "shop");

        let p = plan(&[off.clone(), on], &settings());
        assert_eq!(p.routes[0].servers.len(), 1);
        assert_eq!(p.routes[0].servers[0].container_name, "shop-1");
        assert_eq!(
            kinds(&p),
            [("shop-2".to_string(), ProblemKind::NotOnNetwork)]
        );

        // Alone, it leaves its app without a server: no route, never an empty upstream.
        let p = plan(&[off], &settings());
        assert!(p.routes.is_empty());
        assert_eq!(
            kinds(&p),
            [
                ("shop-2".to_string(), ProblemKind::NotOnNetwork),
                ("shop-2".to_string(), ProblemKind::NotRouted)
            ]
        );
    }

    #[test]
    fn a_container_nginx_also_reaches_is_served_there_until_connected() {
        let mut off = app("id-off", "shop", "10.0.0.3");
        off.networks = BTreeMap::from([("bridge".to_string(), "172.17.0.2".parse().unwrap())]);
        let s = PlanSettings {
            also_reachable: vec!["bridge".into()],
            ..settings()
        };
        let p = plan(&[off], &s);
        assert_eq!(p.routes[0].servers.len(), 1);
        assert_eq!(p.routes[0].servers[0].ip.to_string(), "172.17.0.2");
        // Still a problem, so the edge connects it; the text says it is served meanwhile.
        assert_eq!(kinds(&p), [("shop".to_string(), ProblemKind::NotOnNetwork)]);
        assert!(
            p.problems[0]
                .reason
                .contains("served at its address on bridge"),
            "{}",
            p.problems[0].reason
        );
    }

    #[test]
    fn a_container_without_a_port_or_network_gets_both_problems() {
        let mut c = app("1", "worker", "10.0.0.1");
        c.exposed_ports.clear();
        c.networks.clear();
        let p = plan(&[c], &settings());
        assert_eq!(
            kinds(&p),
            [
                ("worker".to_string(), ProblemKind::NoPort),
                ("worker".to_string(), ProblemKind::NotOnNetwork),
                ("worker".to_string(), ProblemKind::NotRouted)
            ]
        );
    }

    #[test]
    fn a_container_without_a_port_is_reported() {
        let mut c = app("1", "worker", "10.0.0.1");
        c.exposed_ports.clear();
        let p = plan(&[c], &settings());
        assert!(p.routes.is_empty());
        assert_eq!(
            kinds(&p),
            [
                ("worker".to_string(), ProblemKind::NoPort),
                ("worker".to_string(), ProblemKind::NotRouted)
            ]
        );
    }

    #[test]
    fn host_conflicts_have_a_deterministic_winner() {
        let zeta = with_label(app("z", "zeta", "10.0.0.3"), LABEL_HOST, "shared.com");
        let alpha = with_label(app("a", "alpha", "10.0.0.2"), LABEL_HOST, "shared.com");
        for input in [[zeta.clone(), alpha.clone()], [alpha.clone(), zeta.clone()]] {
            let p = plan(&input, &settings());
            assert_eq!(p.routes[0].hosts, ["alpha.localhost", "shared.com"]);
            assert_eq!(p.routes[1].hosts, ["zeta.localhost"]);
            assert_eq!(kinds(&p), [("zeta".to_string(), ProblemKind::HostConflict)]);
            assert!(
                p.problems[0].reason.contains("alpha"),
                "{}",
                p.problems[0].reason
            );
        }
    }

    #[test]
    fn an_apps_own_host_cannot_be_taken() {
        let alpha = with_label(app("a", "alpha", "10.0.0.2"), LABEL_HOST, "beta.localhost");
        let beta = app("b", "beta", "10.0.0.3");
        let p = plan(&[alpha, beta], &settings());
        assert_eq!(p.routes[0].hosts, ["alpha.localhost"]);
        assert_eq!(p.routes[1].hosts, ["beta.localhost"]);
        assert_eq!(
            kinds(&p),
            [("alpha".to_string(), ProblemKind::HostConflict)]
        );
    }

    #[test]
    fn an_unroutable_app_does_not_take_hosts() {
        let mut alpha = with_label(app("a", "alpha", "10.0.0.2"), LABEL_HOST, "shared.com");
        alpha.networks.clear();
        let beta = with_label(app("b", "beta", "10.0.0.3"), LABEL_HOST, "shared.com");
        let p = plan(&[alpha, beta], &settings());
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].hosts, ["beta.localhost", "shared.com"]);
    }

    #[test]
    fn an_invalid_domain_never_reaches_a_route() {
        let s = PlanSettings {
            domain: "bad domain".into(),
            ..settings()
        };
        let plain = app("1", "web", "10.0.0.1");
        let extra = with_label(app("2", "api", "10.0.0.2"), LABEL_HOST, "api.example.com");
        let p = plan(&[plain, extra], &s);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].hosts, ["api.example.com"]);
        assert_eq!(
            kinds(&p),
            [
                ("api".to_string(), ProblemKind::InvalidHost),
                ("web".to_string(), ProblemKind::InvalidHost),
                ("web".to_string(), ProblemKind::NotRouted)
            ]
        );
    }

    #[test]
    fn the_same_containers_in_any_order_give_the_same_plan() {
        let cs = vec![
            with_label(app("3", "shop-b", "10.0.0.4"), LABEL_NAME, "shop"),
            with_label(app("1", "zeta", "10.0.0.2"), LABEL_HOST, "x.com,y.com"),
            with_label(app("2", "alpha", "10.0.0.3"), LABEL_HOST, "y.com"),
            with_label(app("4", "shop-a", "10.0.0.5"), LABEL_NAME, "shop"),
            with_label(app("5", "evil", "10.0.0.6"), LABEL_HOST, "a;b"),
        ];
        let first = plan(&cs, &settings());
        let mut reversed = cs.clone();
        reversed.reverse();
        assert_eq!(plan(&reversed, &settings()), first);
        let mut rotated = cs;
        rotated.rotate_left(2);
        assert_eq!(plan(&rotated, &settings()), first);
    }
}
