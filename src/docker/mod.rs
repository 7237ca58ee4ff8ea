//! The Docker edge: everything the butler learns from or asks of the engine goes through here.

pub mod snapshot;

pub use snapshot::ContainerSnapshot;
