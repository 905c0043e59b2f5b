//! The restore commands that read streams: `restore -x`, `-t`, `-C`, `-i`,
//! `verify` and `history`. Each finds a snapshot's chain among the streams
//! given ([`chain`]), fetches the blocks it needs ([`fetch`]), and writes
//! through the directory target (`crate::target`) or reports.

pub mod chain;
pub mod changes;
pub mod coalesce;
pub mod compare;
pub mod export;
pub mod extract;
pub mod fetch;
pub mod history;
pub mod list;
pub mod reintegrate;
pub mod shell;
pub mod verify;
