//! Certificates for HTTPS, the parts that need neither nginx nor an ACME server. So far: which
//! source a host's certificate comes from (`policy`, pure).
//!
//! A layer of its own just above the leaves: it takes paths and values, never the `Config`, so
//! that `config` can use its checks (the `tls.mode` words) and `proxy`, `health` and the CLI can
//! all use it without a circle.

pub mod policy;

pub use policy::{CertSource, PolicyError, TlsMode};
