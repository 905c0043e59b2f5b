//! `restore -i`: browse a snapshot's tree and extract what you mark, in the
//! manner of restore(8).
//!
//! Commands: `ls [PATH]`, `cd PATH`, `pwd`, `add [PATH...]`, `delete
//! [PATH...]`, `extract`, `what`, `help` (or `?`), `quit`. Paths are
//! relative to the current directory or absolute from the snapshot's root;
//! names with spaces are quoted or written with `\ `, and other bytes use
//! the same `\ooo` escapes listings print. Tab completes names on a
//! terminal; on a pipe the commands are read one per line, so the shell can
//! also be scripted.

use super::chain::{At, Chosen};
use super::extract::extract_into;
use crate::names::{escape, unescape};
use crate::report::Report;
use crate::stream::reader::Digest;
use crate::target::create::prepare_target;
use crate::target::select::cut;
use crate::tree::{Kind, Tree, ROOT_INO};
use anyhow::{Context, Result};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

/// What the user asked for.
pub struct ShellOptions {
    /// The streams (`-f`, any order).
    pub inputs: Vec<crate::media::Input>,
    /// Where `extract` writes.
    pub target: PathBuf,
    /// The snapshot to browse (default: the newest given).
    pub at: Option<At>,
    /// Replace existing entries in the way when extracting.
    pub force: bool,
}

/// The tree being browsed, with each directory's entries by name.
struct Browse {
    tree: Tree,
    /// dir inode -> (name, dirent index), sorted by name.
    children: HashMap<u64, Vec<(Vec<u8>, usize)>>,
}

impl Browse {
    fn new(tree: Tree) -> Browse {
        let mut children: HashMap<u64, Vec<(Vec<u8>, usize)>> = HashMap::new();
        for (i, d) in tree.dirents.iter().enumerate().skip(1) {
            children
                .entry(d.parent)
                .or_default()
                .push((d.name.clone(), i));
        }
        for v in children.values_mut() {
            v.sort();
        }
        Browse { tree, children }
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.tree.inode(ino).kind == Kind::Dir
    }

    /// Resolves `path` (raw bytes) from directory `cwd`: the dirent index
    /// it names (0 = the root).
    fn resolve(&self, cwd: u64, path: &[u8]) -> Option<usize> {
        let mut cur = if path.starts_with(b"/") {
            ROOT_INO
        } else {
            cwd
        };
        let mut idx = if cur == ROOT_INO {
            0
        } else {
            self.tree.primary_index(cur)
        };
        for part in path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
        {
            if !self.is_dir(cur) {
                return None;
            }
            if part == b".." {
                let p = self.tree.primary(cur).parent;
                if p != 0 {
                    cur = p;
                    idx = if cur == ROOT_INO {
                        0
                    } else {
                        self.tree.primary_index(cur)
                    };
                }
                continue;
            }
            let kids = self.children.get(&cur)?;
            let k = kids.binary_search_by(|(n, _)| n[..].cmp(part)).ok()?;
            idx = kids[k].1;
            cur = self.tree.dirents[idx].ino;
        }
        Some(idx)
    }

    fn dir_path(&self, ino: u64) -> String {
        if ino == ROOT_INO {
            "/".into()
        } else {
            format!("/{}", escape(&self.tree.path(ino)))
        }
    }
}

/// Tab completion of names in the browsed tree.
struct Complete {
    browse: Rc<Browse>,
    cwd: Rc<Cell<u64>>,
}

impl Completer for Complete {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        // The word being completed starts after the last unescaped space.
        let mut start = 0;
        let bytes = head.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 1,
                b' ' => start = i + 1,
                _ => {}
            }
            i += 1;
        }
        if head[..start].trim().is_empty() {
            // Completing the command word.
            let cmds = [
                "add", "cd", "delete", "extract", "help", "ls", "pwd", "quit", "what",
            ];
            let word = &head[start..];
            let c = cmds
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| Pair {
                    display: c.to_string(),
                    replacement: format!("{c} "),
                })
                .collect();
            return Ok((start, c));
        }
        let word = unword(&head[start..]);
        let (dir_part, name_part) = match word.iter().rposition(|&b| b == b'/') {
            Some(k) => (&word[..=k], &word[k + 1..]),
            None => (&word[..0], &word[..]),
        };
        let cwd = self.cwd.get();
        let b = &self.browse;
        let Some(dir_idx) = b.resolve(cwd, dir_part) else {
            return Ok((start, Vec::new()));
        };
        let dir = b.tree.dirents[dir_idx].ino;
        let prefix = &head[start..];
        let typed_dir_len = prefix.rfind('/').map(|k| k + 1).unwrap_or(0);
        let mut out = Vec::new();
        if let Some(kids) = b.children.get(&dir) {
            for (name, idx) in kids {
                if name.starts_with(name_part) {
                    let slash = if b.is_dir(b.tree.dirents[*idx].ino) {
                        "/"
                    } else {
                        ""
                    };
                    let e = escape_word(name);
                    out.push(Pair {
                        display: format!("{}{slash}", escape(name)),
                        replacement: format!("{}{e}{slash}", &prefix[..typed_dir_len]),
                    });
                }
            }
        }
        Ok((start, out))
    }
}

impl Hinter for Complete {
    type Hint = String;
}
impl Highlighter for Complete {}
impl Validator for Complete {}
impl Helper for Complete {}

/// A name as typed on the command line: listing escapes, spaces as `\ `.
fn escape_word(name: &[u8]) -> String {
    escape(name).replace(' ', "\\ ")
}

/// Undoes [`escape_word`] for one word: `\ ` is a space, the rest as in
/// listings.
fn unword(w: &str) -> Vec<u8> {
    unescape(&w.replace("\\ ", " "))
}

/// Splits a command line into words: whitespace separates, `'...'` and
/// `"..."` quote, `\ ` is a space inside a word.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '\\') if chars.peek() == Some(&' ') => {
                chars.next();
                cur.push(' ');
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

const HELP: &str = "\
commands (paths are relative to the current directory, or absolute from the snapshot's root):
  ls [PATH]        list a directory; marked entries show a '*'
  cd PATH          change directory
  pwd              print the current directory
  add [PATH...]    mark entries (a directory brings its contents) for extraction
  delete [PATH...] unmark entries
  extract          extract the marked entries into the target directory
  what             describe the snapshot and its streams
  help, ?          this text
  quit             leave (marks are forgotten)";

/// Runs the interactive shell.
pub fn shell(opts: &ShellOptions, report: &Report) -> Result<()> {
    let mut chosen = Chosen::open(&opts.inputs, Digest::Skip, opts.at)?;
    let browse = Rc::new(Browse::new(chosen.top().front.tree.clone()));
    let cwd = Rc::new(Cell::new(ROOT_INO));
    // explicit[i]: Some(true) added, Some(false) deleted, None inherits.
    let mut explicit: Vec<Option<bool>> = vec![None; browse.tree.dirents.len()];
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .auto_add_history(true)
        .build();
    let mut ed: Editor<Complete, rustyline::history::DefaultHistory> =
        Editor::with_config(config).context("cannot start the line editor")?;
    ed.set_helper(Some(Complete {
        browse: browse.clone(),
        cwd: cwd.clone(),
    }));
    let out = &mut std::io::stdout();
    let mut extracted_once = false;
    // Commands that failed: a script (or a user who left) learns it from
    // the exit status, not only from what scrolled by.
    let mut failed_extracts = 0;
    let mut failed_commands = 0;
    loop {
        let line = match ed.readline("snapdump > ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(anyhow::anyhow!("cannot read a command: {e}")),
        };
        let w = words(&line);
        let Some(cmd) = w.first() else { continue };
        let args: Vec<Vec<u8>> = w[1..].iter().map(|a| unescape(a)).collect();
        let b = &browse;
        let marked = effective(&b.tree, &explicit);
        match cmd.as_str() {
            "ls" => {
                let target = args
                    .first()
                    .map(|a| b.resolve(cwd.get(), a))
                    .unwrap_or_else(|| {
                        Some(if cwd.get() == ROOT_INO {
                            0
                        } else {
                            b.tree.primary_index(cwd.get())
                        })
                    });
                match target {
                    None => {
                        failed_commands += 1;
                        writeln!(out, "{}: not in the snapshot", escape(&args[0]))?
                    }
                    Some(i) => {
                        let ino = b.tree.dirents[i].ino;
                        if !b.is_dir(ino) {
                            let m = if marked[i] { "*" } else { "" };
                            writeln!(out, "{m}{}", escape(&b.tree.dirents[i].name))?;
                        } else {
                            for (name, idx) in b.children.get(&ino).map(|v| &v[..]).unwrap_or(&[]) {
                                let m = if marked[*idx] { "*" } else { " " };
                                let slash = if b.is_dir(b.tree.dirents[*idx].ino) {
                                    "/"
                                } else {
                                    ""
                                };
                                writeln!(out, "{m}{}{slash}", escape(name))?;
                            }
                        }
                    }
                }
            }
            "cd" => {
                let to = args.first().cloned().unwrap_or_else(|| b"/".to_vec());
                match b.resolve(cwd.get(), &to) {
                    Some(i) if b.is_dir(b.tree.dirents[i].ino) => cwd.set(b.tree.dirents[i].ino),
                    Some(_) => {
                        failed_commands += 1;
                        writeln!(out, "{}: not a directory", escape(&to))?
                    }
                    None => {
                        failed_commands += 1;
                        writeln!(out, "{}: not in the snapshot", escape(&to))?
                    }
                }
            }
            "pwd" => writeln!(out, "{}", b.dir_path(cwd.get()))?,
            "add" | "delete" => {
                let paths = if args.is_empty() {
                    vec![b".".to_vec()]
                } else {
                    args
                };
                for p in paths {
                    match b.resolve(cwd.get(), &p) {
                        Some(i) => set_mark(&b.tree, &mut explicit, i, cmd == "add"),
                        None => {
                            failed_commands += 1;
                            writeln!(out, "{}: not in the snapshot", escape(&p))?
                        }
                    }
                }
            }
            "extract" => {
                let marks = effective(&b.tree, &explicit);
                if !marks.iter().any(|&m| m) {
                    failed_commands += 1;
                    writeln!(out, "nothing is marked; use add first")?;
                    continue;
                }
                if extracted_once {
                    writeln!(out, "extracting again into {}", opts.target.display())?;
                }
                let sel = cut(&b.tree, &marks);
                // The same checks as restore -x: never into a target that
                // increments are applied to, unless forced.
                let r = prepare_target(&opts.target, opts.force).and_then(|_| {
                    extract_into(&mut chosen, &sel, &opts.target, opts.force, report)
                });
                match r {
                    Ok((_, bytes)) => {
                        extracted_once = true;
                        writeln!(
                            out,
                            "extracted {} entries ({bytes} bytes) into {}",
                            sel.tree.dirents.len() - 1,
                            opts.target.display()
                        )?;
                    }
                    Err(e) => {
                        failed_extracts += 1;
                        writeln!(out, "extract failed: {e:#}")?
                    }
                }
            }
            "what" => {
                let h = &chosen.top().header;
                writeln!(
                    out,
                    "snapshot {} (level {}) of {} on {}, taken {}",
                    h.snapshot.id,
                    h.snapshot.level,
                    escape(&h.source_path),
                    h.hostname,
                    h.snapshot.time.rfc3339()
                )?;
                for &i in &chosen.chain {
                    writeln!(out, "  {}", chosen.set.links[i].describe())?;
                }
            }
            "help" | "?" => writeln!(out, "{HELP}")?,
            "quit" | "q" | "exit" => break,
            other => {
                failed_commands += 1;
                writeln!(out, "{other}: unknown command; type help")?
            }
        }
        out.flush()?;
    }
    if failed_extracts > 0 {
        anyhow::bail!(
            "{failed_extracts} extract command(s) failed (said above); each failed one left nothing of its own in {} (earlier extracts stay)",
            opts.target.display()
        );
    }
    if failed_commands > 0 {
        report.warn(
            b".",
            format!("{failed_commands} command(s) failed (said above)"),
        );
    }
    Ok(())
}

/// Which dirents are marked: an explicit mark, else the parent directory's.
fn effective(tree: &Tree, explicit: &[Option<bool>]) -> Vec<bool> {
    let mut dir_mark = vec![false; tree.inodes.len() + 1];
    let mut out = vec![false; tree.dirents.len()];
    for (i, d) in tree.dirents.iter().enumerate() {
        let inherited = if d.parent == 0 {
            false
        } else {
            dir_mark[d.parent as usize]
        };
        let m = explicit[i].unwrap_or(inherited);
        out[i] = m;
        if tree.inode(d.ino).kind == Kind::Dir {
            dir_mark[d.ino as usize] = m;
        }
    }
    out
}

/// Marks or unmarks dirent `idx` and everything below it.
fn set_mark(tree: &Tree, explicit: &mut [Option<bool>], idx: usize, on: bool) {
    let mut under = vec![false; tree.inodes.len() + 1];
    let top = tree.dirents[idx].ino;
    if tree.inode(top).kind == Kind::Dir {
        under[top as usize] = true;
    }
    for (i, d) in tree.dirents.iter().enumerate() {
        if d.parent != 0 && under[d.parent as usize] {
            explicit[i] = None;
            if tree.inode(d.ino).kind == Kind::Dir {
                under[d.ino as usize] = true;
            }
        }
    }
    explicit[idx] = Some(on);
}
