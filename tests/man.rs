//! The shipped man pages and completion scripts are what the clap
//! definitions generate: the manual cannot drift from the options.
//! `SNAPDUMP_BLESS=1 cargo test --test man` writes them anew after a
//! change to the options or to a template in man/src/.

use std::path::Path;

fn check_or_bless(path: &Path, want: &[u8], stale: &mut Vec<String>) {
    if std::env::var_os("SNAPDUMP_BLESS").is_some() {
        std::fs::write(path, want).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(have) if have == want => {}
        _ => stale.push(path.display().to_string()),
    }
}

#[test]
fn shipped_man_pages_are_what_the_definitions_generate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for page in snapdump::cli::man::PAGES {
        let text = snapdump::cli::man::render(page);
        assert!(text.contains(".SH SYNOPSIS"), "{}", page.file);
        check_or_bless(
            &root.join("man").join(page.file),
            text.as_bytes(),
            &mut stale,
        );
    }
    assert!(
        stale.is_empty(),
        "stale man pages (run SNAPDUMP_BLESS=1 cargo test --test man): {stale:?}"
    );
    // Every page the generator knows is shipped, and nothing else is.
    let mut shipped: Vec<String> = std::fs::read_dir(root.join("man"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".1").then_some(n)
        })
        .collect();
    shipped.sort();
    let mut known: Vec<String> = snapdump::cli::man::PAGES
        .iter()
        .map(|p| p.file.to_string())
        .collect();
    known.sort();
    assert_eq!(shipped, known);
}

#[test]
fn every_option_is_in_its_man_page() {
    // A sample that would go missing if the options section were not
    // generated: each is defined in cli/ only.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (page, option) in [
        ("snapdump-dump.1", "\\-\\-volume\\-size"),
        ("snapdump-dump.1", "\\-\\-resume"),
        ("snapdump-restore.1", "\\-\\-verify\\-digest"),
        ("snapdump-restore.1", "\\-\\-file\\-number"),
        ("snapdump-volume.1", "\\-\\-compact"),
        ("snapdump-verify.1", "\\-\\-new\\-volume"),
    ] {
        let text = std::fs::read_to_string(root.join("man").join(page)).unwrap();
        assert!(text.contains(option), "{page} lacks {option}");
    }
}

#[test]
fn shipped_completions_are_what_the_definitions_generate() {
    use clap_complete::Shell;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    let mut stale = Vec::new();
    for (shell, file) in [
        (Shell::Bash, "snapdump.bash"),
        (Shell::Zsh, "_snapdump"),
        (Shell::Fish, "snapdump.fish"),
    ] {
        let script = snapdump::cli::completions::script(shell);
        check_or_bless(&root.join(file), &script, &mut stale);
    }
    assert!(
        stale.is_empty(),
        "stale completions (run SNAPDUMP_BLESS=1 cargo test --test man): {stale:?}"
    );
}

#[test]
fn the_completions_command_prints_a_script_bash_accepts() {
    let out = assert_cmd::Command::cargo_bin("snapdump")
        .unwrap()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["dump", "restore", "verify", "volume", "--volume-size"] {
        assert!(text.contains(word), "completion lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.bash");
    std::fs::write(&f, &text).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
}
