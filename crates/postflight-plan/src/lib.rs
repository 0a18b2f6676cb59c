//! postflight's plan language and verdict rules.
//!
//! Everything here is pure: parsing and validating plans, expanding variables, merging
//! per-region results into a verdict, deciding on rollback and building the report. The
//! executors (`postflight-checks`), the coordinator and the CLI all build on this one crate so
//! that a local run and a distributed run judge the same results the same way.

pub mod baseline;
pub mod canonical;
pub mod duration;
pub mod error;
pub mod feedback;
pub mod load;
pub mod model;
pub mod monitor;
pub mod outcome;
mod raw;
pub mod report;
pub mod rollback;
pub mod secrets;
pub mod sketch;
pub mod stages;
pub mod stats;
pub mod vars;
pub mod verdict;

// The few names nearly every user needs; the plan model itself is `postflight_plan::model`,
// one path for each type.
pub use error::{PlanError, PlanErrors};
pub use load::{ReadFile, parse_plan, parse_plan_with_files};
pub use outcome::{CheckOutcome, Sample, Tally};
pub use report::{RegionResult, Report, RunResults, build_report};
pub use vars::Expander;
pub use verdict::{CheckStatus, Overall};
