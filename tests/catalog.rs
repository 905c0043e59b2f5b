//! The catalog's pack (catalog formats 4 and 5): commits append only what
//! changed, keep block checksums outside the body, survive a kill at
//! every step, compact, read format-3 and format-4 catalogs, and refuse
//! damage with one clear line. Every chain is restored and compared with
//! its source byte for byte.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

fn source_dir(cat: &Path) -> PathBuf {
    fs::read_dir(cat.join("sources"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

fn packs(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("catalog.pack."))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A tree with some bulk (so the catalog has many chunks) and a change
/// function touching a few files, adding and removing some.
fn grow(src: &Path, round: u64) {
    for i in 0..40 {
        let f = src.join(format!("d{}/f{i}", i % 4));
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        if round == 0 || (i + round) % 13 == 0 {
            fs::write(
                &f,
                bytes(round * 100 + i, 20_000 + (i as usize * 997) % 90_000),
            )
            .unwrap();
        }
    }
    if round > 0 {
        fs::write(src.join(format!("new{round}")), bytes(round, 5000)).unwrap();
        let _ = fs::remove_file(src.join(format!("new{}", round - 1)));
    }
}

/// Writes `good` with byte `at` flipped by `mask` as `pack`, runs a level
/// 1 to `s1`, and checks it is refused as it must be: exit 2, one line, no
/// stream. Returns the line.
fn refused_with_damage(
    t: &Paths,
    pack: &Path,
    good: &[u8],
    at: usize,
    mask: u8,
    s1: &Path,
) -> String {
    let mut bad = good.to_vec();
    bad[at] ^= mask;
    fs::write(pack, &bad).unwrap();
    let (c, _, e) = run_s(&["dump", "-1", "-f", p(s1), "--catalog", p(&t.cat), p(&t.src)]);
    assert_eq!(c, 2, "byte {at}: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "byte {at}: {e}");
    assert!(!s1.exists(), "byte {at}: a stream was written");
    e
}

fn restore_chain(streams: &[PathBuf], out: &Path) {
    let _ = fs::remove_dir_all(out);
    for s in streams {
        let (c, _, e) = run_s(&["restore", "-r", "-f", p(s), "--target", p(out)]);
        assert_eq!(c, 0, "restore of {}: {e}", s.display());
    }
}

#[test]
fn an_unchanged_level_1_appends_almost_nothing_to_the_pack() {
    let t = paths();
    grow(&t.src, 0);
    // A large file so the body is many chunks of block checksums.
    fs::write(t.src.join("big"), bytes(7, 24 << 20)).unwrap();
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let dir = source_dir(&t.cat);
    // A catalog names every file of its source: its directories are
    // their owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for d in [&dir, &t.cat.join("sources")] {
        let mode = fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let before = packs(&dir);
    assert_eq!(before.len(), 1, "{before:?}");
    let s1 = t.dir.path().join("s1");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let after = packs(&dir);
    assert_eq!(after[0].0, before[0].0);
    let grew = after[0].1 - before[0].1;
    // The new snapshot's row and plane, and the chunks around them.
    assert!(
        grew < 256 << 10,
        "an unchanged level 1 appended {grew} bytes to a {}-byte pack",
        before[0].1
    );
    assert!(fs::metadata(dir.join("catalog")).unwrap().len() < 64 << 10);
    // The big file's 6,144 checksums are in the pack, not the body: the
    // body is the entries and the planes.
    let (state, m) = snapdump::catalog::load(&dir).unwrap().unwrap();
    let body = m.unwrap().body_len();
    assert!(body < 32 << 10, "a body of {body} bytes");
    assert!(
        state.packed_sums_bytes() > 6144 * 16,
        "the checksums are not packed"
    );
    restore_chain(&[s0, s1], &t.out);
    assert_same_tree(&t.src, &t.out);
}

/// A file whose times are too recent to trust (here: in the future, so
/// every dump finds it "racily clean") is compared at every dump; when its
/// checksums come out the same, the commit keeps their record in the pack
/// instead of appending a copy, and a block changed under the same times
/// is still found.
#[test]
fn a_racily_clean_file_compared_again_appends_nothing() {
    use std::os::unix::fs::FileExt;
    let t = paths();
    grow(&t.src, 0);
    let big = t.src.join("racy");
    fs::write(&big, bytes(9, 64 << 20)).unwrap();
    let future = (4_102_444_800, 0); // 2100-01-01
    set_times(&big, future, future);
    let s = |i: usize| t.dir.path().join(format!("s{i}"));
    assert_eq!(dump_to(0, &s(0), &t.cat, &t.src), 0);
    let dir = source_dir(&t.cat);
    for level in 1..=2u8 {
        let before = packs(&dir);
        assert_eq!(dump_to(level, &s(level as usize), &t.cat, &t.src), 0);
        let after = packs(&dir);
        assert_eq!(after[0].0, before[0].0, "compacted: {before:?} {after:?}");
        let grew = after[0].1 - before[0].1;
        // The racy file's 16,384 checksums are a 262 KB record.
        assert!(grew < 64 << 10, "level {level} appended {grew} bytes");
    }
    // One block rewritten, times put back: still compared, and sent.
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .write_all_at(&[0xa5; 4096], 4096 * 1000)
        .unwrap();
    set_times(&big, future, future);
    let (c, out, e) = run_s(&[
        "dump",
        "-3",
        "-f",
        p(&s(3)),
        "--json",
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["data_blocks"], 1, "{j}");
    restore_chain(&(0..4).map(s).collect::<Vec<_>>(), &t.out);
    assert_same_tree(&t.src, &t.out);
}

#[test]
fn a_chain_killed_at_every_commit_step_restores_exactly() {
    let t = paths();
    grow(&t.src, 0);
    let big = t.src.join("big");
    let mut streams = Vec::new();
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    streams.push(s0);
    let dir = source_dir(&t.cat);
    // Each committed dump one level up, so the chain is every stream.
    let mut level = 1;
    for (round, point) in [
        (1, "catalog-chunk:1"),
        (2, "catalog-sums:1"),
        (3, "catalog-packed:1"),
        (4, "catalog-committed:1"),
    ] {
        grow(&t.src, round);
        // Its 8,192 block checksums, all new: several chunks to append.
        fs::write(&big, bytes(round, 32 << 20)).unwrap();
        let manifest = fs::read(dir.join("catalog")).unwrap();
        let killed = t.dir.path().join(format!("k{round}"));
        let out = bin()
            .args([
                "dump",
                &format!("-{level}"),
                "-f",
                p(&killed),
                "--catalog",
                p(&t.cat),
                p(&t.src),
            ])
            .env("SNAPDUMP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the dump was not stopped");
        let after = fs::read(dir.join("catalog")).unwrap();
        if point.starts_with("catalog-committed") {
            // The manifest was renamed in: the dump's snapshot exists, and
            // its stream is complete (it was closed before the commit).
            assert_ne!(after, manifest, "{point}");
            // Not an interrupted dump: nothing to resume, nothing to
            // discard.
            let (c, _, e) = run_s(&[
                "dump",
                &format!("-{}", level + 1),
                "--resume",
                "-f",
                p(&t.dir.path().join("never")),
                "--catalog",
                p(&t.cat),
                p(&t.src),
            ]);
            assert_eq!(c, 2, "{e}");
            assert!(e.contains("nothing to resume"), "{e}");
            assert_eq!(e.trim_end().lines().count(), 1, "{e}");
            streams.push(killed);
            level += 1;
        } else {
            assert_eq!(after, manifest, "{point}: the catalog changed");
        }
        let s = t.dir.path().join(format!("s{round}"));
        let (c, _, e) = run_s(&[
            "dump",
            &format!("-{level}"),
            "-f",
            p(&s),
            "--catalog",
            p(&t.cat),
            p(&t.src),
        ]);
        assert_eq!(c, 0, "after {point}: {e}");
        assert_eq!(
            e.contains("interrupted dump"),
            !point.starts_with("catalog-committed"),
            "after {point}: {e}"
        );
        streams.push(s);
        level += 1;
        assert_eq!(packs(&dir).len(), 1, "after {point}: {:?}", packs(&dir));
        restore_chain(&streams, &t.out);
        assert_same_tree(&t.src, &t.out);
    }
}

#[test]
fn many_increments_compact_the_pack_and_keep_one() {
    let t = paths();
    grow(&t.src, 0);
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let dir = source_dir(&t.cat);
    let mut generations = std::collections::BTreeSet::new();
    let mut last = s0.clone();
    for round in 1..=12 {
        // Rewrite a big file whole each round: its checksums are all new.
        fs::write(t.src.join("churn"), bytes(1000 + round, 16 << 20)).unwrap();
        let s = t.dir.path().join(format!("s{round}"));
        let (c, _, e) = run_s(&["dump", "-0", "-f", p(&s), "--catalog", p(&t.cat), p(&t.src)]);
        assert_eq!(c, 0, "{e}");
        let ps = packs(&dir);
        assert_eq!(ps.len(), 1, "{ps:?}");
        generations.insert(ps[0].0.clone());
        // Never more than three times what is live, plus the slack and
        // one round's appends (a round adds at most 4,096 checksums).
        let (state, m) = snapdump::catalog::load(&dir).unwrap().unwrap();
        let live = m.unwrap().live_bytes() + state.packed_sums_bytes();
        let bound = 3 * live + snapdump::catalog::pack::COMPACT_SLACK + (128 << 10);
        assert!(ps[0].1 <= bound, "{ps:?}: {live} live bytes");
        last = s;
    }
    assert!(
        generations.len() > 1,
        "the pack was never compacted: {generations:?}"
    );
    // The checksums copied by the compactions still tell unchanged blocks:
    // one block rewritten in the churned file, one block carried.
    let churn = t.src.join("churn");
    let mut data = fs::read(&churn).unwrap();
    data[5 << 20] ^= 1;
    fs::write(&churn, &data).unwrap();
    let s1 = t.dir.path().join("s-last");
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    let len = fs::metadata(&s1).unwrap().len();
    assert!(
        len < 1 << 20,
        "a one-block change made a {len}-byte increment"
    );
    restore_chain(&[last, s1], &t.out);
    assert_same_tree(&t.src, &t.out);
}

#[test]
fn a_damaged_or_missing_pack_is_one_clear_line_and_changes_nothing() {
    let t = paths();
    grow(&t.src, 0);
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let dir = source_dir(&t.cat);
    let (name, len) = packs(&dir).remove(0);
    let pack = dir.join(&name);
    let good = fs::read(&pack).unwrap();
    let s1 = t.dir.path().join("s1");
    let mut rng = Rng(5);
    for at in [
        0,
        12,
        30,
        64 + rng.next() as usize % (len as usize - 100),
        len as usize - 1,
    ] {
        let e = refused_with_damage(&t, &pack, &good, at, 0x04, &s1);
        assert!(e.contains(&name) && e.contains("damaged"), "byte {at}: {e}");
    }
    fs::remove_file(&pack).unwrap();
    let (c, _, e) = run_s(&["snapshots", "--catalog", p(&t.cat), p(&t.src)]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains(&name) && e.contains("missing"), "{e}");
    assert!(
        e.contains("restore the catalog directory from a backup"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    fs::write(&pack, &good).unwrap();
    let (c, _, e) = run_s(&[
        "dump",
        "-1",
        "-f",
        p(&s1),
        "--catalog",
        p(&t.cat),
        p(&t.src),
    ]);
    assert_eq!(c, 0, "{e}");
    restore_chain(&[s0, s1], &t.out);
    assert_same_tree(&t.src, &t.out);
}

/// The testdata catalog of format 4 (checksums inline in the body; a
/// level 0 of [`golden_tree`]), and the same body sealed as format 3, are
/// read by dumps through the binary: their checksums keep every unchanged
/// block, and the commit rewrites the catalog in the current format with
/// the larger file's checksums in the pack, which the next dump uses.
#[test]
fn format_3_and_4_catalogs_from_testdata_are_read_and_upgraded() {
    use snapdump::tree::Sums;
    // The catalog names its source by path: one fixed path, one user at
    // a time.
    let root = Path::new("/tmp/snapdump-golden-catalog-test");
    fs::create_dir_all(root).unwrap();
    let lock = fs::File::create(root.join("lock")).unwrap();
    lock.lock().unwrap();
    let src = root.join("src");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog-v4");
    for version in [4, 3] {
        let t = paths();
        let _ = fs::remove_dir_all(&src);
        golden_tree(&src);
        let dir = t.cat.join("sources/b30213dd2a9ecc45");
        fs::create_dir_all(&dir).unwrap();
        for f in ["catalog", "catalog.pack.1", "source"] {
            fs::copy(golden.join(f), dir.join(f)).unwrap();
        }
        if version == 3 {
            // Format 3 is the same body sealed in the catalog file itself.
            let m =
                snapdump::catalog::open_sealed(&fs::read(dir.join("catalog")).unwrap()).unwrap();
            let m = snapdump::catalog::pack::Manifest::decode(&m.1).unwrap();
            let body = snapdump::catalog::pack::read_body(&dir, &m).unwrap();
            let v3 = snapdump::sealed::seal(&snapdump::catalog::CATALOG_MAGIC, 3, &body);
            fs::write(dir.join("catalog"), v3).unwrap();
            fs::remove_file(dir.join("catalog.pack.1")).unwrap();
        }
        let (state, _) = snapdump::catalog::load(&dir).unwrap().unwrap();
        assert_eq!(state.snapshots.len(), 1);
        let tree = state.tree.unwrap();
        let small = tree
            .dirents
            .iter()
            .find(|d| d.name == b"small.txt")
            .unwrap();
        let Sums::Here(s) = &tree.inode(small.ino).sums else {
            panic!("format {version}: checksums are inline");
        };
        assert_eq!(
            *s,
            vec![xxhash_rust::xxh3::xxh3_128(b"hello catalog\n").to_le_bytes()]
        );
        // Two increments, each after one block of the big file changed:
        // each carries that block alone.
        let big = src.join("big.bin");
        for (level, at) in [(1, 5 * 4096 + 7), (2, 11 * 4096)] {
            let mut data = fs::read(&big).unwrap();
            data[at] ^= 1;
            fs::write(&big, data).unwrap();
            let s = t.dir.path().join(format!("s{level}"));
            let (c, out, e) = run_s(&[
                "dump",
                &format!("-{level}"),
                "--json",
                "-f",
                p(&s),
                "--catalog",
                p(&t.cat),
                p(&src),
            ]);
            assert_eq!(c, 0, "format {version}, level {level}: {e}");
            let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(j["data_blocks"], 1, "format {version}, level {level}: {j}");
            let (v, _) =
                snapdump::catalog::open_sealed(&fs::read(dir.join("catalog")).unwrap()).unwrap();
            assert_eq!(v, snapdump::catalog::CATALOG_VERSION);
            let (state, _) = snapdump::catalog::load(&dir).unwrap().unwrap();
            let tree = state.tree.unwrap();
            let d = tree.dirents.iter().find(|d| d.name == b"big.bin").unwrap();
            assert!(matches!(tree.inode(d.ino).sums, Sums::Packed(_)));
            let d = tree.dirents.iter().find(|d| d.name == b"mid.bin").unwrap();
            assert!(matches!(tree.inode(d.ino).sums, Sums::Here(_)));
        }
    }
    let _ = fs::remove_dir_all(&src);
}

/// The tree of testdata/catalog-v4 (made at
/// /tmp/snapdump-golden-catalog-test/src): a 21-block file, a 16-block
/// one in a directory, a small one and a symlink to it.
fn golden_tree(src: &Path) {
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("big.bin"), bytes(1, 20 * 4096 + 123)).unwrap();
    fs::write(src.join("small.txt"), b"hello catalog\n").unwrap();
    fs::write(src.join("dir/mid.bin"), bytes(2, 16 * 4096)).unwrap();
    std::os::unix::fs::symlink("small.txt", src.join("link")).unwrap();
}

/// A sums record damaged in the pack is found when a dump needs it (its
/// file changed): one clear line naming the pack, and nothing written.
#[test]
fn a_damaged_checksum_record_is_one_clear_line_when_its_file_changes() {
    use snapdump::tree::Sums;
    let t = paths();
    grow(&t.src, 0);
    let big = t.src.join("big");
    fs::write(&big, bytes(3, 4 << 20)).unwrap();
    let s0 = t.dir.path().join("s0");
    assert_eq!(dump_to(0, &s0, &t.cat, &t.src), 0);
    let dir = source_dir(&t.cat);
    let (state, m) = snapdump::catalog::load(&dir).unwrap().unwrap();
    let tree = state.tree.unwrap();
    let d = tree.dirents.iter().find(|d| d.name == b"big").unwrap();
    let Sums::Packed(r) = &tree.inode(d.ino).sums else {
        panic!("the big file's checksums are not in the pack");
    };
    let pack = snapdump::catalog::pack::pack_path(&dir, m.unwrap().generation);
    let good = fs::read(&pack).unwrap();
    let mut data = fs::read(&big).unwrap();
    data[1 << 20] ^= 1;
    fs::write(&big, &data).unwrap();
    let s1 = t.dir.path().join("s1");
    // The record's header, and a checksum inside it.
    for at in [r.offset as usize + 5, r.offset as usize + 40 + 16 * 100 + 3] {
        let e = refused_with_damage(&t, &pack, &good, at, 0x20, &s1);
        assert!(
            e.contains(&pack.display().to_string()) && e.contains("damaged"),
            "byte {at}: {e}"
        );
        assert!(
            e.contains("a level-0 dump records the checksums afresh"),
            "byte {at}: {e}"
        );
    }
    fs::write(&pack, &good).unwrap();
    assert_eq!(dump_to(1, &s1, &t.cat, &t.src), 0);
    // One block changed: the rest kept their numbers from the checksums.
    let len = fs::metadata(&s1).unwrap().len();
    assert!(
        len < 256 << 10,
        "a one-block change made a {len}-byte increment"
    );
    restore_chain(&[s0, s1], &t.out);
    assert_same_tree(&t.src, &t.out);
}

/// `snapshots` without a source lists every catalog it can read: one
/// damaged source's catalog is a warning naming it (exit status 1), not
/// the end of the listing.
#[test]
fn a_damaged_catalog_does_not_hide_the_others() {
    let t = paths();
    grow(&t.src, 0);
    let other = t.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("f"), b"another source").unwrap();
    assert_eq!(dump_to(0, &t.dir.path().join("s0"), &t.cat, &t.src), 0);
    assert_eq!(dump_to(0, &t.dir.path().join("o0"), &t.cat, &other), 0);
    let (c, out, e) = run_s(&["snapshots", "--catalog", p(&t.cat)]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(String::from_utf8_lossy(&out).matches("level 0").count(), 2);
    // Damage the first source's catalog manifest.
    let dirs: Vec<PathBuf> = fs::read_dir(t.cat.join("sources"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let victim = dirs
        .iter()
        .find(|d| {
            fs::read(d.join("source"))
                .unwrap()
                .starts_with(p(&t.src).as_bytes())
        })
        .unwrap();
    let manifest = victim.join("catalog");
    let mut bytes = fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&manifest, &bytes).unwrap();
    for json in [false, true] {
        let mut args = vec!["snapshots", "--catalog", p(&t.cat)];
        if json {
            args.insert(1, "--json");
        }
        let (c, out, e) = run_s(&args);
        assert_eq!(c, 1, "{e}");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 1, "{e}");
        assert!(lines[0].contains(p(victim)), "{e}");
        assert!(lines[0].contains("not listed"), "{e}");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(p(&other)), "{out}");
        assert!(!out.contains(&format!("{}\n", p(&t.src))), "{out}");
    }
    // The damaged one alone, named: an error, as before.
    let (c, _, e) = run_s(&["snapshots", "--catalog", p(&t.cat), p(&t.src)]);
    assert_eq!(c, 2, "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}
