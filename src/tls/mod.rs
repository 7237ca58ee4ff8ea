//! Certificates for HTTPS, the parts that need neither nginx nor an ACME server: which source a
//! host's certificate comes from (`policy`, pure), the local CA (`ca`), the files under
//! `<state.dir>/tls/` (`files`), checking a certificate/key pair before it is used (`pair`), the
//! system trust store (`trust`), and key material that never prints (`secret`).
//!
//! A layer of its own just above the leaves: it takes paths and values, never the `Config`, so
//! that `config` can use its checks (the `tls.mode` words, a readable `ca_bundle`) and `proxy`,
//! `health` and the CLI can all use it without a circle.

pub mod ca;
pub mod files;
pub mod pair;
pub mod policy;
pub mod secret;
pub mod trust;

pub use ca::{IssuedLeaf, LocalCa, Renewal};
pub use files::{FilesError, TlsDir, TlsLock};
pub use pair::{CertSummary, Chain, PairError, PairFiles, PemPair};
pub use policy::{CertSource, PolicyError, TlsMode};
pub use secret::SecretPem;
