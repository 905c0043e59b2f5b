//! `snapdump history`: every snapshot in which a file changed.

use super::args::{CatalogArg, WaitArg};
use super::print;
use crate::report::Report;
use crate::restore::history::{history, HistorySource};
use anyhow::Result;
use clap::Args;

/// Arguments of `snapdump history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Streams to read (repeat, any order); without -f, the streams the
    /// catalog recorded for the source holding PATH.
    #[arg(short = 'f', value_name = "IN", action = clap::ArgAction::Append)]
    file: Vec<String>,
    #[command(flatten)]
    catalog: CatalogArg,
    /// The history up to the newest snapshot of this incremental mirror,
    /// whose base is the one -f names: the base's snapshot, then the
    /// mirror's newest (the snapshots it absorbed in between are not
    /// kept). Reads the base's metadata only.
    #[arg(long, value_name = "DIR", requires = "file")]
    mirror: Option<std::path::PathBuf>,
    #[command(flatten)]
    wait: WaitArg,
    /// Print JSON.
    ///
    /// Print the source, the path, the snapshots read and, per change:
    /// snapshot, stream, change, attributes, changed_blocks ([first, count]
    /// runs), changed_block_count, type, size, mtime.
    #[arg(long)]
    json: bool,
    /// The file: relative to the dump's root, or an absolute path inside the source.
    path: String,
}

/// Runs `snapdump history`.
pub fn run(a: HistoryArgs, report: &Report) -> Result<i32> {
    let from = if let Some(m) = &a.mirror {
        HistorySource::Mirror(
            Box::new(crate::mirror::Mirror::open(m, a.wait.policy())?),
            a.file
                .iter()
                .map(|f| crate::media::Input::plain(f))
                .collect::<Result<_>>()?,
        )
    } else if a.file.is_empty() {
        HistorySource::Catalog(a.catalog.root())
    } else {
        HistorySource::Streams(
            a.file
                .iter()
                .map(|f| crate::media::Input::plain(f))
                .collect::<Result<_>>()?,
        )
    };
    let h = history(&from, &a.path, report)?;
    if a.json {
        print::json_stdout(&h)?;
        return Ok(report.exit_status());
    }
    let head = format!("{} in {}:", h.path, h.source);
    print::lines(std::iter::once(head).chain(h.versions.iter().map(|v| {
        let mut what = v.change.to_string();
        if v.changed_block_count > 0 {
            what += &format!(", blocks {}", crate::runs::block_ranges(&v.changed_blocks));
        }
        if !v.attributes.is_empty() {
            what += &format!(", {}", v.attributes.join(" "));
        }
        let size = v.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        format!(
            "  snapshot {:>4}  level {}  {}  {:>12}  {what}",
            v.snapshot.id,
            v.snapshot.level,
            v.snapshot.time.rfc3339(),
            size
        )
    })))?;
    Ok(report.exit_status())
}
