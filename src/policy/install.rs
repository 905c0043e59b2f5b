//! `policy install`: a systemd service and timer, or a cron.d line, that
//! runs the policy often (the plan decides what is due; running more often
//! than the schedule costs a plan, not a dump).

use super::file::Policy;
use anyhow::{bail, Context, Result};
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

/// One argument of a systemd `ExecStart=` line: double-quoted, with
/// backslashes and quotes escaped, and `%` (specifiers) and `$`
/// (variables) doubled, so that any path runs as written.
fn systemd_arg(a: &str) -> String {
    let mut out = String::from("\"");
    for c in a.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The executable of a systemd `ExecStart=` line: double-quoted with `%`
/// doubled; systemd substitutes no variables there, and refuses quotes
/// and backslashes in an executable's name (None then).
fn systemd_exe(a: &str) -> Option<String> {
    (!a.contains(['"', '\'', '\\'])).then(|| format!("\"{}\"", a.replace('%', "%%")))
}

/// Text in a systemd setting that expands specifiers (`Description=`).
fn systemd_text(a: &str) -> String {
    a.replace('%', "%%")
}

/// One argument of a cron command: single-quoted for /bin/sh, and each
/// `%` escaped (cron turns a bare `%` into a newline, even inside quotes).
fn cron_arg(a: &str) -> String {
    format!("'{}'", a.replace('\'', "'\\''").replace('%', "\\%"))
}

/// The marker line naming the policy a written file runs, by which a
/// later install tells its own file from another policy's.
fn marker(policy: &Path) -> String {
    format!("snapdump policy {}", policy.display())
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
    for path in [&policy, &binary.to_path_buf()] {
        if path.as_os_str().as_encoded_bytes().contains(&b'\n') {
            bail!(
                "{} holds a newline, which neither cron nor systemd can run; rename it",
                path.display()
            );
        }
    }
    let name = unit_name(p);
    let (bin, pol) = (binary.display().to_string(), policy.display().to_string());
    let mark = marker(&policy);
    Ok(match s {
        Scheduler::Systemd => {
            let Some(exe) = systemd_exe(&bin) else {
                bail!("{bin}: systemd refuses quotes and backslashes in the name of the program it runs; install snapdump at a plainer path");
            };
            let cmd = format!("{exe} run --quiet {}", systemd_arg(&pol));
            vec![
                (
                    format!("{name}.service"),
                    format!(
                        "# {mark}\n[Unit]\nDescription={}\nDocumentation=man:snapdump-policy(5)\n\n[Service]\nType=oneshot\nExecStart={cmd}\nNice=10\nIOSchedulingClass=idle\n",
                        systemd_text(&mark)
                    ),
                ),
                (
                    format!("{name}.timer"),
                    format!(
                        "# {mark}\n[Unit]\nDescription={} every {minutes} minutes\n\n[Timer]\nOnCalendar=*:0/{minutes}\nPersistent=true\nRandomizedDelaySec=30\n\n[Install]\nWantedBy=timers.target\n",
                        systemd_text(&format!("Run {mark}"))
                    ),
                ),
            ]
        }
        Scheduler::Cron => {
            let cmd = format!("{} run --quiet {}", cron_arg(&bin), cron_arg(&pol));
            vec![(
                name,
                format!(
                    "# {mark}\n# (man 5 snapdump-policy)\nSHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n*/{minutes} * * * * root {cmd}\n"
                ),
            )]
        }
    })
}

/// Writes the files into `dir` (each replaced atomically); returns their
/// paths. A file of that name that runs another policy (two policy files
/// with one name in different directories) or that snapdump did not write
/// is left alone, with an error naming it.
pub fn install(
    p: &Policy,
    s: Scheduler,
    dir: &Path,
    binary: &Path,
    minutes: u32,
) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory; create it, or give --dir an existing one",
            dir.display()
        );
    }
    let files = files(p, s, binary, minutes)?;
    for (name, text) in &files {
        let path = dir.join(name);
        let first = text.lines().next().unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(old) if old.lines().next() == Some(first) => {}
            Ok(old) => {
                let what = old
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("# snapdump policy "))
                    .map(|o| format!("runs policy {o}"))
                    .unwrap_or_else(|| "was not written by snapdump policy install".into());
                bail!(
                    "{} {what}; rename this policy file (the unit is named after it) or remove that file",
                    path.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        crate::atomic::replace_file(&path, text.as_bytes())?;
        out.push(path);
    }
    Ok(out)
}
