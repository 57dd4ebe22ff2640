//! Inactivity limits on streams that would otherwise wait forever: a client that stops
//! reading its response (`send_timeout`), a client that stops sending its request body
//! (`client_body_timeout`), an instance that stops sending its response body (the app's
//! `idle_timeout`).
//!
//! Each limit is on the time one operation stays pending, not on the whole transfer: a 1 GiB
//! download over a slow link is fine as long as bytes keep moving. The timer is armed only
//! when an operation goes pending and is left alone while operations complete at once, so the
//! common case (a socket that takes the write) costs a flag, not a timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A limit on how long an operation may stay pending.
///
/// The timer belongs to whatever operation is pending, and is disarmed only when one
/// completes: an operation abandoned while pending leaves its deadline to the next one. Every
/// user abandons a pending operation only when it is giving up on the stream anyway.
pub struct Stall {
    limit: Duration,
    /// Allocated at the first pending operation; many streams never wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The current operation has gone pending and the timer runs for it.
    armed: bool,
}

impl Stall {
    pub fn new(limit: Duration) -> Self {
        Stall {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Passes on the guarded operation's poll result; if it is pending, resolves to
    /// `Err(Stalled)` once the operation has been pending for the whole limit.
    pub fn poll<T>(&mut self, cx: &mut Context<'_>, polled: Poll<T>) -> Poll<Result<T, Stalled>> {
        match polled {
            Poll::Ready(value) => {
                self.armed = false;
                Poll::Ready(Ok(value))
            }
            Poll::Pending => {
                // A limit too large to add (humantime accepts "1000000y") is no limit.
                let now = Instant::now();
                let deadline = now
                    .checked_add(self.limit)
                    .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
                let timer = match &mut self.timer {
                    Some(timer) if self.armed => timer,
                    Some(timer) => {
                        timer.as_mut().reset(deadline);
                        timer
                    }
                    None => self
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                self.armed = true;
                ready!(timer.as_mut().poll(cx));
                self.armed = false;
                Poll::Ready(Err(Stalled(self.limit)))
            }
        }
    }
}

/// An operation stayed pending for its whole limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nothing moved for {0:?}")]
pub struct Stalled(pub Duration);

impl From<Stalled> for std::io::Error {
    fn from(stalled: Stalled) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, stalled)
    }
}

/// A client connection whose writes fail with `TimedOut` when the client has taken no byte
/// for `send_timeout`. Reads are passed through: an idle keep-alive or HTTP/2 connection is
/// normal, and the header and body read limits are the protocol layer's.
pub struct SendTimeout<IO> {
    io: IO,
    stall: Stall,
    /// Counts the connections cut off.
    timeouts: IntCounter,
}

impl<IO> SendTimeout<IO> {
    pub fn new(io: IO, limit: Duration, timeouts: IntCounter) -> Self {
        SendTimeout {
            io,
            stall: Stall::new(limit),
            timeouts,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> SendTimeout<IO> {
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let polled = op(Pin::new(&mut self.io), cx);
        match ready!(self.stall.poll(cx, polled)) {
            Ok(result) => Poll::Ready(result),
            Err(stalled) => {
                tracing::debug!(limit = ?stalled.0, "client took no bytes (send_timeout)");
                self.timeouts.inc();
                Poll::Ready(Err(stalled.into()))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().guard(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().guard(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// A body whose next frame must come within a limit: the client's request body on its way to
/// an instance (`client_body_timeout`), or an instance's response body on its way to a client
/// (`idle_timeout`). A frame is only waited for when the consumer asks for one, so a body
/// held back by a slow reader on the other side never counts as stalled.
pub struct BodyTimeout<B> {
    body: B,
    stall: Option<Stall>,
}

impl<B> BodyTimeout<B> {
    /// `limit` `None` passes the body through unlimited.
    pub fn new(body: B, limit: Option<Duration>) -> Self {
        BodyTimeout {
            body,
            stall: limit.map(Stall::new),
        }
    }
}

/// Why a [`BodyTimeout`] body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Stalled(Stalled),
}

impl<B> Body for BodyTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let frame = match &mut this.stall {
            None => ready!(polled),
            Some(stall) => match ready!(stall.poll(cx, polled)) {
                Ok(frame) => frame,
                Err(stalled) => return Poll::Ready(Some(Err(BodyError::Stalled(stalled)))),
            },
        };
        Poll::Ready(frame.map(|frame| frame.map_err(|error| BodyError::Body(error.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stays_pending_for_the_limit_fails_and_one_that_moves_does_not() {
        // A pipe with room for 4 bytes: the reader decides when writes can go on.
        let (client, mut server) = tokio::io::duplex(4);
        let timeouts = IntCounter::new("timeouts", "test").unwrap();
        let mut guarded = SendTimeout::new(client, Duration::from_secs(10), timeouts.clone());
        let writer = tokio::spawn(async move {
            guarded.write_all(b"0123456789ab").await?;
            // Nobody reads from here on.
            guarded.write_all(b"cdefgh").await
        });
        let mut read = [0u8; 4];
        for _ in 0..3 {
            // Just under the limit each time: progress re-arms it.
            tokio::time::sleep(Duration::from_secs(9)).await;
            server.read_exact(&mut read).await.unwrap();
        }
        let started = Instant::now();
        let error = writer.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(timeouts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fails_only_when_its_next_frame_is_late() {
        let (sender, frames) = tokio::sync::mpsc::channel(1);
        let mut body = BodyTimeout::new(Frames(frames), Some(Duration::from_secs(5)));
        macro_rules! next {
            () => {
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            };
        }
        sender.send(Bytes::from_static(b"a")).await.unwrap();
        assert!(next!().await.unwrap().is_ok());
        // Not asked for a frame for longer than the limit: not stalled.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            sender.send(Bytes::from_static(b"b")).await.unwrap();
            sender
        });
        assert!(next!().await.unwrap().is_ok());
        let _sender = feeder.await.unwrap();
        let started = Instant::now();
        let error = next!().await.unwrap().unwrap_err();
        assert!(
            matches!(error, BodyError::Stalled(Stalled(limit)) if limit == Duration::from_secs(5))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// A body fed frame by frame from a channel.
    struct Frames(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(Frame::data(data))))
        }
    }
}
