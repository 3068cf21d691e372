//! A stream wrapper for the peer-link doors (`links.rs`): each read takes
//! every chunk the inner stream has ready, up to the caller's buffer, so
//! that one write hands on every TLS record that has arrived instead of one
//! record (16 KiB) per write and per wake-up of the reader behind it.

use tokio::io::{AsyncRead, AsyncWrite};

/// A stream whose reads take everything the inner stream has ready, up to
/// the caller's buffer, instead of returning after the inner stream's
/// first chunk. An error after some bytes were read is kept for the next
/// read, so no byte and no error is lost. Writes pass straight through.
pub(super) struct Greedy<S> {
    inner: S,
    error: Option<std::io::Error>,
}

impl<S> Greedy<S> {
    pub(super) fn new(inner: S) -> Greedy<S> {
        Greedy { inner, error: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Greedy<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let at_eof = buf.filled().len() == before;
                    if at_eof || buf.remaining() == 0 {
                        // EOF after some bytes shows again on the next read.
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) if before > start => {
                    self.error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if before > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Greedy<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A reader that yields scripted chunks, `Pending`s and errors.
    struct Script(std::collections::VecDeque<Option<std::io::Result<Vec<u8>>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                None => std::task::Poll::Ready(Ok(())),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
                Some(Some(Ok(b))) => {
                    let n = b.len().min(buf.remaining());
                    buf.put_slice(&b[..n]);
                    if n < b.len() {
                        self.0.push_front(Some(Ok(b[n..].to_vec())));
                    }
                    std::task::Poll::Ready(Ok(()))
                }
                Some(Some(Err(e))) => std::task::Poll::Ready(Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn a_greedy_read_takes_every_ready_chunk_and_keeps_a_late_error_for_the_next_read() {
        let chunk = |b: &[u8]| Some(Ok(b.to_vec()));
        let broken = || Some(Err(std::io::Error::other("reset")));
        let mut g = Greedy::new(Script(
            [chunk(b"ab"), chunk(b"cd"), None, chunk(b"ef"), broken(), chunk(b"gh")].into_iter().collect(),
        ));
        let mut buf = [0u8; 16];
        assert_eq!(g.read(&mut buf).await.unwrap(), 4, "both chunks before the pause, in one read");
        assert_eq!(&buf[..4], b"abcd");
        assert_eq!(g.read(&mut buf).await.unwrap(), 2, "the bytes before the error");
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(g.read(&mut buf).await.unwrap_err().to_string(), "reset", "then the error itself");
        assert_eq!(g.read(&mut buf).await.unwrap(), 2);
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "EOF");
        // A full buffer ends a read even with more ready.
        let mut g = Greedy::new(Script([chunk(b"abc"), chunk(b"def")].into_iter().collect()));
        let mut small = [0u8; 4];
        assert_eq!(g.read(&mut small).await.unwrap(), 4);
        assert_eq!(&small, b"abcd");
    }
}
