//! Registry replication: a rules file (endpoints, rules with doublestar filters, triggers),
//! incremental one-way sync of repositories built on [`copy_image`](crate::copy_image), a
//! state file, retries, and a scheduler taking the source registry's notifications.
//!
//! The crate README's "Replication" section is the reference of the rules file and the
//! semantics (incremental, deletions, retries, state).

mod filter;
mod notify;
mod rules;
mod run;
mod schedule;
mod serve;
mod state;

pub use filter::{Filter, destination_repository};
pub use notify::{Action, EVENTS_MEDIA_TYPE, Notification, parse_envelope};
pub use rules::{DEFAULT_RULE_CONCURRENCY, DEFAULT_STATE_FILE, Endpoint, Retry, Rule, Rules};
pub use run::{CancelToken, Replicator, RepoReport, RuleSummary};
pub use schedule::{Cron, Trigger, parse_duration};
pub use serve::{Control, ServeOptions, serve};
pub use state::{Outcome, RepoState, RuleState, StateData, StateStore};
