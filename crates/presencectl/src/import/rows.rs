//! Streaming CSV rows with line numbers, shared by the import files: `#` comment lines,
//! blank lines (also lines of blanks) and a header row (only as the first row) are
//! skipped; quoted fields may hold commas; CRLF, LF and a lone CR (old Mac exports)
//! each end a line, as they end a record.
//!
//! Line numbers are tracked incrementally: the bytes the CSV reader has pulled are kept
//! from the start of the current record on (a few KiB), and the newlines in front of it
//! are counted once, as the records go by. Reading a file is linear in its size and
//! never holds more of it than that window.

use std::io::Read;

use csv::StringRecord;

use crate::client::CliError;

/// Bytes the CSV reader pulls from the file at a time.
const READ_BUFFER: usize = 64 * 1024;
/// Drop the window's consumed front once it is at least this long.
const COMPACT_AT: usize = 64 * 1024;

/// The rows of one CSV input.
pub struct Rows<R: Read> {
    rdr: csv::Reader<Tracked<R>>,
    source: String,
    header: &'static str,
    first: bool,
    record: StringRecord,
}

impl<R: Read> Rows<R> {
    /// Rows of `reader`, named `source` in messages. A first row whose first field is
    /// `header` is skipped. With `trim`, spaces around every field are dropped;
    /// without, fields are taken as they are (the caller trims what it wants).
    pub fn new(reader: R, source: &str, header: &'static str, trim: bool) -> Self {
        let rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .trim(if trim {
                csv::Trim::All
            } else {
                csv::Trim::None
            })
            .buffer_capacity(READ_BUFFER)
            .from_reader(Tracked::new(reader));
        Rows {
            rdr,
            source: source.to_string(),
            header,
            first: true,
            record: StringRecord::new(),
        }
    }

    /// Move to the next data row and return its 1-based line number, or `None` at the
    /// end of the input.
    pub fn next_row(&mut self) -> Result<Option<u64>, CliError> {
        loop {
            match self.rdr.read_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    let line = match e.position() {
                        Some(p) => format!(" line {}", self.rdr.get_mut().line_at(p.byte())),
                        None => String::new(),
                    };
                    return Err(CliError::invalid(format!(
                        "{}{line}: {}",
                        self.source,
                        csv_error_text(&e)
                    )));
                }
            }
            // csv's own line count is off after comment lines; count from the offset.
            let at = self.record.position().map_or(0, csv::Position::byte);
            let line = self.rdr.get_mut().line_at(at);
            // A line of blanks reads as one blank field: a blank line.
            if self.record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            if std::mem::take(&mut self.first)
                && self.record.get(0).map(str::trim) == Some(self.header)
            {
                continue;
            }
            return Ok(Some(line));
        }
    }

    /// The current row.
    pub fn record(&self) -> &StringRecord {
        &self.record
    }

    /// Field `i` of the current row ("" when missing).
    pub fn field(&self, i: usize) -> &str {
        self.record.get(i).unwrap_or("")
    }

    /// Bad input at `line`.
    pub fn bad(&self, line: u64, what: &str) -> CliError {
        CliError::invalid(format!("{} line {line}: {what}", self.source))
    }
}

fn csv_error_text(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        csv::ErrorKind::Io(err) => format!("read error: {err}"),
        _ => e.to_string(),
    }
}

/// A reader that keeps the bytes read from the current record on, and counts the
/// newlines in front of them.
struct Tracked<R> {
    inner: R,
    window: Vec<u8>,
    /// Index in `window` of the byte at offset `base`.
    start: usize,
    base: u64,
    /// Line ends (CRLF, LF or CR) before `base`.
    newlines: u64,
    /// The byte before `base` was a CR (a LF right after it ends no second line).
    after_cr: bool,
}

impl<R> Tracked<R> {
    fn new(inner: R) -> Self {
        Tracked {
            inner,
            window: Vec::new(),
            start: 0,
            base: 0,
            newlines: 0,
            after_cr: false,
        }
    }

    /// 1-based line number of the record csv reports at byte offset `at`. csv's
    /// positions point just past the previous record, before the blank and comment
    /// lines it skipped, so those are skipped here too. Offsets must not go backwards.
    fn line_at(&mut self, at: u64) -> u64 {
        let ahead = usize::try_from(at.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.consume(ahead);
        let data = &self.window[self.start..];
        let mut i = 0;
        while i < data.len() {
            match data[i] {
                b'\n' | b'\r' => i += 1,
                b'#' => {
                    i = data[i..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |p| i + p + 1)
                }
                _ => break,
            }
        }
        self.consume(i);
        self.newlines + 1
    }

    /// Move `base` forward by up to `n` bytes, counting the line ends passed.
    fn consume(&mut self, n: usize) {
        let end = self.start + n.min(self.window.len() - self.start);
        for &b in &self.window[self.start..end] {
            if b == b'\r' || (b == b'\n' && !self.after_cr) {
                self.newlines += 1;
            }
            self.after_cr = b == b'\r';
        }
        self.base += (end - self.start) as u64;
        self.start = end;
        if self.start >= COMPACT_AT && self.start * 2 >= self.window.len() {
            self.window.drain(..self.start);
            self.start = 0;
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.window.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], header: &'static str) -> Result<Vec<(u64, Vec<String>)>, CliError> {
        let mut rows = Rows::new(data, "f", header, true);
        let mut out = Vec::new();
        while let Some(line) = rows.next_row()? {
            out.push((line, rows.record().iter().map(str::to_string).collect()));
        }
        Ok(out)
    }

    #[test]
    fn line_numbers_across_comments_blank_lines_and_quoted_newlines() {
        let csv = b"# c\n\nuser,x\na,\"multi\nline\"\n   \n# d\r\nb,c\r\n";
        let got = lines(csv, "user").unwrap();
        assert_eq!(
            got,
            vec![
                (4, vec!["a".to_string(), "multi\nline".to_string()]),
                (8, vec!["b".to_string(), "c".to_string()]),
            ]
        );
    }

    #[test]
    fn window_stays_small_on_long_inputs() {
        let mut csv = String::new();
        for i in 0..50_000 {
            csv.push_str(&format!("u{i},c{i}\n"));
            if i % 1000 == 0 {
                csv.push_str("# comment\n\n");
            }
        }
        let mut rows = Rows::new(csv.as_bytes(), "f", "user", true);
        let mut n = 0;
        let mut last = 0;
        while let Some(line) = rows.next_row().unwrap() {
            n += 1;
            last = line;
            assert!(rows.rdr.get_ref().window.len() <= 4 * READ_BUFFER + COMPACT_AT);
        }
        assert_eq!(n, 50_000);
        assert_eq!(last, 50_000 + 2 * 50);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/roster_csv.rs): a lone CR ends a record for
    /// the CSV reader but was not counted as a line, so every row of a CR-only file
    /// (an old Mac export) was "line 1".
    #[test]
    fn a_lone_cr_ends_a_line() {
        let got = lines(b"\0\r\0\0\0;\r\0\r", "user").unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        let got = lines(b"user\ra,b\r\rc,d\r\ne,f\n", "user").unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 4, 5]);
    }

    #[test]
    fn header_only_when_first_and_by_first_field() {
        let got = lines(b"user , password\nuser\n", "user").unwrap();
        assert_eq!(got, vec![(2, vec!["user".to_string()])]);
        assert!(lines(b"", "user").unwrap().is_empty());
    }
}
