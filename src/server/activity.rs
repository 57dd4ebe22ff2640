//! Requests in progress on one connection that hyper serves, so that a connection with none
//! is closed after `header_read_timeout`, as the HTTP/1.1 engine closes an idle keep-alive
//! connection. Without it an idle HTTP/2 connection, or one that stopped partway through the
//! HTTP/2 preface, would keep its `max_connections` slot until the client closed it.
//!
//! The clock starts when hyper takes the connection over (the engine's time on it was not
//! idle). A WebSocket over HTTP/2 counts until its `200` has gone: an HTTP/2 connection that
//! carries only WebSocket streams gets a GOAWAY after the limit, which ends no stream (h2 waits
//! for open streams) but sends the client's next requests to a new connection.

use std::pin::Pin;
use std::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// The number of a connection's requests in progress (from the request's arrival until its
/// response body has ended or been dropped), and when that number last changed.
///
/// Plain atomics, and no wake-up per request: the idle watch sleeps until the earliest time
/// the connection could have been idle for the limit and looks then. Waking it at every
/// request's start and end would poll the whole connection twice more per request.
pub struct Activity {
    active: AtomicUsize,
    /// When `active` last changed, in nanoseconds since `epoch`.
    changed: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            active: AtomicUsize::new(0),
            changed: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Counts a request in progress until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Relaxed);
        self.touch();
        Busy {
            activity: Arc::clone(self),
        }
    }

    /// Starts the idle clock now: a connection handed over by the HTTP/1.1 engine was busy
    /// with the engine until this moment, however long ago it was accepted.
    pub fn touch(&self) {
        let since = self.epoch.elapsed().as_nanos();
        self.changed
            .store(u64::try_from(since).unwrap_or(u64::MAX), Relaxed);
    }

    /// Resolves once the connection has had no request in progress for `limit` on end.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let idle = self.active.load(Acquire) == 0;
            let changed = self.epoch + Duration::from_nanos(self.changed.load(Relaxed));
            let due = changed + limit;
            if Instant::now() >= due {
                if idle {
                    return;
                }
                // Busy: no end can make it idle sooner than a limit from now.
                tokio::time::sleep(limit).await;
            } else {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}

/// One request in progress.
pub struct Busy {
    activity: Arc<Activity>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        // The time first, then the count (released): whoever sees the count at zero sees the
        // time of the end that made it so, on whichever thread the response ended.
        self.activity.touch();
        self.activity.active.fetch_sub(1, Release);
    }
}

/// A response body that keeps its request counted as in progress until it ends or drops.
pub struct Tracked<B> {
    body: B,
    busy: Option<Busy>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, busy: Busy) -> Self {
        Tracked {
            body,
            busy: Some(busy),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.body.is_end_stream()
        {
            this.busy.take();
        }
        polled
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
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_for_the_whole_limit() {
        let activity = Arc::new(Activity::new());
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        let busy = activity.begin();
        let work = async {
            // A request for 100 s (longer than the limit: never idle meanwhile), then
            // another 20 s after it, for 5 s.
            tokio::time::sleep(Duration::from_secs(100)).await;
            drop(busy);
            tokio::time::sleep(Duration::from_secs(20)).await;
            let again = activity.begin();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(again);
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = activity.idle_for(limit) => {}
            () = work => unreachable!(),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(100 + 20 + 5) + limit);
    }
}
