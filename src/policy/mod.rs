//! Policies (issue 16): one TOML file that says when to dump at which
//! level, what to keep and when to coalesce; a plan that is a pure function
//! of (policy, catalog, clock); `run`, which does what is due; `simulate`,
//! which plays the plan forward on a model; and the cron/systemd installs.

pub mod file;
pub mod install;
pub mod plan;
pub mod retain;
pub mod run;
pub mod simulate;
pub mod tape;

pub use file::Policy;
