//! The Docker edge: everything the butler learns from or asks of the engine goes through here,
//! behind the one [`Engine`] trait (`bollard_engine` is the real engine, `fake` the tests' own).

mod bollard_engine;
pub mod client;
pub mod discovery;
pub mod engine;
pub mod events;
#[cfg(test)]
pub mod fake;
pub mod inspect;
pub mod log_ports;
pub mod network;
pub mod snapshot;

pub use engine::{
    BuildProgress, ContainerHealth, ContainerInfo, ContainerSpec, ContainerState, Engine,
    EngineError, EngineHandle, ExecOutput, ImageInfo, ListedContainer, NetworkInfo, ProcessRow,
    Restart,
};
pub use snapshot::{ContainerSnapshot, Exited};
