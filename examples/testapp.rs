//! The app every integration test runs: a tiny std-only HTTP/1.1 + WebSocket server, built into a
//! static binary by `scripts/images/build.sh app` (no image registry is reachable where tests run).
//!
//! Configure with env or args (args win):
//!   PORTS=3000,8080 | PORT=3000 | --port N (repeatable) | --ports a,b   listen on 0.0.0.0 (default 3000)
//!   APP_NAME=web | --name web       name in every answer (default: the hostname)
//!   DELAY_MS=500 | --delay-ms 500   wait before listening (a slow-starting app)
//!   EXIT_AFTER_MS=N, EXIT_CODE=C    exit with C after N ms (a crashing app)
//! `testapp probe PORT [PATH]` instead answers whether 127.0.0.1:PORT serves PATH (default /healthz)
//! with 2xx/3xx, by its exit code: a Docker HEALTHCHECK for an image with nothing else in it.
//! Answers: any path → 200 `app=NAME host=HOSTNAME port=PORT path=PATH`; /healthz → 200 `ok`;
//! /status/NNN → NNN; /sleep/MS → 200 after MS ms; /ws → WebSocket echo (RFC 6455).
//! Prints `listening on :PORT` once per port; exits 0 on SIGTERM/SIGINT (it may be PID 1), unless
//! IGNORE_SIGTERM=1: then, as PID 1 without a handler, it ignores SIGTERM and `docker stop` ends
//! it with SIGKILL after the timeout (exit code 137), as many real apps do.

#[path = "../testkit/src/ws_codec.rs"]
mod ws_codec;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use std::{env, process, thread};

struct Settings {
    ports: Vec<u16>,
    name: String,
    host: String,
    delay_ms: u64,
}

fn main() {
    if env::args().nth(1).as_deref() == Some("probe") {
        process::exit(probe());
    }
    install_signal_handlers();
    let settings = parse_settings();
    if let Some(ms) = env::var("EXIT_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let code = env::var("EXIT_CODE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            println!("exiting with {code} after {ms} ms");
            process::exit(code);
        });
    }
    if settings.delay_ms > 0 {
        thread::sleep(Duration::from_millis(settings.delay_ms));
    }
    let settings: &'static Settings = Box::leak(Box::new(settings));
    let mut listeners = Vec::new();
    for &port in &settings.ports {
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
            eprintln!("testapp: cannot listen on :{port}: {e}");
            process::exit(2);
        });
        println!("listening on :{port}");
        listeners.push((port, listener));
    }
    std::io::stdout().flush().ok();
    let mut accept_threads = Vec::new();
    for (port, listener) in listeners {
        accept_threads.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let _ = serve(stream, port, settings);
                });
            }
        }));
    }
    for t in accept_threads {
        let _ = t.join();
    }
}

/// `testapp probe PORT [PATH]`: 0 when GET PATH on 127.0.0.1:PORT answers 2xx or 3xx, else 1.
fn probe() -> i32 {
    let mut args = env::args().skip(2);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| usage("probe needs a PORT"));
    let path = args.next().unwrap_or_else(|| "/healthz".into());
    let answer = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = String::new();
        BufReader::new(stream).read_line(&mut head)?;
        Ok(head)
    })();
    match answer {
        Ok(head) if matches!(head.split_whitespace().nth(1), Some(s) if s.starts_with('2') || s.starts_with('3')) => {
            0
        }
        Ok(head) => {
            println!("probe: {}", head.trim());
            1
        }
        Err(e) => {
            println!("probe: {e}");
            1
        }
    }
}

fn parse_settings() -> Settings {
    let mut ports: Vec<u16> = Vec::new();
    let env_ports = env::var("PORTS")
        .or_else(|_| env::var("PORT"))
        .unwrap_or_default();
    let parse_list = |s: &str| -> Vec<u16> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.trim()
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("bad port '{p}'")))
            })
            .collect()
    };
    let mut name = env::var("APP_NAME").ok();
    let mut delay_ms: u64 = env::var("DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut args = env::args().skip(1);
    let mut arg_ports = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--port" | "--ports" => arg_ports.extend(parse_list(&value(&arg))),
            "--name" => name = Some(value("--name")),
            "--delay-ms" => {
                delay_ms = value("--delay-ms")
                    .parse()
                    .unwrap_or_else(|_| usage("bad --delay-ms"))
            }
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    if !arg_ports.is_empty() {
        ports = arg_ports;
    } else if !env_ports.is_empty() {
        ports = parse_list(&env_ports);
    }
    if ports.is_empty() {
        ports.push(3000);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Settings {
        ports,
        name: name.unwrap_or_else(|| host.clone()),
        host,
        delay_ms,
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "testapp: {msg}\nusage: testapp [--port N]... [--ports a,b] [--name NAME] [--delay-ms MS]"
    );
    process::exit(2);
}

// PID 1 in a container gets no default signal actions: without a handler SIGTERM is ignored and
// `docker stop` waits its full timeout. std has no signal API, so declare the two libc calls needed.
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}
extern "C" fn on_terminate(_signum: i32) {
    unsafe { _exit(0) }
}
fn install_signal_handlers() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    if env::var("IGNORE_SIGTERM").is_ok_and(|v| v == "1") {
        return;
    }
    let handler = on_terminate as extern "C" fn(i32) as usize;
    unsafe {
        signal(SIGTERM, handler);
        signal(SIGINT, handler);
    }
}

struct Request {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

fn serve(stream: TcpStream, port: u16, settings: &Settings) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        discard_body(&mut reader, &req)?;
        let keep_alive = if req.version == "HTTP/1.0" {
            req.header_has_token("Connection", "keep-alive")
        } else {
            !req.header_has_token("Connection", "close")
        };
        let path_only = req.path.split('?').next().unwrap_or("");
        if path_only == "/ws" {
            if req.header_has_token("Upgrade", "websocket") {
                return websocket(reader, writer, &req);
            }
            respond(
                &mut writer,
                426,
                "expected a WebSocket upgrade\n",
                keep_alive,
                settings,
            )?;
        } else if path_only == "/healthz" {
            respond(&mut writer, 200, "ok\n", keep_alive, settings)?;
        } else if let Some(code) = path_only
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
        {
            let body = format!("app={} status={code}\n", settings.name);
            respond(&mut writer, code, &body, keep_alive, settings)?;
        } else {
            if let Some(ms) = path_only
                .strip_prefix("/sleep/")
                .and_then(|m| m.parse::<u64>().ok())
            {
                thread::sleep(Duration::from_millis(ms));
            }
            let body = format!(
                "app={} host={} port={port} path={} method={}\n",
                settings.name, settings.host, req.path, req.method
            );
            respond(&mut writer, 200, &body, keep_alive, settings)?;
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    // Tolerate empty lines between requests (RFC 9112 §2.2).
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let mut req = Request {
        method: method.into(),
        path: path.into(),
        version: version.into(),
        headers: Vec::new(),
    };
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(Some(req));
        }
        if let Some((k, v)) = l.split_once(':') {
            req.headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

fn discard_body(reader: &mut impl BufRead, req: &Request) -> std::io::Result<()> {
    if req.header_has_token("Transfer-Encoding", "chunked") {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        return Ok(());
                    }
                }
            }
            std::io::copy(
                &mut reader.by_ref().take(size as u64 + 2),
                &mut std::io::sink(),
            )?;
        }
    }
    let len = req
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink())?;
    Ok(())
}

fn respond(
    w: &mut impl Write,
    code: u16,
    body: &str,
    keep_alive: bool,
    s: &Settings,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        426 => "Upgrade Required",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\nX-App: {}\r\n\r\n",
        body.len(),
        s.name
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

fn websocket(mut reader: impl Read, mut w: TcpStream, req: &Request) -> std::io::Result<()> {
    let Some(key) = req.header("Sec-WebSocket-Key") else {
        let body = "missing Sec-WebSocket-Key\n";
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        w.write_all(head.as_bytes())?;
        return w.write_all(body.as_bytes());
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws_codec::accept_key(key)
    );
    w.write_all(head.as_bytes())?;
    loop {
        let header = ws_codec::read_frame_header(&mut reader)?;
        let (opcode, masked, len) = (header.opcode, header.masked, header.payload_len);
        let mut mask = [0u8; 4];
        if masked {
            reader.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload)?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            // Text, binary and continuation frames come back as they are; ping gets its pong.
            0x0..=0x2 => write_frame(&mut w, header.first_byte, &payload)?,
            0x9 => write_frame(&mut w, 0x80 | 0xA, &payload)?,
            0x8 => return write_frame(&mut w, 0x80 | 0x8, &payload),
            _ => {}
        }
    }
}

/// A server frame: never masked (RFC 6455 §5.1).
fn write_frame(w: &mut impl Write, first_byte: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}
