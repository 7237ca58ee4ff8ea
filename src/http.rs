//! The one HTTP/1.1 client: a `GET` whose answer's status code is all that matters (route probes
//! after a reload, health probes, the deploy gate, nginx's start-up check) and a JSON `POST` (alert
//! webhooks), and a text `PUT` read whole (nginx's routes data). One request per connection, no
//! TLS; the `GET`s and the `POST` read only the status line. Timeouts are
//! the callers', who know what they wait for. A leaf: it imports nothing from the crate.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// User-Agent of the `GET`s, so nginx's access log tells the butler's probes from real traffic.
const PROBE_AGENT: &str = "devops-butler-verify";
/// User-Agent of the webhook `POST`s.
const AGENT: &str = "devops-butler";
/// Most bytes read while looking for the end of the status line.
const HEAD_MAX: usize = 1024;
/// Most bytes of a whole answer read by [`put_text`].
const ANSWER_MAX: u64 = 64 * 1024;

/// The start of an answer: its status line and whatever came with it in the same reads, or less
/// when the peer closed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    head: String,
}

impl Answer {
    /// The status code as sent (`"204"`), or `""` when there is none.
    pub fn status_text(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }

    /// What came after the head (the body, when the whole answer was read).
    pub fn body(&self) -> &str {
        self.head
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The status line, `None` when nothing came.
    pub fn first_line(&self) -> Option<&str> {
        self.head.lines().next()
    }

    /// The status code, or an error naming what came instead of an HTTP answer.
    pub fn status(&self) -> io::Result<u16> {
        self.status_text().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {:?}", self.first_line().unwrap_or("")),
            )
        })
    }
}

/// One `GET path` with `Host: host` on a new connection to `addr`; the status code of the answer.
pub async fn get_status(addr: SocketAddr, host: &str, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    get_status_on(&mut stream, host, path).await
}

/// One `GET path` with `Host: host` on a connected stream; the status code of the answer.
pub async fn get_status_on(stream: &mut TcpStream, host: &str, path: &str) -> io::Result<u16> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {PROBE_AGENT}\r\nConnection: close\r\n\r\n"
    );
    exchange(stream, &[request.as_bytes()]).await?.status()
}

/// `POST path` of a JSON `body` with `Host: host` to `addr`; the start of the answer, for the
/// caller to judge.
pub async fn post_json(
    addr: SocketAddr,
    host: &str,
    path: &str,
    body: &[u8],
) -> io::Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {AGENT}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    exchange(&mut stream, &[head.as_bytes(), body]).await
}

/// `PUT path` of `body` with `Host: host` and extra `headers` to `addr`; the whole answer, read
/// until the peer closes (HTTP/1.0, so that it comes unchunked), at most `ANSWER_MAX` bytes.
pub async fn put_text(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!(
        "PUT {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {AGENT}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::with_capacity(256);
    (&mut stream)
        .take(ANSWER_MAX)
        .read_to_end(&mut answer)
        .await?;
    Ok(Answer {
        head: String::from_utf8_lossy(&answer).into_owned(),
    })
}

/// `http://host[:port]/path` → (host, port, path).
pub fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().ok()?)
        }
        _ => (authority, 80),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port, path.to_owned()))
}

/// The first address of `host` (a name, an IPv4 address or a bracketed IPv6 one) at `port`.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))
}

/// Writes the request's parts, then reads until the status line is complete, the peer closes or
/// `HEAD_MAX` bytes came.
async fn exchange(stream: &mut TcpStream, request: &[&[u8]]) -> io::Result<Answer> {
    for part in request {
        stream.write_all(part).await?;
    }
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < HEAD_MAX {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Answer {
        head: String::from_utf8_lossy(&head).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_status_of_a_minimal_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(get_status(addr, "x.localhost", "/").await.unwrap(), 503);
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            parse_url("http://hooks.local:8080/a/b?x=1"),
            Some(("hooks.local".into(), 8080, "/a/b?x=1".into()))
        );
        assert_eq!(
            parse_url("http://127.0.0.1"),
            Some(("127.0.0.1".into(), 80, "/".into()))
        );
        assert_eq!(parse_url("https://x"), None);
        assert_eq!(parse_url("http://:80/"), None);
    }
}
