//! The command line: clap definitions, their conversion to library options,
//! and what each command prints. One file per command; `main.rs` only
//! parses and dispatches. The same definitions generate the man pages
//! ([`man`]) and the shell completions ([`completions`]), so the manual
//! cannot drift from the options the program takes.

pub mod args;
pub mod coalesce;
pub mod completions;
pub mod dump;
pub mod export;
pub mod history;
pub mod man;
pub mod mirror;
pub mod policy;
pub mod print;
pub mod replicate;
pub mod restore;
pub mod snapshots;
pub mod track;
pub mod verify;
pub mod volume;

use clap::{CommandFactory, Parser, Subcommand};

/// snapdump's command line.
#[derive(Parser)]
#[command(
    name = "snapdump",
    version,
    about = "Snapshot image dump and restore for directory trees",
    long_about = None
)]
pub struct Cli {
    /// List each entry dumped or restored on stderr, as tar -v does.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Print no notes (what was done differently on purpose, such as a
    /// mount point not entered); warnings and errors still are.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// The command to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Write a level-0..9 image stream of a source tree.
    Dump(dump::DumpArgs),
    /// Restore, extract, compare, browse or list image streams.
    Restore(restore::RestoreArgs),
    /// Check every checksum of a stream without restoring it.
    Verify(verify::VerifyArgs),
    /// Write a snapshot of a chain of streams as a POSIX tar stream.
    ExportTar(export::ExportTarArgs),
    /// Merge consecutive streams of a chain into one (a synthetic full
    /// from a level 0 and increments).
    Coalesce(coalesce::CoalesceArgs),
    /// List the snapshots recorded in the catalog.
    Snapshots(snapshots::SnapshotsArgs),
    /// Show every snapshot in which a file changed.
    History(history::HistoryArgs),
    /// Bring a replica (volume or directory, local or over ssh) up to date.
    Replicate(replicate::ReplicateArgs),
    /// Name snapshots of a source (set, ls, rm); replicate keeps `master`.
    #[command(subcommand)]
    Pointer(replicate::PointerCmd),
    /// List (or forget) the replicas a source has served.
    Replicas(replicate::ReplicasArgs),
    /// The receiving end of replicate, speaking the protocol on stdin/stdout.
    Serve(replicate::ServeArgs),
    /// Create, list, extract, export, check and manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// An incremental mirror: the base on tape, the blocks that differ
    /// from it on disk (create, add, status, reintegrate).
    #[command(subcommand)]
    Mirror(mirror::MirrorCmd),
    /// Check, plan, simulate or install a policy (man 5 snapdump-policy).
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Do what a policy says is due: dump, coalesce, prune.
    Run(policy::RunArgs),
    /// Track changes as they happen, so increments need no walk (start,
    /// status, stop).
    #[command(subcommand)]
    Track(track::TrackCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
}

/// Applies the global `-v` and `-q` for the run.
pub fn set_output(verbose: bool, quiet: bool) {
    crate::progress::set_verbose(verbose);
    crate::progress::set_quiet(quiet);
}

/// The clap command tree, for the man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}
