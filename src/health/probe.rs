//! Probes with their latency: a TCP connect, and an HTTP `GET` on the same connection. Each is
//! bounded by a timeout, so one slow app cannot hold up a round.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::model::ProbeResult;
use crate::http;

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The TCP result for a server at an address that no running container of the app has: a failed
/// connect, known without trying.
pub fn vanished(addr: SocketAddr) -> ProbeResult {
    failed(
        &addr.to_string(),
        "no running container of the app has this address".to_owned(),
    )
}

/// Connects to `addr`, then (when `http` names a Host header) sends `GET path` on that connection.
/// Returns the TCP result and, when a request was made, the HTTP result. An HTTP answer is ok
/// unless it is a 5xx.
pub async fn probe(
    addr: SocketAddr,
    http: Option<(&str, &str)>,
    timeout: Duration,
) -> (ProbeResult, Option<ProbeResult>) {
    let target = addr.to_string();
    let started = Instant::now();
    let connected = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return (failed(&target, error.to_string()), None),
        Err(_) => {
            return (
                failed(&target, format!("no connection within {timeout:?}")),
                None,
            );
        }
    };
    let tcp = ProbeResult {
        target: target.clone(),
        ok: true,
        status: None,
        latency_ms: Some(ms(started)),
        error: None,
    };
    let Some((host, path)) = http else {
        return (tcp, None);
    };
    let left = timeout.saturating_sub(started.elapsed());
    let started = Instant::now();
    let answer = tokio::time::timeout(left, http::get_status_on(&mut stream, host, path)).await;
    let http = match answer {
        Ok(Ok(status)) => ProbeResult {
            target,
            ok: status < 500,
            status: Some(status),
            latency_ms: Some(ms(started)),
            error: None,
        },
        Ok(Err(error)) => failed(&target, error.to_string()),
        Err(_) => failed(&target, format!("no answer within {timeout:?}")),
    };
    (tcp, Some(http))
}

/// `GET path` with `Host: host` through the proxy at `addr`; ok unless nginx answers 502, 503 or
/// 504 or nothing answers (an app's own 500 is the app's business, not the route's).
pub async fn through_proxy(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> ProbeResult {
    let started = Instant::now();
    let (tcp, http) = probe(addr, Some((host, path)), timeout).await;
    let target = format!("{host} via {addr}");
    match http {
        Some(mut http) => {
            http.target = target;
            http.ok = http.status.is_some_and(|s| !matches!(s, 502..=504));
            http.latency_ms = http.latency_ms.map(|_| ms(started));
            http
        }
        None => ProbeResult { target, ..tcp },
    }
}

fn failed(target: &str, error: String) -> ProbeResult {
    ProbeResult {
        target: target.to_owned(),
        ok: false,
        status: None,
        latency_ms: None,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(answer: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn statuses_latencies_and_refusals() {
        let ok = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let (tcp, http) = probe(ok, Some(("a", "/")), Duration::from_secs(2)).await;
        assert!(tcp.ok && tcp.latency_ms.is_some());
        let http = http.unwrap();
        assert_eq!((http.ok, http.status), (true, Some(200)));

        let bad = server(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await;
        let via = through_proxy(bad, "shop.localhost", "/", Duration::from_secs(2)).await;
        assert!(!via.ok && via.is_gateway_error(), "{via:?}");
        assert!(via.target.contains("shop.localhost"));

        let error = server(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n").await;
        assert!(
            through_proxy(error, "a", "/", Duration::from_secs(2))
                .await
                .ok,
            "an app's own 500 is not a route failure"
        );
        let (_, direct) = probe(error, Some(("a", "/")), Duration::from_secs(2)).await;
        assert!(!direct.unwrap().ok, "but it is an app error");

        // A port nothing listens on: bind, note it, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (tcp, http) = probe(closed, Some(("a", "/")), Duration::from_secs(2)).await;
        assert!(!tcp.ok && tcp.error.is_some() && http.is_none());
    }
}
