//! What the fuzz targets share: input bounds, a poll loop for in-memory async
//! readers, record framing, and writing generated seeds.
//!
//! Every target bounds its input (`bounded`), so a run measures parsing, not the
//! allocator; libFuzzer turns a panic into a finding, so the targets assert their
//! properties with plain `assert!`.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

/// `Some(data)` when it is at most `max` bytes: longer inputs are skipped (libFuzzer's
/// `-max_len` caps them anyway; this keeps a corpus file from a longer run harmless).
pub fn bounded(data: &[u8], max: usize) -> Option<&[u8]> {
    (data.len() <= max).then_some(data)
}

/// Drive a future whose I/O is in memory (never pending for long) to completion.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("an in-memory future stayed pending");
}

/// An in-memory reader that hands out its bytes in small pieces of varying size, so a
/// parser meets every buffer boundary a socket could give it.
pub struct Chunked<'a> {
    data: &'a [u8],
    pattern: u64,
    step: u32,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], pattern: u64) -> Self {
        Chunked {
            data,
            pattern: pattern | 1,
            step: 0,
        }
    }

    fn next_len(&mut self) -> usize {
        self.step = self.step.wrapping_add(1);
        let bits = self.pattern.rotate_left(self.step.wrapping_mul(5));
        1 + (bits & 0xf) as usize
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.next_len().min(self.data.len()).min(buf.remaining());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Records framed as the model's fixture and the snapshot body frame them:
/// (u32 BE key length, key, u32 BE value length, value), repeated.
pub fn frame_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The records of a framed input, as far as it is well framed (a cut-off tail is
/// dropped: the targets want records, the snapshot target tests framing itself).
pub fn unframe_records(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn take(b: &mut &[u8]) -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let v = b.get(4..4usize.checked_add(n)?)?.to_vec();
        *b = &b[4 + n..];
        Some(v)
    }
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (take(&mut b), take(&mut b)) {
        out.push((k, v));
    }
    out
}

/// The model's fixture of the previous release: state records and the commands that
/// built them (real data, written by `presenced-model`'s fixture test).
pub const FIXTURE_RECORDS: &[u8] =
    include_bytes!("../../crates/model/tests/fixtures/state-v1.records");
pub const FIXTURE_COMMANDS: &str =
    include_str!("../../crates/model/tests/fixtures/commands-v1.jsonl");

/// With `PRESENCED_FUZZ_SEEDS=DIR` in the environment, write `seeds` into `DIR` (named
/// by content, so writing twice changes nothing) and exit: `scripts/fuzz --seeds`
/// uses this to regenerate `fuzz/seeds/TARGET/` from the code's own encoders.
pub fn write_seeds_and_exit_if_asked(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("PRESENCED_FUZZ_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed directory");
    let seeds = seeds();
    for s in &seeds {
        let name = format!("gen-{:016x}", fnv1a(s));
        std::fs::write(dir.join(name), s).expect("write seed");
    }
    eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    std::process::exit(0);
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Split `data` at every 0xFF byte (never part of UTF-8, so text inputs keep their
/// fields apart without escaping).
pub fn fields(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == 0xff)
}
