//! `policy install`: a systemd service and timer, or a cron.d line, that
//! runs the policy often (the plan decides what is due; running more often
//! than the schedule costs a plan, not a dump).

use super::file::Policy;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Which scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// A service and a timer with `Persistent=true` (a run missed while
    /// the machine was off happens at boot).
    Systemd,
    /// A line in a cron.d file.
    Cron,
}

/// The unit or file name for a policy: `snapdump-` and the policy file's
/// stem, reduced to characters systemd and cron accept.
pub fn unit_name(p: &Policy) -> String {
    let stem = p
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("snapdump-{clean}")
}

/// The files to write: (name, contents).
pub fn files(
    p: &Policy,
    s: Scheduler,
    binary: &Path,
    minutes: u32,
) -> Result<Vec<(String, String)>> {
    let policy = std::fs::canonicalize(&p.path)
        .with_context(|| format!("cannot resolve policy {}", p.path.display()))?;
    let name = unit_name(p);
    let cmd = format!("{} run --quiet {}", binary.display(), policy.display());
    Ok(match s {
        Scheduler::Systemd => vec![
            (
                format!("{name}.service"),
                format!(
                    "[Unit]\nDescription=snapdump policy {policy}\nDocumentation=man:snapdump-policy(5)\n\n[Service]\nType=oneshot\nExecStart={cmd}\nNice=10\nIOSchedulingClass=idle\n",
                    policy = policy.display()
                ),
            ),
            (
                format!("{name}.timer"),
                format!(
                    "[Unit]\nDescription=Run snapdump policy {policy} every {minutes} minutes\n\n[Timer]\nOnCalendar=*:0/{minutes}\nPersistent=true\nRandomizedDelaySec=30\n\n[Install]\nWantedBy=timers.target\n",
                    policy = policy.display()
                ),
            ),
        ],
        Scheduler::Cron => vec![(
            name,
            format!(
                "# snapdump policy {policy} (man 5 snapdump-policy)\nSHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n*/{minutes} * * * * root {cmd}\n",
                policy = policy.display()
            ),
        )],
    })
}

/// Writes the files into `dir` (each replaced atomically); returns their
/// paths.
pub fn install(
    p: &Policy,
    s: Scheduler,
    dir: &Path,
    binary: &Path,
    minutes: u32,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (name, text) in files(p, s, binary, minutes)? {
        let path = dir.join(name);
        crate::atomic::replace_file(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}
