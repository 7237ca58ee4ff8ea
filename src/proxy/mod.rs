//! The proxy path's pure core: container snapshots → `plan` (routes and problems) → `render`
//! (an nginx config tree and its hash). No Docker, no nginx, no files here except template
//! overrides read at load; discovery and apply are the edges around it.

pub mod model;
pub mod plan;
pub mod ports;
pub mod render;
pub mod sanitize;

pub use model::{Plan, PlanSettings, Problem, ProblemKind, Route, UpstreamServer};
pub use plan::plan;
pub use ports::{PortChoice, PortError, PortReason, choose_port};
pub use render::{RenderError, RenderSettings, RenderedConfig, Templates, render};
