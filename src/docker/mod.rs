//! The Docker edge: everything the butler learns from or asks of the engine goes through here.

pub mod client;
pub mod discovery;
pub mod events;
pub mod network;
pub mod snapshot;

pub use snapshot::{ContainerSnapshot, Exited};
