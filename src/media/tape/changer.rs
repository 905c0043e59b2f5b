//! Getting the next volume: the next `-f`, or a `--new-volume` command
//! (for cron), or a question on the terminal. snapdump never guesses: with
//! none of these, a dump or restore that needs another volume stops with a
//! message saying how to give it.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Where the volumes of one dump come from.
pub struct Changer {
    specs: Vec<String>,
    next: usize,
    command: Option<String>,
    last: String,
}

/// How many times a wrong volume is refused before giving up, when the
/// volumes come from a command or the terminal.
pub const MAX_TRIES: u32 = 5;

impl Changer {
    /// Volumes from `specs` in turn (at least one), then from `command`,
    /// then from the terminal.
    pub fn new(specs: Vec<String>, command: Option<String>) -> Changer {
        let last = specs.first().cloned().unwrap_or_default();
        Changer {
            specs,
            next: 0,
            command,
            last,
        }
    }

    /// The first volume.
    pub fn first(&mut self) -> String {
        self.next = 1;
        self.last = self.specs[0].clone();
        self.last.clone()
    }

    /// Whether further volumes come from a list (a wrong one is then an
    /// error rather than a question).
    pub fn from_list(&self) -> bool {
        self.next < self.specs.len()
    }

    /// The path holding volume `volume`, once it is there. `why` says why
    /// it is needed ("volume 1 is full").
    pub fn next(&mut self, volume: u32, why: &str) -> Result<String> {
        if self.next < self.specs.len() {
            self.last = self.specs[self.next].clone();
            self.next += 1;
            return Ok(self.last.clone());
        }
        if let Some(cmd) = &self.command {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("SNAPDUMP_VOLUME", volume.to_string())
                .env("SNAPDUMP_DEVICE", &self.last)
                .env("SNAPDUMP_REASON", why)
                .stdin(std::process::Stdio::null())
                .status()
                .with_context(|| format!("cannot run --new-volume command {cmd:?}"))?;
            if !status.success() {
                bail!(
                    "{why}; the --new-volume command {cmd:?} failed ({status}) instead of providing volume {volume}"
                );
            }
            return Ok(self.last.clone());
        }
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            eprint!(
                "snapdump: {why}. Put volume {volume} in {} and press Enter (or type another device or file, or q to give up): ",
                self.last
            );
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
            let line = line.trim();
            if line == "q" || line == "quit" {
                bail!("{why}; volume {volume} was not provided");
            }
            if !line.is_empty() {
                self.last = line.to_string();
            }
            return Ok(self.last.clone());
        }
        bail!(
            "{why}; volume {volume} is needed: give it with another -f, or use --new-volume CMD (for unattended runs)"
        )
    }
}
