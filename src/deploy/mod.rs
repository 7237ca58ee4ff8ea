//! Deployments: `butler deploy SOURCE` and `butler rollback`. A source (image, Dockerfile
//! directory, git repository) is resolved to an image; pre-deployment checks run before anything
//! changes; new instances start held out of the upstream, pass their health check, and only then
//! replace the old ones, which are drained before they stop. The store records every deploy.
//!
//! `naming` (pure): app names, container names, labels. `source`: what SOURCE is and how it becomes
//! an image. `checks`: the pre-deployment checks. `health`: the health gate. `switch`: a deploy
//! or rollback up to a revision ready to roll out. `rollout`: the rollout, in order, with each
//! decision a pure function. `instances`: its steps on the engine.

pub mod checks;
pub mod health;
mod instances;
pub mod naming;
mod rollout;
pub mod source;
pub mod switch;

pub use switch::{DeployError, DeployReport, DeployRequest, Deployer, ReportOutcome};
