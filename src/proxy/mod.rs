//! The proxy path. The pure core: container snapshots → `plan` (routes and problems) → `render`
//! (an nginx config tree and its hash), with no Docker, nginx or files beyond template overrides.
//! The edges around it: `apply` (stage, validate, swap, reload, verify, through `crate::nginx`,
//! the container) and `reconcile`, which runs the whole path once.

pub mod apply;
pub mod model;
pub mod plan;
pub mod ports;
pub mod reconcile;
pub mod render;
pub mod routes_data;
pub mod sanitize;

pub use model::{Down, Plan, PlanSettings, Problem, ProblemKind, Route, UpstreamServer};
pub use plan::plan;
pub use ports::{PortChoice, PortError, PortReason, choose_port};
pub use render::{RenderError, RenderSettings, RenderedConfig, Templates, render};
