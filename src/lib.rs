//! devops-butler: a host agent that routes every Docker container through a validated,
//! self-healing nginx proxy, supervised by systemd. `main.rs` is a thin front over this library.

pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod deploy;
pub mod docker;
pub mod health;
pub mod http;
pub mod labels;
pub mod memory;
pub mod nginx;
pub mod proxy;
pub mod recovery;
pub mod store;
pub mod systemd;
#[cfg(test)]
mod testbed;
mod text_enum;
pub mod tls;
pub mod vocabulary;
pub mod workers;
