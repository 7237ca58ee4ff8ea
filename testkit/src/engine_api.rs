//! A few Docker Engine API calls straight over the unix socket (raw HTTP/1.0, no client library),
//! for the moments a benchmark times: one `docker` CLI call costs about 100 ms of its own start-up,
//! one API call a few. Like the rest of the testkit, it shares no code with the butler's client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::docker::DOCKER_SOCKET;

/// `METHOD path` with a JSON body; the status and the body.
pub fn request(method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(DOCKER_SOCKET)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head}")))?;
    Ok((status, body.to_owned()))
}

/// The container's address on `network`, `None` when it is not on it (or does not exist).
pub fn container_ip(container: &str, network: &str) -> Option<String> {
    let (status, body) = request("GET", &format!("/containers/{container}/json"), None).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let ip = v["NetworkSettings"]["Networks"][network]["IPAddress"].as_str()?;
    (!ip.is_empty()).then(|| ip.to_owned())
}

fn ok_or_text(result: std::io::Result<(u16, String)>) -> Result<(), String> {
    match result {
        Ok((200..=299, _)) => Ok(()),
        Ok((status, body)) => Err(format!("{status} {}", body.trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// `docker network disconnect network container`.
pub fn network_disconnect(network: &str, container: &str) -> Result<(), String> {
    ok_or_text(request(
        "POST",
        &format!("/networks/{network}/disconnect"),
        Some(&json!({ "Container": container, "Force": false })),
    ))
}

/// `docker network connect [--ip ip] network container`.
pub fn network_connect(network: &str, container: &str, ip: Option<&str>) -> Result<(), String> {
    let endpoint = match ip {
        Some(ip) => json!({ "IPAMConfig": { "IPv4Address": ip } }),
        None => json!({}),
    };
    ok_or_text(request(
        "POST",
        &format!("/networks/{network}/connect"),
        Some(&json!({ "Container": container, "EndpointConfig": endpoint })),
    ))
}
