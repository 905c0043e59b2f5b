//! `snapdump completions SHELL`: a completion script generated from the
//! same clap definitions as the parser.

use clap::Args;

/// Arguments of `snapdump completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    pub shell: clap_complete::Shell,
}

/// The completion script for `shell`.
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut super::command(), "snapdump", &mut out);
    out
}

/// Writes the script to stdout.
pub fn run(a: &CompletionsArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    std::io::stdout().write_all(&script(a.shell))?;
    Ok(0)
}
