//! The snapdump command line: parses the arguments and hands each command
//! to its runner in the library (`snapdump::cli`), which converts them to
//! library options and prints the results.

use clap::Parser;
use snapdump::cli::{self, Cli, Cmd};
use snapdump::report::{Report, EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS};

fn main() {
    snapdump::fsx::raise_fd_limit();
    let args = Cli::parse();
    cli::set_output(args.verbose, args.quiet);
    let report = Report::new();
    let result = match args.cmd {
        Cmd::Dump(a) => cli::dump::run(a, &report),
        Cmd::Restore(a) => cli::restore::run(a, &report),
        Cmd::Verify(a) => cli::verify::run(a, &report),
        Cmd::ExportTar(a) => cli::export::run(a, &report),
        Cmd::Coalesce(a) => cli::coalesce::run(a, &report),
        Cmd::Mirror(c) => cli::mirror::run(c, &report),
        Cmd::Snapshots(a) => cli::snapshots::run(a),
        Cmd::History(a) => cli::history::run(a, &report),
        Cmd::Replicate(a) => cli::replicate::run(a, &report),
        Cmd::Pointer(c) => cli::replicate::run_pointer(c),
        Cmd::Replicas(a) => cli::replicate::run_replicas(a),
        Cmd::Serve(a) => cli::replicate::run_serve(a, &report),
        Cmd::Volume(v) => cli::volume::run(v, &report),
        Cmd::Policy(c) => cli::policy::run_policy(c),
        Cmd::Run(a) => cli::policy::run(a, &report),
        Cmd::Track(c) => cli::track::run(c),
        Cmd::Completions(a) => cli::completions::run(&a),
    };
    let mut code = result.unwrap_or_else(|e| {
        cli::print::error(&e);
        EXIT_FAILURE
    });
    if code == EXIT_OK && cli::print::summary_lost() {
        code = EXIT_WARNINGS;
    }
    std::process::exit(code);
}
