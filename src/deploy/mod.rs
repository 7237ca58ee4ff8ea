//! Deployments: `butler deploy SOURCE` and `butler rollback`. A source (image, Dockerfile
//! directory, git repository) is resolved to an image; pre-deployment checks run before anything
//! changes; new instances start held out of the upstream, pass their health check, and only then
//! replace the old ones, which are drained before they stop. The store records every deploy.
//!
//! `naming` (pure): app names, container names, labels. `source`: what SOURCE is and how it becomes
//! an image. `checks`: the pre-deployment checks. `health`: the health gate. `switch`: the whole
//! deploy, in order.

pub mod checks;
pub mod health;
pub mod naming;
pub mod source;
pub mod switch;

pub use switch::{DeployError, DeployReport, DeployRequest, Deployer, ReportOutcome};
