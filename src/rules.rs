//! What a dump leaves out of a source: exclusion patterns (gitignore
//! syntax), cache directories (`CACHEDIR.TAG`), directories holding a
//! marker file, and files flagged nodump (`chattr +d`) from a level on, as
//! dump(8)'s `-h`.
//!
//! The rules are recorded with the catalog, so that every level of a chain
//! leaves out the same entries: a later dump that names no rules uses the
//! recorded ones, and one that names others is refused unless it says the
//! rules changed (its increment then carries what came in or went out).
//! Patterns are matched with the `ignore` crate's gitignore matcher, which
//! is what users of git, ripgrep and restic's exclude files already know.

use anyhow::{anyhow, Context, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The first line of a cache directory's `CACHEDIR.TAG`
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The nodump flag is honoured from this level on unless told otherwise
/// (dump(8)'s default for `-h`).
pub const DEFAULT_NODUMP_LEVEL: u8 = 1;

/// The exclusion rules of a source, as recorded in its catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Gitignore-style patterns, matched against paths relative to the
    /// source's root (from `--exclude` and the lines of `--exclude-from`).
    pub patterns: Vec<String>,
    /// Directories holding a valid `CACHEDIR.TAG` keep only that file.
    pub exclude_caches: bool,
    /// Directories holding a file of one of these names keep only it.
    pub if_present: Vec<String>,
    /// Entries flagged nodump are left out at this level and above (10:
    /// never).
    pub nodump_level: u8,
}

impl Rules {
    /// The rules of a source that has none (nodump honoured from level 1).
    pub fn none() -> Rules {
        Rules {
            nodump_level: DEFAULT_NODUMP_LEVEL,
            ..Rules::default()
        }
    }

    /// Reads `--exclude-from FILE`: one pattern per line; blank lines and
    /// lines starting with `#` are skipped (a leading `\#` is a `#`), as in
    /// a `.gitignore`.
    pub fn patterns_from(file: &Path) -> Result<Vec<String>> {
        let text = std::fs::read(file)
            .with_context(|| format!("cannot read exclude file {}", file.display()))?;
        let text = String::from_utf8(text).map_err(|_| {
            anyhow!(
                "exclude file {} is not UTF-8 text; patterns must be UTF-8",
                file.display()
            )
        })?;
        Ok(text
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    /// Whether any entry is left out at `level` besides nodump ones.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.exclude_caches && self.if_present.is_empty()
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for p in &self.patterns {
            parts.push(format!("--exclude '{p}'"));
        }
        if self.exclude_caches {
            parts.push("--exclude-caches".into());
        }
        for n in &self.if_present {
            parts.push(format!("--exclude-if-present '{n}'"));
        }
        parts.push(format!("--honor-nodump {}", self.nodump_level));
        parts.join(" ")
    }

    /// The matcher for a scan at `level`.
    pub fn matcher(&self, level: u8) -> Result<Matcher> {
        let mut b = GitignoreBuilder::new("/");
        for p in &self.patterns {
            b.add_line(None, p)
                .map_err(|e| anyhow!("bad exclude pattern '{p}': {e}"))?;
        }
        let gitignore = b
            .build()
            .map_err(|e| anyhow!("bad exclude patterns: {e}"))?;
        Ok(Matcher {
            gitignore,
            exclude_caches: self.exclude_caches,
            if_present: self
                .if_present
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
            nodump: level >= self.nodump_level,
            any_pattern: !self.patterns.is_empty(),
        })
    }
}

/// The rules applied during one scan.
pub struct Matcher {
    gitignore: Gitignore,
    exclude_caches: bool,
    if_present: Vec<Vec<u8>>,
    /// The nodump flag leaves entries out at this dump's level.
    pub nodump: bool,
    any_pattern: bool,
}

impl Matcher {
    /// Whether a file named `name` can make its directory a tagged one
    /// (CACHEDIR.TAG with --exclude-caches, an --exclude-if-present name):
    /// a change to it changes what the directory's listing keeps.
    pub fn is_tag_name(&self, name: &[u8]) -> bool {
        (self.exclude_caches && name == b"CACHEDIR.TAG")
            || self.if_present.iter().any(|n| n == name)
    }
    /// Whether the entry at `rel` (relative to the source root, `/`
    /// separated) is left out by a pattern.
    pub fn excluded(&self, rel: &[u8], is_dir: bool) -> bool {
        if !self.any_pattern {
            return false;
        }
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new("/").join(std::ffi::OsStr::from_bytes(rel));
        self.gitignore.matched(&path, is_dir).is_ignore()
    }

    /// For a directory holding `names`: the one name it keeps when it is a
    /// cache directory or holds a marker file (`read_tag` reads a file of
    /// it, for the CACHEDIR.TAG signature), else `None` (everything kept).
    pub fn tagged(
        &self,
        names: &[Vec<u8>],
        read_tag: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        for n in &self.if_present {
            if names.iter().any(|x| x == n) {
                return Some(n.clone());
            }
        }
        if self.exclude_caches {
            let tag = b"CACHEDIR.TAG".as_slice();
            if names.iter().any(|x| x == tag)
                && read_tag(tag).is_some_and(|b| b.starts_with(CACHEDIR_SIGNATURE))
            {
                return Some(tag.to_vec());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> Matcher {
        Rules {
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            ..Rules::none()
        }
        .matcher(0)
        .unwrap()
    }

    #[test]
    fn patterns_follow_gitignore() {
        let x = m(&["*.o", "/build", "logs/", "!keep.o", "a/**/z"]);
        assert!(x.excluded(b"main.o", false));
        assert!(x.excluded(b"src/deep/main.o", false));
        assert!(!x.excluded(b"keep.o", false));
        assert!(x.excluded(b"build", true));
        assert!(!x.excluded(b"src/build", true), "anchored at the root");
        assert!(x.excluded(b"src/logs", true));
        assert!(
            !x.excluded(b"src/logs", false),
            "a trailing / is for directories"
        );
        assert!(x.excluded(b"a/b/c/z", false));
        assert!(!x.excluded(b"main.c", false));
    }

    #[test]
    fn cache_directories_need_the_signature() {
        let r = Rules {
            exclude_caches: true,
            if_present: vec![".nobackup".into()],
            ..Rules::none()
        };
        let x = r.matcher(0).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        let good = |_: &[u8]| Some(b"Signature: 8a477f597d28d172789f06886806bc55\n# x".to_vec());
        let bad = |_: &[u8]| Some(b"not a tag".to_vec());
        assert_eq!(
            x.tagged(&names(&["a", "CACHEDIR.TAG"]), &good),
            Some(b"CACHEDIR.TAG".to_vec())
        );
        assert_eq!(x.tagged(&names(&["a", "CACHEDIR.TAG"]), &bad), None);
        assert_eq!(
            x.tagged(&names(&["a", ".nobackup"]), &bad),
            Some(b".nobackup".to_vec())
        );
        assert_eq!(x.tagged(&names(&["a"]), &good), None);
    }
}
