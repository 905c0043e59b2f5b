//! The man pages, generated from the clap definitions: the title, NAME,
//! SYNOPSIS and OPTIONS come from the same definitions as the parser, the
//! prose (DESCRIPTION, EXAMPLES, ...) from the templates in `man/src/`,
//! where a line `@OPTIONS@` marks where the options go. `tests/man.rs`
//! checks that the shipped `man/*.1` are exactly what this renders;
//! `SNAPDUMP_BLESS=1 cargo test --test man` writes them anew.

use clap_mangen::Man;

/// Date on the pages' title lines; moved on when the pages change.
pub const MAN_DATE: &str = "2026-12-07";

/// One man page: its file name, the command path it documents, and its
/// template.
pub struct Page {
    /// File name under `man/`, e.g. `snapdump-dump.1`.
    pub file: &'static str,
    /// Subcommand names from the top, e.g. `["dump"]`; empty for snapdump(1).
    pub path: &'static [&'static str],
    template: &'static str,
}

/// Every page snapdump ships.
pub const PAGES: &[Page] = &[
    Page {
        file: "snapdump.1",
        path: &[],
        template: include_str!("../../man/src/snapdump.1.in"),
    },
    Page {
        file: "snapdump-dump.1",
        path: &["dump"],
        template: include_str!("../../man/src/snapdump-dump.1.in"),
    },
    Page {
        file: "snapdump-restore.1",
        path: &["restore"],
        template: include_str!("../../man/src/snapdump-restore.1.in"),
    },
    Page {
        file: "snapdump-verify.1",
        path: &["verify"],
        template: include_str!("../../man/src/snapdump-verify.1.in"),
    },
    Page {
        file: "snapdump-coalesce.1",
        path: &["coalesce"],
        template: include_str!("../../man/src/snapdump-coalesce.1.in"),
    },
    Page {
        file: "snapdump-mirror.1",
        path: &["mirror"],
        template: include_str!("../../man/src/snapdump-mirror.1.in"),
    },
    Page {
        file: "snapdump-export-tar.1",
        path: &["export-tar"],
        template: include_str!("../../man/src/snapdump-export-tar.1.in"),
    },
    Page {
        file: "snapdump-snapshots.1",
        path: &["snapshots"],
        template: include_str!("../../man/src/snapdump-snapshots.1.in"),
    },
    Page {
        file: "snapdump-history.1",
        path: &["history"],
        template: include_str!("../../man/src/snapdump-history.1.in"),
    },
    Page {
        file: "snapdump-replicate.1",
        path: &["replicate"],
        template: include_str!("../../man/src/snapdump-replicate.1.in"),
    },
    Page {
        file: "snapdump-pointer.1",
        path: &["pointer"],
        template: include_str!("../../man/src/snapdump-pointer.1.in"),
    },
    Page {
        file: "snapdump-replicas.1",
        path: &["replicas"],
        template: include_str!("../../man/src/snapdump-replicas.1.in"),
    },
    Page {
        file: "snapdump-serve.1",
        path: &["serve"],
        template: include_str!("../../man/src/snapdump-serve.1.in"),
    },
    Page {
        file: "snapdump-policy.1",
        path: &["policy"],
        template: include_str!("../../man/src/snapdump-policy.1.in"),
    },
    Page {
        file: "snapdump-run.1",
        path: &["run"],
        template: include_str!("../../man/src/snapdump-run.1.in"),
    },
    Page {
        file: "snapdump-track.1",
        path: &["track"],
        template: include_str!("../../man/src/snapdump-track.1.in"),
    },
    Page {
        file: "snapdump-volume.1",
        path: &["volume"],
        template: include_str!("../../man/src/snapdump-volume.1.in"),
    },
];

/// The command at `path`, named as the page names it.
fn command_at(path: &[&str]) -> clap::Command {
    let mut cmd = super::command();
    cmd.build();
    let mut bin = String::from("snapdump");
    for name in path {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
            .clone();
        bin = format!("{bin} {name}");
        cmd = sub;
    }
    let display = bin.replace(' ', "-");
    cmd.bin_name(bin).display_name(display)
}

fn man_of(cmd: clap::Command) -> Man {
    let title = cmd
        .get_display_name()
        .unwrap_or("snapdump")
        .to_ascii_uppercase();
    Man::new(cmd)
        .title(title)
        .date(MAN_DATE)
        .source(format!("snapdump {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands")
}

fn rendered(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).expect("rendering into memory");
    String::from_utf8(out).expect("roff is UTF-8")
}

/// A rendered section without the roff preamble and its `.SH` heading, for
/// pieces placed inside a page.
fn section_body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .skip_while(|l| l.starts_with(".SH"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The options of `cmd`, without the section heading.
fn options(cmd: clap::Command) -> String {
    section_body(&rendered(|w| man_of(cmd).render_options_section(w)))
}

/// Escapes text for roff: backslashes and hyphens (so they print as ASCII
/// minus signs and can be searched for).
fn esc(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// The synopsis of `cmd`, one line per form: the forms of an overridden
/// usage, else every visible argument with its value name (which clap_mangen's
/// own synopsis leaves out).
fn synopsis(cmd: &clap::Command) -> String {
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string();
    if let Some(usage) = cmd.get_overridden_usage() {
        let forms: Vec<String> = usage
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|form| match form.strip_prefix(name.as_str()) {
                Some(rest) => format!("\\fB{}\\fR{}\n", esc(&name), esc(rest)),
                None => format!("{}\n", esc(form)),
            })
            .collect();
        return forms.join(".br\n");
    }
    let mut line = format!("\\fB{}\\fR", esc(&name));
    let hidden: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| a.is_hide_set()).collect();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let mut flag = match (arg.get_short(), arg.get_long()) {
            (Some(s), _) => format!("\\fB\\-{s}\\fR"),
            (None, Some(l)) => format!("\\fB{}\\fR", esc(&format!("--{l}"))),
            (None, None) => {
                let v = arg
                    .get_value_names()
                    .map(|v| v.join(" "))
                    .unwrap_or_else(|| id.to_ascii_uppercase());
                let many = arg.get_num_args().is_some_and(|r| r.max_values() > 1);
                let text = format!("\\fI{}\\fR{}", esc(&v), if many { "..." } else { "" });
                line += &if arg.is_required_set() {
                    format!(" {text}")
                } else {
                    format!(" [{text}]")
                };
                continue;
            }
        };
        // A flag standing for a hidden series of short flags (-0 for
        // -0..-9): shown as the series.
        let group = cmd
            .get_groups()
            .find(|g| g.get_args().any(|a| a == arg.get_id()));
        if let (Some(first), Some(group)) = (arg.get_short(), group) {
            let series: Vec<char> = hidden
                .iter()
                .filter(|h| group.get_args().any(|a| a == h.get_id()))
                .filter_map(|h| h.get_short())
                .collect();
            if let Some(last) = series.last() {
                flag = format!("\\fB\\-{first}\\fR..\\fB\\-{last}\\fR");
            }
        }
        if arg.get_action().takes_values() {
            let v = arg
                .get_value_names()
                .map(|v| v.join(" "))
                .unwrap_or_default();
            flag += &format!(" \\fI{}\\fR", esc(&v));
        }
        let repeat = matches!(arg.get_action(), clap::ArgAction::Append);
        line += &if arg.is_required_set() {
            format!(" {flag}")
        } else {
            format!(" [{flag}]{}", if repeat { "..." } else { "" })
        };
    }
    if cmd.has_subcommands() {
        line += " \\fICOMMAND\\fR ...";
    }
    line + "\n"
}

/// The subcommands of `cmd`, each named as its page names it.
fn subcommands(cmd: &clap::Command, path: &[&str]) -> Vec<(String, clap::Command)> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| {
            let name = s.get_name().to_string();
            let mut p: Vec<&str> = path.to_vec();
            p.push(&name);
            let c = command_at(&p);
            (name.clone(), c)
        })
        .collect()
}

/// Renders one page.
pub fn render(page: &Page) -> String {
    let cmd = command_at(page.path);
    let man = man_of(cmd.clone());
    let mut out = rendered(|w| man.render_title(w));
    out += &format!(
        ".SH NAME\n{}",
        section_body(&rendered(|w| man.render_name_section(w)))
    );
    out += ".SH SYNOPSIS\n";
    let subs = subcommands(&cmd, page.path);
    let (synopses, opts) = if subs.is_empty() {
        (synopsis(&cmd), options(cmd))
    } else {
        // A page of several commands: each one's synopsis, and its
        // options under a subsection of its own.
        let syn: Vec<String> = subs.iter().map(|(_, c)| synopsis(c)).collect();
        let mut opts = String::new();
        for (name, c) in &subs {
            opts += &format!(".SS \"{} {name}\"\n", page_words(page));
            opts += &options(c.clone());
        }
        (syn.join(".br\n"), opts)
    };
    out += &synopses;
    for line in page.template.lines() {
        if line == "@OPTIONS@" {
            out += &opts;
        } else {
            out += line;
            out += "\n";
        }
    }
    out
}

/// "snapdump volume" for the volume page.
fn page_words(page: &Page) -> String {
    std::iter::once("snapdump")
        .chain(page.path.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
