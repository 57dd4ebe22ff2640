//! Requests in progress on one connection that hyper serves, so that a connection with none
//! is closed after `header_read_timeout`, as the HTTP/1.1 engine closes an idle keep-alive
//! connection. Without it an idle HTTP/2 connection, or one that stopped partway through the
//! HTTP/2 preface, would keep its `max_connections` slot until the client closed it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// The number of a connection's requests in progress: from the request's arrival until its
/// response body has ended or been dropped.
pub struct Activity {
    active: watch::Sender<usize>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            active: watch::Sender::new(0),
        }
    }

    /// Counts a request in progress until the returned guard drops.
    pub fn begin(&self) -> Busy {
        self.active.send_modify(|active| *active += 1);
        Busy {
            active: self.active.clone(),
        }
    }

    /// Resolves once the connection has had no request in progress for `limit` on end.
    pub async fn idle_for(&self, limit: Duration) {
        let mut active = self.active.subscribe();
        loop {
            if active.wait_for(|active| *active == 0).await.is_err() {
                return;
            }
            // Idle from here: done unless a request starts (or one ends) within the limit.
            if tokio::time::timeout(limit, active.changed()).await.is_err() {
                return;
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// One request in progress.
pub struct Busy {
    active: watch::Sender<usize>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.active.send_modify(|active| *active -= 1);
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
        let activity = Activity::new();
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
