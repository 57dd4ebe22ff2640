//! A request on the hyper path, from admission to the instance's answer: over the engine's
//! connections when it has no body, over hyper's client when it has one, or as a WebSocket
//! upgrade; the instance's answer comes back as the client's response.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::{websocket, ConnInfo, GatewayError, Proxy, ProxyBody, RequestFacts, RequestRecord};
use crate::activator::Lease;
use crate::http1::headers::prepare_response_headers;
use crate::routes::{Route, RouteTable};
use crate::stall::BodyTimeout;

impl Proxy {
    /// Admits `request` (routing, visibility, traffic split), leases it an instance, sends it
    /// there and makes the client's response from the instance's answer.
    pub(super) async fn forward(
        &self,
        table: &RouteTable,
        conn: ConnInfo,
        mut request: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let h2_websocket = websocket::is_h2_websocket(&request);
        if request.method() == Method::CONNECT && !h2_websocket {
            return Err(GatewayError::Connect);
        }
        let http1_websocket = websocket::is_websocket_upgrade(&request);
        if http1_websocket && !http_body::Body::is_end_stream(request.body()) {
            // Its bytes would be lost, or wait at the instance for ever: the bytes after the
            // head belong to the new protocol.
            return Err(GatewayError::BadRequest(
                "an upgrade request must not have a body",
            ));
        }
        let client_upgrade =
            (h2_websocket || http1_websocket).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let admission = self.admit(table, conn, &RequestFacts::of(&parts), record)?;
        let page = admission.route.spec.cold_start_page.is_some()
            && super::error::wants_page(
                &parts.method,
                parts
                    .headers
                    .get(http::header::ACCEPT)
                    .map(|v| v.as_bytes()),
            );
        let lease = self.lease(&admission, record, page).await?;
        let route = admission.route;
        let app = &route.app;
        if let Some(client_upgrade) = client_upgrade {
            Self::prepare_upstream(&mut parts, conn, &admission);
            websocket::restore_upgrade_headers(&mut parts.headers);
            if h2_websocket {
                websocket::h2_to_h1_handshake(&mut parts);
            }
            // An upgrade request has no body of its own; over HTTP/2 the request stream *is*
            // the tunnel, so it must not be sent upstream as a body.
            drop(body);
            let upstream_request = Request::from_parts(parts, http_body_util::Empty::new());
            return self
                .forward_upgrade(
                    route,
                    table,
                    upstream_request,
                    lease,
                    (client_upgrade, h2_websocket),
                    record,
                )
                .await;
        }

        let timeout = route.spec.scale.request_timeout;
        let instance = Arc::clone(lease.instance());
        let addr = instance.addr;
        let timed_out = || GatewayError::UpstreamTimeout {
            app: app.name.clone(),
            addr,
            timeout,
        };
        if http_body::Body::is_end_stream(&body) {
            // Without a body (most HTTP/2 requests), the engine's client is the cheaper way;
            // it writes the request for the instance straight from the client's fields.
            let client = Self::client_facts(conn, &admission, parts.version);
            let sent = crate::upstream::engine::send(&self.upstream, &instance, &parts, &client);
            let (mut response, body) = match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(error)) => return Err(GatewayError::from_upstream(&app.name, addr, error)),
                Err(_) => return Err(timed_out()),
            };
            if let Some(hsts) = Self::hsts(route, conn) {
                response
                    .headers
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            record.lease = Some(lease);
            let body = ProxyBody::engine(body, route.spec.scale.idle_timeout);
            return Ok(Response::from_parts(response, body));
        }

        Self::prepare_upstream(&mut parts, conn, &admission);
        if http_body::Body::size_hint(&body).exact().is_none()
            && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            // hyper's client sends a GET, HEAD or CONNECT body of unknown length as no body at
            // all unless told to chunk it (an HTTP/2 GET with DATA, a chunked GET handed over).
            parts.headers.insert(
                http::header::TRANSFER_ENCODING,
                http::HeaderValue::from_static("chunked"),
            );
        }
        let body_timeout = table.settings.limits.client_body_timeout;
        let upstream_request =
            Request::from_parts(parts, BodyTimeout::new(body, Some(body_timeout)));
        let result = tokio::time::timeout(
            timeout,
            self.upstream.send_streaming(&instance, upstream_request),
        )
        .await;
        match result {
            Ok(Ok((response, mut driver))) => {
                let (mut parts, body) = response.into_parts();
                if http_body::Body::is_end_stream(&body) {
                    // hyper never polls a body that is empty from the start (HEAD, 204, 304,
                    // Content-Length: 0), so hand the connection back now.
                    driver.finish();
                }
                prepare_response_headers(&mut parts.headers, parts.version);
                if let Some(hsts) = Self::hsts(route, conn) {
                    parts
                        .headers
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                record.lease = Some(lease);
                Ok(Response::from_parts(
                    parts,
                    ProxyBody::upstream(body, Some(driver), route.spec.scale.idle_timeout),
                ))
            }
            Ok(Err(error)) => Err(GatewayError::from_upstream(&app.name, addr, error)),
            Err(_) => Err(timed_out()),
        }
    }

    /// The WebSocket leg of `forward`: on a 101 from the instance the session takes over the
    /// lease and an in-flight count of its own; any other answer is passed on as it is.
    async fn forward_upgrade(
        &self,
        route: &Route,
        table: &RouteTable,
        request: Request<http_body_util::Empty<bytes::Bytes>>,
        lease: Lease,
        (client_upgrade, h2): (hyper::upgrade::OnUpgrade, bool),
        record: &mut RequestRecord,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let app = &route.app;
        let instance = Arc::clone(lease.instance());
        let addr = instance.addr;
        let timeout = route.spec.scale.request_timeout;
        let result =
            tokio::time::timeout(timeout, self.upstream.send_upgrade(&instance, request)).await;
        let mut response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(GatewayError::from_upstream(&app.name, addr, error)),
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    app: app.name.clone(),
                    addr,
                    timeout,
                })
            }
        };
        if h2 && response.status().is_success() {
            // RFC 8441: a 2xx opens the client's tunnel; one that the instance did not upgrade
            // would leave the client with a tunnel to nothing.
            return Err(GatewayError::UpgradeRefused {
                app: app.name.clone(),
                addr,
                status: response.status(),
            });
        }
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = response.into_parts();
            prepare_response_headers(&mut parts.headers, parts.version);
            record.lease = Some(lease);
            return Ok(Response::from_parts(
                parts,
                ProxyBody::upstream(body, None, route.spec.scale.idle_timeout),
            ));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        prepare_response_headers(&mut parts.headers, parts.version);
        if h2 {
            websocket::h1_to_h2_response(&mut parts.headers);
            parts.status = http::StatusCode::OK;
        } else {
            websocket::restore_upgrade_headers(&mut parts.headers);
        }
        // The session counts on the revision the request was routed to.
        let in_flight = match record.app.as_ref().and_then(|request| request.revision()) {
            Some(revision) => app.begin_request_on(revision),
            None => app.begin_request(),
        };
        let session = websocket::Session::new(
            in_flight,
            lease,
            route.spec.websocket_idle_timeout,
            table.settings.shutdown_grace,
            Arc::clone(&self.access_log),
        );
        tokio::spawn(websocket::run(
            Arc::clone(&self.sessions),
            self.sessions.begin(),
            session,
            client_upgrade,
            upstream_upgrade,
        ));
        Ok(Response::from_parts(
            parts,
            ProxyBody::full(bytes::Bytes::new()),
        ))
    }
}
