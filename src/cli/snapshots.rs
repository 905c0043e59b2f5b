//! `snapdump snapshots`: the catalog's snapshot table.

use super::args::CatalogArg;
use super::print;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `snapdump snapshots`.
#[derive(Args)]
#[command(
    long_about = "List the snapshots in the catalog: id, time, level, base, full or incremental, stream size and where the stream went. With SOURCE, only that source's."
)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only this source.
    source: Option<PathBuf>,
}

/// Runs `snapdump snapshots`.
pub fn run(a: SnapshotsArgs) -> Result<i32> {
    let report = crate::report::Report::new();
    let list = crate::snapshots::list(&a.catalog.root(), a.source.as_deref(), &report)?;
    if a.json {
        print::json_stdout(&list)?;
        return Ok(report.exit_status());
    }
    let mut lines = Vec::new();
    for s in &list {
        lines.push(s.source.to_string());
        for i in &s.snapshots {
            let base = i.base.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
            lines.push(format!(
                "  {:>4}  {}  level {}  base {:>4}  {}  {} bytes  {}",
                i.snap.id,
                i.snap.time.rfc3339(),
                i.snap.level,
                base,
                if i.full { "full" } else { "incremental" },
                i.stream_bytes,
                i.output
            ));
        }
    }
    print::lines(lines)?;
    Ok(report.exit_status())
}
