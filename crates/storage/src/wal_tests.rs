use super::*;

fn entries(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..to)
        .map(|i| {
            (
                i,
                format!("entry {i} {}", "x".repeat((i % 7) as usize)).into_bytes(),
            )
        })
        .collect()
}

fn indexes(w: &Wal, from: u64) -> Vec<u64> {
    w.read_range(from, None)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_read_back_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 200).unwrap();
    w.append(entries(1, 40)).unwrap();
    w.append(entries(40, 41)).unwrap();
    w.sync().unwrap();
    assert!(segments(dir.path()).len() > 3, "small segments roll");
    assert_eq!(w.read_range(5, Some(9)).unwrap(), entries(5, 9));
    assert_eq!(w.read_range(1, None).unwrap(), entries(1, 41));
    assert_eq!(w.last_entry().unwrap(), entries(40, 41).pop());
    assert_eq!(w.sizes().len(), 40);
    assert_eq!(w.sizes()[3], (4, entries(4, 5)[0].1.len() as u32));
    drop(w);
    let w = Wal::open_with(dir.path(), 200).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(1, 41));
    // Appends go on where the log ends, and only there.
    assert!(w.append(entries(42, 43)).is_err());
    assert!(w.append(entries(40, 41)).is_err());
    w.append(entries(41, 43)).unwrap();
    assert_eq!(indexes(&w, 39), vec![39, 40, 41, 42]);
}

#[test]
fn a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 1 << 20).unwrap();
    w.append(entries(1, 30)).unwrap();
    w.sync().unwrap();
    let end = w.bytes();
    drop(w);
    let seg = segments(dir.path())[0].clone();
    assert_eq!(fs::metadata(&seg).unwrap().len(), 1 << 20, "preallocated");
    // A crash in the middle of writing the next record.
    let mut rec = Vec::new();
    encode(&mut rec, 30, b"never synced");
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&rec[..rec.len() / 2], end).unwrap();
    drop(f);
    let w = Wal::open_with(dir.path(), 1 << 20).unwrap();
    assert_eq!(w.read_range(1, None).unwrap(), entries(1, 30));
    let b = fs::read(&seg).unwrap();
    assert!(
        b[end as usize..].iter().all(|&x| x == 0),
        "the torn bytes are gone"
    );
    w.append(entries(30, 32)).unwrap();
    drop(w);
    assert_eq!(
        indexes(&Wal::open_with(dir.path(), 1 << 20).unwrap(), 28),
        vec![28, 29, 30, 31]
    );
}

#[test]
fn damage_before_the_last_segment_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 300).unwrap();
    w.append(entries(1, 30)).unwrap();
    w.sync().unwrap();
    drop(w);
    // A flipped byte in a segment that is not the last.
    let first = segments(dir.path())[0].clone();
    let mut b = fs::read(&first).unwrap();
    let at = HEADER as usize + RECORD_HEAD + 2;
    b[at] ^= 0x40;
    fs::write(&first, &b).unwrap();
    let msg = Wal::open_with(dir.path(), 300)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("is damaged at byte") && msg.contains(".wal"),
        "{msg}"
    );

    // A missing segment in the middle: a gap, named.
    b[at] ^= 0x40;
    fs::write(&first, &b).unwrap();
    fs::remove_file(&segments(dir.path())[1]).unwrap();
    let msg = Wal::open_with(dir.path(), 300)
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("but the one before ends at"), "{msg}");
}

#[test]
fn truncation_keeps_the_head_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 250).unwrap();
    w.append(entries(10, 60)).unwrap();
    w.truncate_from(33).unwrap();
    assert_eq!(w.last_entry().unwrap().unwrap().0, 32);
    w.append(entries(33, 36)).unwrap();
    w.truncate_from(100).unwrap();
    w.sync().unwrap();
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(10, 36));
    // Everything: the log goes on at the truncation point.
    w.truncate_from(10).unwrap();
    assert!(w.read_range(0, None).unwrap().is_empty());
    w.append(entries(10, 12)).unwrap();
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(10, 12));
}

#[test]
fn purges_delete_whole_segments_and_remember_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 250).unwrap();
    w.append(entries(1, 80)).unwrap();
    let before = segments(dir.path()).len();
    w.purge_upto(41).unwrap();
    assert!(segments(dir.path()).len() < before);
    assert_eq!(indexes(&w, 0).first(), Some(&42));
    assert_eq!(w.sizes().first().map(|s| s.0), Some(42));
    w.purge_upto(10).unwrap();
    w.sync().unwrap();
    drop(w);
    // The first kept segment still holds entries up to 41: its header hides them.
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(42, 80));
    assert_eq!(w.sizes().len(), 38);
    // Past the end (a snapshot installed ahead of the log): empty, and goes on after it.
    w.purge_upto(500).unwrap();
    assert!(w.read_range(0, None).unwrap().is_empty());
    assert_eq!(segments(dir.path()).len(), 1);
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert!(w.last_entry().unwrap().is_none());
    w.append(entries(501, 503)).unwrap();
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(501, 503));
}

#[test]
fn a_purge_cut_short_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 250).unwrap();
    w.append(entries(1, 60)).unwrap();
    w.sync().unwrap();
    drop(w);
    let segs = segments(dir.path());
    // The purge point went into the third segment's header; the crash came before the
    // first two were deleted.
    let third = &segs[2];
    let first_of_third: u64 = third
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let f = OpenOptions::new().write(true).open(third).unwrap();
    f.write_all_at(&(first_of_third + 1).to_le_bytes(), PURGED_AT)
        .unwrap();
    drop(f);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(
        w.read_range(0, None).unwrap(),
        entries(first_of_third + 1, 60)
    );
    assert_eq!(segments(dir.path()).len(), segs.len() - 2);
}

#[test]
fn an_empty_log_takes_any_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path()).unwrap();
    assert!(w.last_entry().unwrap().is_none());
    w.append(entries(77, 79)).unwrap();
    w.sync().unwrap();
    drop(w);
    let w = Wal::open(dir.path()).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(77, 79));
    assert!(w.read_range(79, None).unwrap().is_empty());
    assert_eq!(w.read_range(78, Some(78)).unwrap(), vec![]);
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open(dir.path()).unwrap();
    w.append(entries(1, 3)).unwrap();
    drop(w);
    let seg = segments(dir.path())[0].clone();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&(VERSION + 1).to_le_bytes(), 8).unwrap();
    drop(f);
    let msg = Wal::open(dir.path()).err().expect("refused").to_string();
    assert!(
        msg.contains("has format 2; this release reads up to 1"),
        "{msg}"
    );
}

#[test]
fn index_zero_is_an_entry_like_any_other() {
    // openraft's first entry (the initial membership) has index 0.
    let dir = tempfile::tempdir().unwrap();
    let w = Wal::open_with(dir.path(), 250).unwrap();
    w.append(entries(0, 30)).unwrap();
    w.sync().unwrap();
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(0, 30));
    w.purge_upto(0).unwrap();
    drop(w);
    let w = Wal::open_with(dir.path(), 250).unwrap();
    assert_eq!(w.read_range(0, None).unwrap(), entries(1, 30));
}
