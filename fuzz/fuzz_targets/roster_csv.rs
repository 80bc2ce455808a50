//! The CSV rows of `presencectl roster import` and `user import`
//! (`crates/presencectl/src/import/rows.rs`, included here as it is: presencectl is a
//! binary crate). A file is read twice, streaming, and every error names a line, so
//! the line numbers matter as much as the fields.
//!
//! Input: byte 0 picks the mode. Raw mode (even): the rest, repeated so that long
//! files (past the reader's 64 KiB window compaction) are reached, is a CSV file; the
//! line of every row must be the line its record starts on, counted naively from the
//! start of the file. Round-trip mode (odd): the rest is cut into records and fields,
//! written with the csv writer (blank and comment lines between), and must read back
//! as those records, on the lines they were written on, minus the rows the import
//! skips (a first row whose first field is the header, rows of blanks).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/presencectl/src/import/rows.rs"]
mod rows;

/// What `rows.rs` needs of presencectl's `client` module.
mod client {
    #[derive(Debug)]
    pub struct CliError {
        pub message: String,
    }
    impl CliError {
        pub fn invalid(message: impl Into<String>) -> Self {
            CliError {
                message: message.into(),
            }
        }
    }
}

use presenced_fuzz::{bounded, fields};
use rows::Rows;

const MAX_INPUT: usize = 16 * 1024;
const MAX_ROWS: usize = 20_000;

/// Line ends in `b`: CRLF, LF or a lone CR (each ends a CSV record).
fn line_ends(b: &[u8]) -> u64 {
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' || (c == b'\n' && (i == 0 || b[i - 1] != b'\r')) {
            n += 1;
        }
    }
    n
}

/// 1-based line of the record csv reports at `at`: skip the line ends and `#` comment
/// lines in front of it, as the record starts after them.
fn naive_line(file: &[u8], at: usize) -> u64 {
    let mut i = at.min(file.len());
    while i < file.len() {
        match file[i] {
            b'\n' | b'\r' => i += 1,
            b'#' => {
                i = file[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(file.len(), |p| i + p + 1)
            }
            _ => break,
        }
    }
    1 + line_ends(&file[..i])
}

fn raw(file: &[u8], trim: bool) {
    let mut rows = Rows::new(file, "f", "user", trim);
    let mut last = 0;
    for _ in 0..MAX_ROWS {
        match rows.next_row() {
            Ok(Some(line)) => {
                assert!(line > last, "line {line} after line {last}");
                last = line;
                let at = rows.record().position().map_or(0, |p| p.byte() as usize);
                assert_eq!(
                    line,
                    naive_line(file, at),
                    "row at byte {at} on the wrong line"
                );
            }
            Ok(None) => return,
            Err(e) => {
                assert!(e.message.starts_with("f"), "{}", e.message);
                return;
            }
        }
    }
}

fn round_trip(spec: &[u8]) {
    // Records are separated by 0xFE, fields by 0xFF; a field starting with 0x01 puts
    // a comment line before its record, 0x02 a blank line.
    let mut records: Vec<Vec<String>> = Vec::new();
    let mut extra: Vec<u8> = Vec::new();
    for rec in spec.split(|&b| b == 0xfe).take(200) {
        let mut fs: Vec<String> = fields(rec)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let mark = fs.first().and_then(|f| f.bytes().next()).unwrap_or(0);
        extra.push(mark);
        if mark == 1 || mark == 2 {
            fs[0].remove(0);
        }
        records.push(fs);
    }
    let mut builder = csv::WriterBuilder::new();
    builder.flexible(true).quote_style(csv::QuoteStyle::Always);
    let mut file = Vec::new();
    let mut want: Vec<(u64, Vec<String>)> = Vec::new();
    let mut first = true;
    for (rec, mark) in records.iter().zip(&extra) {
        match mark {
            1 => file.extend_from_slice(b"# a comment, \"quoted\"\n"),
            2 => file.extend_from_slice(b"\n"),
            _ => {}
        }
        let line = 1 + line_ends(&file);
        let mut w = builder.from_writer(Vec::new());
        w.write_record(rec).expect("write to memory");
        file.extend_from_slice(&w.into_inner().expect("flush to memory"));
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if std::mem::take(&mut first) && rec[0].trim() == "user" {
            continue;
        }
        want.push((line, rec.clone()));
    }
    let mut rows = Rows::new(&file[..], "f", "user", false);
    let mut got = Vec::new();
    while let Some(line) = rows
        .next_row()
        .unwrap_or_else(|e| panic!("{}: {:?}", e.message, String::from_utf8_lossy(&file)))
    {
        got.push((
            line,
            rows.record().iter().map(str::to_string).collect::<Vec<_>>(),
        ));
    }
    assert_eq!(got, want, "file {:?}", String::from_utf8_lossy(&file));
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&sel, rest)) = data.split_first() else { return };
        if sel & 1 == 1 {
            round_trip(rest);
            return;
        }
        // Up to 127 copies: a 1 KiB input becomes a file past the 64 KiB window.
        let copies = 1 + usize::from(sel >> 1);
        let file = rest.repeat(copies.min(1 + (256 * 1024) / rest.len().max(1)));
        raw(&file, sel & 2 == 0);
    }
);

/// The import files of the README and the tests, and spreadsheet exports.
fn seeds() -> Vec<Vec<u8>> {
    let files: [&[u8]; 6] = [
        b"user,contact,name,group\nalice,bob,Bob,Team\nalice,carol@example.test,,\n",
        b"# exported\n\nuser,password\nalice,s3cret\nbob\n",
        b"user,contact\r\n\"alice\",\"bob, the builder\"\r\n   \r\n# c\r\nbob,\"multi\nline\"\r\n",
        b"alice,bob\n\"unterminated\n",
        b"\xef\xbb\xbfuser,contact\nalice,bob\n",
        b"a,\xff\xfe\n",
    ];
    let mut out = Vec::new();
    for f in files {
        for sel in [0u8, 2, 64] {
            let mut s = vec![sel];
            s.extend_from_slice(f);
            out.push(s);
        }
    }
    let mut s = vec![1u8];
    s.extend_from_slice(
        b"user\xffcontact\xfe\x01alice\xffbob\xfe\x02 \xff \xfecarol\xff\"q\"\n\xff,",
    );
    out.push(s);
    out
}
