//! The house's layering holds: no import cycle between modules, and no
//! layer imports one above it (ARCHITECTURE.md, scripts/module-graph.py).

#[test]
fn modules_import_downward_only_and_form_no_cycle() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/module-graph.py"))
        .current_dir(root)
        .output()
        .expect("python3 runs scripts/module-graph.py");
    assert!(
        out.status.success(),
        "layering broken:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn main_rs_only_parses_and_dispatches() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let main = std::fs::read_to_string(root.join("src/main.rs")).unwrap();
    assert!(
        main.lines().count() < 150,
        "src/main.rs has grown past 150 lines"
    );
}
