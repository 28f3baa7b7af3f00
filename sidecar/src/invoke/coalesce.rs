//! Fewer, larger writes on a sidecar-to-sidecar connection.
//!
//! h2 flushes its connection each time it runs out of frames to write. A gRPC response from
//! hyper's server is written in two turns (its headers and message, then, once the stream's
//! task has run again, its trailers), so each call cost the callee two TLS records and two
//! system calls. [`Coalesce`] buffers what is written and, the first time a flush finds
//! something buffered, lets the other tasks that are ready run once before it writes: the
//! trailers, or the next caller's request, join the same write. A second flush in a row
//! always writes, so nothing waits for more than one turn of the scheduler.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is buffered before a write goes through: one full TLS record's worth. A write that
/// would go past it sends the buffer first; one larger than it is passed straight through.
const LIMIT: usize = 16 * 1024;

/// A buffer up to this size is kept for the next writes; a larger one is freed once sent, so
/// an idle connection holds little memory after a burst.
const KEEP: usize = 4 * 1024;

/// A connection whose writes are held until a flush, and whose first flush after a write
/// waits one turn of the scheduler (see the module docs).
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    buffer: Vec<u8>,
    /// How much of `buffer` the inner connection has taken.
    written: usize,
    /// A flush has already let the other tasks run once since the buffer was last sent.
    deferred: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce {
            inner,
            buffer: Vec::new(),
            written: 0,
            deferred: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out the whole buffer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffer.clear();
        self.written = 0;
        self.deferred = false;
        if self.buffer.capacity() > KEEP {
            self.buffer = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buffer.len() + buf.len() > LIMIT {
            ready!(this.poll_send(cx))?;
            if buf.len() > LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buffer.len() + total > LIMIT {
            ready!(this.poll_send(cx))?;
            if total > LIMIT {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            this.buffer.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.written < this.buffer.len() && !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The server learns the caller's certificate from the connection underneath.
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesce<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the writes that reach the connection.
    struct Counted<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn pair() -> (
        Coalesce<Counted<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
        Arc<AtomicUsize>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner: a,
            writes: writes.clone(),
        };
        (Coalesce::new(counted), b, writes)
    }

    #[tokio::test]
    async fn writes_before_a_flush_go_out_as_one() {
        let (mut conn, mut peer, writes) = pair();
        conn.write_all(b"headers ").await.unwrap();
        conn.write_all(b"message ").await.unwrap();
        assert_eq!(
            writes.load(Ordering::Relaxed),
            0,
            "nothing is sent before a flush"
        );
        conn.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        let mut got = [0u8; 16];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headers message ");
    }

    #[tokio::test]
    async fn a_write_made_while_the_flush_waits_joins_it_and_the_next_flush_sends() {
        let (mut conn, mut peer, writes) = pair();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        conn.write_all(b"first ").await.unwrap();
        // The first flush lets the other ready tasks run once...
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending());
        assert_eq!(writes.load(Ordering::Relaxed), 0);
        // ...one of which adds to the buffer (h2's trailers, another caller's request)...
        conn.write_all(b"second").await.unwrap();
        // ...and the next flush sends both in one write, without waiting again.
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
        // With nothing buffered a flush does not wait.
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        assert_eq!(writes.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_small_buffer_is_kept_and_a_large_one_freed_once_sent() {
        let (mut conn, mut peer, _) = pair();
        conn.write_all(&[1u8; 1000]).await.unwrap();
        conn.flush().await.unwrap();
        assert!(conn.buffer.is_empty() && conn.buffer.capacity() >= 1000);
        conn.write_all(&vec![2u8; KEEP + 1]).await.unwrap();
        conn.flush().await.unwrap();
        assert_eq!(conn.buffer.capacity(), 0);
        let mut got = vec![0u8; 1000 + KEEP + 1];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got[..1000].iter().all(|b| *b == 1) && got[1000..].iter().all(|b| *b == 2));
    }

    #[tokio::test]
    async fn large_writes_pass_through_after_what_is_buffered() {
        let (mut conn, mut peer, _) = pair();
        conn.write_all(b"small").await.unwrap();
        let large = vec![7u8; LIMIT + 1];
        conn.write_all(&large).await.unwrap();
        conn.write_all(b"tail").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 5 + LIMIT + 1 + 4);
        assert_eq!(&got[..5], b"small");
        assert!(got[5..5 + LIMIT + 1].iter().all(|b| *b == 7));
        assert_eq!(&got[5 + LIMIT + 1..], b"tail");
    }
}
