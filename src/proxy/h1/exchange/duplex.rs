//! A request with a body: the body goes up while the response comes down (see the parent
//! module's header for why the two run at once).

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::head::relay_response;
use super::target::Target;
use super::{client_gone, next, Exchange, Failure, Next};
use crate::http1::body::{self, CopyError};
use crate::http1::request;
use crate::http1::response::RelayOptions;
use crate::http1::upstream_head::ReadError;
use crate::proxy::{GatewayError, Proxy, RequestRecord};
use crate::upstream::{read_error, Connection};

impl<IO> Exchange<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// A request with a body: the body goes up while the response comes down (see the parent
    /// module's header). The response head must come within the request timer; after it, the bodies
    /// stream as long as they keep moving (`client_body_timeout` up, the app's `idle_timeout`
    /// down). Never retried: the body cannot be sent twice.
    pub(super) async fn duplex(
        &mut self,
        proxy: &Proxy,
        target: &Target<'_>,
        (timer, timed_out): (Pin<&mut Sleep>, impl FnOnce() -> Failure),
        client_body_timeout: Duration,
        record: &mut RequestRecord,
    ) -> Result<Next, Failure> {
        let mut upstream = proxy
            .upstream
            .checkout(target.instance, true)
            .await
            .map_err(|error| target.error(error))?;
        let reused = upstream.reused;
        let mut head = Vec::with_capacity(512);
        request::write_request(&mut head, self.request, self.fields, &target.client);

        let request = self.request;
        let stop = self.stop;
        let idle_timeout = target.idle_timeout;
        // Set by the upload when the whole body is sent; by the download once the response
        // head has gone (or may have gone) to the client.
        // (Atomics only because the connection's future must be Send; both halves run on
        // one task.)
        let body_sent = AtomicBool::new(false);
        let head_sent = AtomicBool::new(false);
        let mut write_failed = None;
        let downloaded = {
            let (mut client_in, mut client_out) = tokio::io::split(&mut *self.io);
            let buf = &mut *self.buf;
            let out = &mut *self.out;
            let Connection { stream, buffered } = &mut *upstream.connection;
            let (mut upstream_in, mut upstream_out) = stream.split();

            let upload = async {
                let mut sent = 0;
                body::copy(
                    (request.framing, request.framing),
                    &mut client_in,
                    buf,
                    &mut upstream_out,
                    &mut head,
                    &mut sent,
                    Some(client_body_timeout),
                )
                .await?;
                body_sent.store(true, Relaxed);
                // Nothing more to send: watch for the client leaving while the response is due.
                client_gone(&mut client_in, buf).await;
                Err(CopyError::Source(
                    std::io::ErrorKind::ConnectionAborted.into(),
                ))
            };
            let download = async {
                // Keep-alive is decided when the head is complete: only if the whole body
                // has gone up by then (else its rest would be read as the next request).
                let options = || RelayOptions {
                    head_request: request.method == Method::HEAD,
                    keep_alive: body_sent.load(Relaxed) && request.keep_alive && !*stop.borrow(),
                    hsts: target.hsts.as_ref(),
                };
                let relayed = tokio::select! {
                    biased;
                    relayed = relay_response(&mut upstream_in, buffered, out, options) => relayed,
                    _ = timer => return Err(Download::BeforeHead(timed_out())),
                };
                let response = relayed.map_err(Download::Read)?;
                head_sent.store(true, Relaxed);
                record.status = response.status.as_u16();
                let copied = body::copy(
                    (response.framing, response.client_framing),
                    &mut upstream_in,
                    buffered,
                    &mut client_out,
                    out,
                    &mut record.bytes,
                    idle_timeout,
                )
                .await;
                if let Err(error) = copied {
                    target.broke_off(error, record);
                    return Err(Download::AfterHead);
                }
                client_out.flush().await.map_err(|_| Download::AfterHead)?;
                Ok(response)
            };

            let mut upload = pin!(upload);
            let mut download = pin!(download);
            loop {
                tokio::select! {
                    biased;
                    uploaded = &mut upload, if write_failed.is_none() => match uploaded {
                        // The instance stopped reading: its answer may still come.
                        Err(CopyError::Destination(error)) => write_failed = Some(error),
                        Err(CopyError::Malformed(why)) if !head_sent.load(Relaxed) => {
                            return Err(Failure::Gateway(GatewayError::BadRequest(why)))
                        }
                        Err(CopyError::Stalled(_)) if head_sent.load(Relaxed) => {
                            let timeouts = &proxy.metrics.client_timeouts;
                            timeouts.with_label_values(&["body"]).inc();
                            return Err(Failure::Broken);
                        }
                        Err(CopyError::Stalled(stalled)) => {
                            return Err(Failure::Gateway(GatewayError::ClientBodyTimeout(stalled.0)))
                        }
                        // The client left (during the body or after it), or its body broke, or
                        // it stalled after the response began. A stall is not treated like the
                        // instance's early answer: an instance that streams while it reads (an
                        // echo, a transcoder) would wait for the rest for ever, holding its slot.
                        Err(_) | Ok(()) => return Err(Failure::Broken),
                    },
                    downloaded = &mut download => break downloaded,
                }
            }
        };
        let response = match downloaded {
            Ok(response) => response,
            Err(Download::BeforeHead(failure)) => return Err(failure),
            Err(Download::Read(error)) => {
                let error = read_error(error, reused, write_failed.as_ref());
                return Err(target.error(error));
            }
            Err(Download::AfterHead) => return Err(Failure::Broken),
        };
        self.body_sent = body_sent.load(Relaxed);
        if response.upstream_keep_alive && self.body_sent && write_failed.is_none() {
            upstream.release();
        }
        Ok(next(response.keep_alive && self.body_sent))
    }
}

/// How the download half of a duplex exchange failed.
enum Download {
    /// Timed out before the response head.
    BeforeHead(Failure),
    /// Reading the response head failed.
    Read(ReadError),
    /// The response broke off after its head went to the client.
    AfterHead,
}
