//! A real browser for page tests: Debian's headless Chromium, driven over the DevTools protocol
//! (a WebSocket, spoken with the same small client as the proxy's WebSocket tests). Tests read what
//! a person sees — `innerText` only holds rendered text — and how the page lays out at a width, and
//! save screenshots. A missing Chromium fails the test: it is a declared test dependency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::websocket::{client_frame, websocket_connect};
use crate::{http_request, wait_until_or, ws_codec};

/// The Chromium binary: `$CHROMIUM`, else `chromium` on the PATH.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("chromium");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "chromium is not installed: the page tests need Debian's `chromium` package \
         (`apt-get install chromium`; scripts/test installs it)"
    );
}

/// The flags every test run uses: headless, no sandbox (root in CI), nothing fetched from the
/// network on its own.
fn base_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A headless Chromium with its DevTools endpoint on a loopback port; killed on drop.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        Self::start_with(&[])
    }

    /// With extra flags, e.g. `--blink-settings=scriptEnabled=false` for a browser without
    /// JavaScript.
    pub fn start_with(extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().expect("a Chromium profile directory");
        let child = Command::new(chromium_binary())
            .args(base_args(profile.path()))
            .args(extra)
            .args(["--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        let mut browser = Browser {
            child,
            port: 0,
            _profile: profile,
        };
        // Chromium writes the port it chose to DevToolsActivePort in its profile.
        let active = browser._profile.path().join("DevToolsActivePort");
        wait_until_or(
            "Chromium's DevTools port",
            Duration::from_secs(60),
            || {
                std::fs::read_to_string(&active)
                    .ok()
                    .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok())
                    .is_some_and(|port| {
                        browser.port = port;
                        true
                    })
            },
            || "chromium did not open its DevTools port".into(),
        );
        browser
    }

    /// A new tab with a `width`×`height` viewport (a phone's when narrower than 700 px), at `url`,
    /// once the page has loaded.
    pub fn open(&self, url: &str, width: u32, height: u32) -> Tab {
        let addr = format!("127.0.0.1:{}", self.port);
        let created = http_request(
            &addr,
            "PUT",
            "/json/new?about:blank",
            &[],
            Duration::from_secs(30),
        )
        .expect("DevTools /json/new");
        let target: Value = serde_json::from_str(&created.body)
            .unwrap_or_else(|e| panic!("DevTools /json/new said {:?}: {e}", created.body));
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("webSocketDebuggerUrl");
        let path = &ws[ws.find("/devtools/").expect("a DevTools path")..];
        let (stream, reader) = websocket_connect(&addr, &addr, path, Duration::from_secs(60))
            .expect("DevTools WebSocket");
        let mut tab = Tab {
            stream,
            reader,
            next_id: 0,
        };
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700 }),
        );
        tab.navigate(url);
        tab
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page in the browser.
pub struct Tab {
    stream: TcpStream,
    reader: std::io::BufReader<TcpStream>,
    next_id: u64,
}

impl Tab {
    /// Sends a DevTools command and returns its `result`; panics with the protocol's error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.stream
            .write_all(&client_frame(0x81, message.as_bytes()))
            .expect("send to DevTools");
        loop {
            let reply: Value = serde_json::from_slice(&self.read_message()).expect("DevTools JSON");
            if reply["id"].as_u64() != Some(id) {
                continue; // an event
            }
            if let Some(error) = reply.get("error") {
                panic!("DevTools {method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// One whole message (continuation frames joined).
    fn read_message(&mut self) -> Vec<u8> {
        let mut message = Vec::new();
        loop {
            let header = ws_codec::read_frame_header(&mut self.reader).expect("DevTools frame");
            let mut payload = vec![0u8; header.payload_len as usize];
            self.reader
                .read_exact(&mut payload)
                .expect("DevTools payload");
            message.extend_from_slice(&payload);
            if header.first_byte & 0x80 != 0 {
                return message;
            }
        }
    }

    /// Loads `url` and waits until the document is complete.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            &format!("{url} to load"),
            Duration::from_secs(60),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        );
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// `eval` as a string (panics when it is not one).
    pub fn text(&mut self, expression: &str) -> String {
        let value = self.eval(expression);
        value
            .as_str()
            .unwrap_or_else(|| panic!("{expression} is {value}, not a string"))
            .to_owned()
    }

    /// The text a person sees on the page (rendered text only).
    pub fn visible_text(&mut self) -> String {
        self.text("document.body.innerText")
    }

    /// Polls `expression` until it is true.
    pub fn wait_for(&mut self, desc: &str, timeout: Duration, expression: &str) {
        let start = Instant::now();
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {desc} ({expression})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG of the whole page (beyond the viewport) to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 }
            }),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).unwrap();
        eprintln!("testkit: screenshot {}", path.display());
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {:?}", other as char),
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| {
            acc | (u32::from(value(*c)) << (18 - 6 * i))
        });
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
