//! Argument groups several commands share, defined once.

use clap::Args;
use std::path::PathBuf;

/// `--json` and `--json-file`.
#[derive(Args)]
pub struct JsonArgs {
    /// Print a JSON summary (on stderr when the stream goes to stdout).
    #[arg(long)]
    pub json: bool,
    /// Write the JSON summary to FILE instead. FILE is checked before any
    /// work; if it still cannot be written afterwards (a full disk), the
    /// summary goes to stderr and the exit status is 1.
    #[arg(long, value_name = "FILE", value_parser = writable_file)]
    pub json_file: Option<PathBuf>,
}

/// `--json-file`, checked before any work is done: a summary that cannot
/// be written after a dump or a run would turn work done into a failure.
fn writable_file(s: &str) -> std::result::Result<PathBuf, String> {
    use nix::unistd::{access, AccessFlags};
    let path = PathBuf::from(s);
    if path.is_dir() {
        return Err(format!("{s} is a directory; give a file"));
    }
    if path.exists() {
        return access(&path, AccessFlags::W_OK)
            .map(|_| path.clone())
            .map_err(|e| format!("{s} cannot be written ({})", e.desc()));
    }
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!("directory {} does not exist", parent.display()));
    }
    access(&parent, AccessFlags::W_OK | AccessFlags::X_OK)
        .map(|_| path.clone())
        .map_err(|e| {
            format!(
                "{s} cannot be created in {} ({})",
                parent.display(),
                e.desc()
            )
        })
}

impl JsonArgs {
    /// Whether a JSON summary was asked for at all.
    pub fn wanted(&self) -> bool {
        self.json || self.json_file.is_some()
    }
}

/// `--catalog`.
#[derive(Args)]
pub struct CatalogArg {
    /// Catalog directory (default: /var/lib/snapdump for root, else
    /// $XDG_STATE_HOME/snapdump).
    #[arg(long, value_name = "DIR")]
    pub catalog: Option<PathBuf>,
}

impl CatalogArg {
    /// The catalog root to use.
    pub fn root(self) -> PathBuf {
        self.catalog.unwrap_or_else(crate::catalog::default_root)
    }
}

/// `--no-wait`, for commands that lock a catalog, a target or a volume.
#[derive(Args)]
pub struct WaitArg {
    /// Fail at once, instead of waiting, when another run holds the lock.
    #[arg(long)]
    pub no_wait: bool,
}

impl WaitArg {
    /// The lock policy asked for.
    pub fn policy(&self) -> crate::lock::Wait {
        if self.no_wait {
            crate::lock::Wait::No
        } else {
            crate::lock::Wait::Yes
        }
    }
}

/// `--new-volume`, for reading and writing multi-volume dumps.
#[derive(Args)]
pub struct NewVolumeArg {
    /// Run CMD when the next volume is needed.
    ///
    /// When the stream continues on a volume that no further -f names, CMD
    /// is run with sh; it must put the next volume in place (load a tape,
    /// move a file) and exit 0. It sees SNAPDUMP_VOLUME (the number of the
    /// volume needed), SNAPDUMP_DEVICE (where it is expected) and
    /// SNAPDUMP_REASON. Without it, snapdump asks on the terminal, and when
    /// there is none (cron) stops with a message saying which volume it
    /// needs; it never guesses. A wrong or repeated volume is refused with a
    /// message naming what it holds and what is needed, and asked for again.
    #[arg(long, value_name = "CMD")]
    pub new_volume: Option<String>,
}

/// How streams are read from their media (`-f` values, tapes).
#[derive(Args)]
pub struct ReadMediumArgs {
    /// On a tape: read the Nth dump (from 1), spacing over N-1 filemarks.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub file_number: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub new_volume: NewVolumeArg,
}

impl ReadMediumArgs {
    /// The streams the `-f` values name (or `$TAPE` when none was given),
    /// probed once each.
    pub fn inputs(&self, files: &[String]) -> anyhow::Result<Vec<crate::media::Input>> {
        let specs = if files.is_empty() {
            vec![crate::media::stream_spec(None)?]
        } else {
            files.to_vec()
        };
        crate::media::group_inputs(&specs, self.file_number, self.new_volume.new_volume.clone())
    }
}

/// A target directory as given, or the directory it names when it is a
/// symlink to one (as `cd` and `tar -C` follow it): an increment's finish
/// swaps or edits the directory itself, never the link.
pub fn target_dir(p: std::path::PathBuf) -> std::path::PathBuf {
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(&p) {
            Ok(c) if c.is_dir() => c,
            _ => p,
        },
        _ => p,
    }
}
