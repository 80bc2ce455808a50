//! A buffered reader whose buffer exists only while it holds bytes.
//!
//! `tokio::io::BufReader` keeps its buffer for as long as the stream lives, and an
//! idle XMPP session is parked in a read for almost all of its life. Here a read
//! goes into a buffer per thread, and only the bytes it got are copied to the
//! reader's own buffer, which is freed as soon as the parser has consumed them: an
//! idle session holds no read buffer at all. The cost is one allocation per read
//! from the socket (a read call costs far more).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// The most one read asks of the socket.
const CHUNK: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

pub struct LeanBufReader<R> {
    inner: R,
    /// What `fill_buf` gave and `consume` has not taken yet, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// Bytes asked of `inner` per read.
    chunk: usize,
}

impl<R> LeanBufReader<R> {
    /// Reads up to `chunk` bytes at a time (at most 16 KiB).
    pub fn new(inner: R, chunk: usize) -> Self {
        LeanBufReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            chunk: chunk.clamp(1, CHUNK),
        }
    }

    /// Bytes read from `inner` and not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader; bytes still buffered are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LeanBufReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for LeanBufReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            let chunk = this.chunk;
            let inner = &mut this.inner;
            let got = SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let mut rb = ReadBuf::new(&mut s[..chunk]);
                match Pin::new(inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().to_vec())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            this.buf = ready!(got)?;
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        if this.pos == this.buf.len() {
            this.buf = Vec::new();
            this.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    use super::*;

    #[tokio::test]
    async fn reads_what_the_inner_reader_has_in_chunks_and_holds_nothing_after() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut r = LeanBufReader::new(&data[..], 512);
        let first = r.fill_buf().await.unwrap().to_vec();
        assert_eq!(first, data[..512]);
        r.consume(100);
        assert_eq!(r.buffer(), &data[100..512]);
        r.consume(412);
        assert!(r.buffer().is_empty());
        assert_eq!(r.buf.capacity(), 0, "a consumed buffer is freed");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, data[512..]);
        assert_eq!(r.fill_buf().await.unwrap(), b"", "end of input");
    }

    #[tokio::test]
    async fn lines_come_out_whole_across_chunks() {
        let text = "first line\nsecond, longer line\nthird\n".repeat(50);
        let mut r = LeanBufReader::new(text.as_bytes(), 7);
        let mut n = 0;
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap() > 0 {
            n += 1;
        }
        assert_eq!(n, 150);
        assert_eq!(line, text);
    }
}
