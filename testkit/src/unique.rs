//! What keeps parallel tests (and other engineers' runs on the same engine) apart: unique names,
//! the label that marks what this process made, and free host ports.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Label on every container and network the testkit creates (value: the test process's pid).
pub const TEST_LABEL: &str = "devops-butler.test";

/// A name no other test, process or earlier run uses: `PREFIX-<pid><time>-<n>`, valid for Docker
/// containers and networks and as a DNS label (lowercase, at most 63 characters with a short prefix).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{:x}{:04x}-{n}",
        prefix.to_ascii_lowercase(),
        std::process::id(),
        nanos & 0xffff
    )
}

/// `TEST_LABEL=<this process's pid>`, for `docker --label`.
pub(crate) fn test_label() -> String {
    format!("{TEST_LABEL}={}", std::process::id())
}

/// A host port nothing listens on right now, for a container to publish. The kernel picks it, so
/// tests running in parallel do not choose the same one (another process may still take it before
/// Docker binds it; the window is short).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot find a free host port: {e}"))
        .port()
}
