//! The port a container's own log lines announce ("listening on :3000"): a hint for choosing the
//! port when the container declares none or declares one it does not listen on.

/// The last port a log mentions where a server announces itself: "listening on :3000",
/// "Listening on port 8000", "Running on http://127.0.0.1:5000", "0.0.0.0:8080",
/// "Now listening on: http://[::]:80". An address that binds every interface (`0.0.0.0`, `[::]`,
/// `*`) counts anywhere; any other form only in a line with an announcing word ("listen",
/// "running", "port", ...), and a bare "12:30" is never a port, so timestamps and request logs do
/// not produce false hits.
pub fn port_from_logs(log_tail: &str) -> Option<u16> {
    let mut last = None;
    for line in log_tail.split(['\n', '\r']) {
        let line = line.to_ascii_lowercase();
        let announces = ANNOUNCE_WORDS.iter().any(|w| line.contains(w));
        if let Some(p) = last_port_in_line(&line, announces) {
            last = Some(p);
        }
    }
    last
}

const ANNOUNCE_WORDS: [&str; 10] = [
    "listen", "serving", "running", "started", "starting", "bound", "bind", "server", "port",
    "local:",
];

/// The mention that ends last in the line, from either form: `<host>:<port>` or `port <port>`.
fn last_port_in_line(line: &str, announces: bool) -> Option<u16> {
    let bytes = line.as_bytes();
    let mut best: Option<(usize, u16)> = None;
    let mut consider = |end: usize, port: u16| {
        if best.is_none_or(|(e, _)| end >= e) {
            best = Some((end, port));
        }
    };

    for (colon, _) in line.match_indices(':') {
        let Some((port, end)) = digits_at(bytes, colon + 1) else {
            continue;
        };
        match bind_host(line, colon) {
            Some(BindHost::Any) => consider(end, port),
            Some(BindHost::Specific) if announces => consider(end, port),
            _ => {}
        }
    }
    if !announces {
        return best.map(|(_, p)| p);
    }
    for (at, _) in line.match_indices("port") {
        if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
            continue; // "report", "import"
        }
        let mut i = at + "port".len();
        while i < bytes.len() && matches!(bytes[i], b' ' | b':' | b'=' | b'\t') {
            i += 1;
        }
        if i == at + "port".len() {
            continue; // "port80" or "ports": not the word on its own
        }
        if let Some((port, end)) = digits_at(bytes, i) {
            consider(end, port);
        }
    }
    best.map(|(_, p)| p)
}

/// A port number of 1..=5 digits starting at `start` and not followed by another digit or by
/// ".<digit>" (which would make it part of an address or a version, not a port).
fn digits_at(bytes: &[u8], start: usize) -> Option<(u16, usize)> {
    let mut end = start;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end == start || end - start > 5 {
        return None;
    }
    if end < bytes.len() && bytes[end] == b'.' && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
    {
        return None;
    }
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Some((port as u16, end)),
        _ => None,
    }
}

enum BindHost {
    /// Every interface: `0.0.0.0`, `[::]`, `*`.
    Any,
    /// Nothing (":3000"), `localhost`, an IP address, or any host after a URL scheme.
    Specific,
}

/// What stands before `colon`, if it is a host a server binds to or announces.
fn bind_host(line: &str, colon: usize) -> Option<BindHost> {
    let before = &line[..colon];
    if let Some(open) = before.strip_suffix(']').and_then(|b| b.rfind('[')) {
        let ip = before[open + 1..before.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .ok()?;
        return Some(if ip.is_unspecified() {
            BindHost::Any
        } else {
            BindHost::Specific
        });
    }
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_')))
        .map_or(0, |i| i + 1);
    let host = &before[start..];
    if host == "*" || host == "0.0.0.0" {
        return Some(BindHost::Any);
    }
    let after_scheme = before[..start].ends_with("://") && !host.is_empty();
    (after_scheme
        || host.is_empty()
        || host == "localhost"
        || host.parse::<std::net::Ipv4Addr>().is_ok())
    .then_some(BindHost::Specific)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ports_in_logs() {
        let cases: &[(&str, Option<u16>)] = &[
            ("listening on :3000", Some(3000)),
            ("Listening on port 8000", Some(8000)),
            ("Server running at http://0.0.0.0:5000/", Some(5000)),
            ("bound to 0.0.0.0:8080", Some(8080)),
            ("Now listening on: http://[::]:80", Some(80)),
            ("listening on [::]:8081", Some(8081)),
            (
                "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
                Some(8000),
            ),
            (
                "Starting development server at http://myhost:8001/",
                Some(8001),
            ),
            ("  Local:   http://localhost:5173/", Some(5173)),
            ("listening on *:4000", Some(4000)),
            ("server port=7000", Some(7000)),
            ("listening on port: 7001", Some(7001)),
            // The last mention wins, across and within lines.
            ("listening on :3000\nlistening on :4000", Some(4000)),
            ("listening on :3000 and port 3001", Some(3001)),
            ("listening on port 3001, also :3000", Some(3000)),
            // Timestamps, versions and unrelated lines are not ports.
            ("2024-01-01T12:30:45Z server started", None),
            ("12:30:45 listening", None),
            ("2024-01-01T12:30:45Z listening on :3000", Some(3000)),
            ("GET http://example.com:8443/api 200", None),
            ("http://0.0.0.0:5000", Some(5000)),
            ("0.0.0.0:8080", Some(8080)),
            ("ready at [::]:8082", Some(8082)),
            ("connected to db at 10.0.0.5:5432", None),
            ("took 3 :30", None),
            ("server v1.2.3 started", None),
            ("listening on 10.0.0.1:99999", None),
            ("listening on :0", None),
            ("report 8080 ready", None),
            ("ports 80 and 443", None),
            ("", None),
        ];
        for (logs, want) in cases {
            assert_eq!(port_from_logs(logs), *want, "logs {logs:?}");
        }
    }
}
