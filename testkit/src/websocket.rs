//! The client side of a WebSocket (RFC 6455) on a raw `TcpStream`: the handshake, masked client
//! frames, and an echo round trip. The codecs are `ws_codec`'s, shared with the test app.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::connect;
use crate::ws_codec;

/// Open a WebSocket on `addr` ("ip:port") with `Host: host_header` at `path`, check the 101 and its
/// `Sec-WebSocket-Accept`, send `message` as one masked text frame, and return the text of the first
/// frame that comes back. The error names what went wrong (e.g. the response head when it was no 101).
pub fn websocket_echo(
    addr: &str,
    host_header: &str,
    path: &str,
    message: &str,
) -> std::io::Result<String> {
    let err = |m: String| std::io::Error::other(m);
    let (mut stream, mut reader) =
        websocket_connect(addr, host_header, path, Duration::from_secs(10))?;
    stream.write_all(&client_frame(0x81, message.as_bytes()))?;
    let header = ws_codec::read_frame_header(&mut reader)?;
    if header.masked {
        return Err(err(
            "the server sent a masked frame (RFC 6455 §5.1 forbids it)".into(),
        ));
    }
    let len = header.payload_len;
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if header.opcode != 0x1 {
        return Err(err(format!(
            "expected a text frame, got opcode {:#x}",
            header.opcode
        )));
    }
    // Say goodbye properly; the answer does not matter.
    let _ = stream.write_all(&client_frame(0x88, &1000u16.to_be_bytes()));
    String::from_utf8(payload).map_err(|e| err(format!("echo is not UTF-8: {e}")))
}

/// The client side of a WebSocket handshake: the stream to write frames to and a reader positioned
/// after the 101's head. Checks the status and `Sec-WebSocket-Accept`.
pub(crate) fn websocket_connect(
    addr: &str,
    host_header: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let err = |m: String| std::io::Error::other(m);
    let mut stream = connect(addr, timeout)?;
    let key = ws_codec::base64(&pseudo_random_bytes::<16>());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(err(format!(
                "connection closed during the handshake; got {head:?}"
            )));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if !head.starts_with("HTTP/1.1 101") {
        return Err(err(format!(
            "expected 101 Switching Protocols, got:\n{head}"
        )));
    }
    let expected = ws_codec::accept_key(&key);
    let accept = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_string());
    if accept.as_deref() != Some(expected.as_str()) {
        return Err(err(format!(
            "Sec-WebSocket-Accept is {accept:?}, expected {expected:?}"
        )));
    }
    Ok((stream, reader))
}

/// A client frame: always masked (RFC 6455 §5.3).
pub(crate) fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = pseudo_random_bytes::<4>();
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Unpredictable enough for a WebSocket key and mask (not for secrets): std's per-process random
/// hash keys mixed with the time and a counter.
fn pseudo_random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}
