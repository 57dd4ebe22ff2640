//! Small start-up steps of [`super::Gateway`]: binding a listener with an error that names
//! it, and opening the access log the config asks for.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::StartError;
use crate::access_log::{AccessLog, Format, Sink};
use crate::config::{self, Config};

pub(super) async fn bind(
    listener: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind {
            listener,
            addr,
            error,
        })
}

pub(super) fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has a local address")
}

/// The access log the config asks for; a file that cannot be opened stops the start.
pub(super) fn start_access_log(
    config: &Config,
    log_json: bool,
) -> Result<Arc<AccessLog>, StartError> {
    let sink = match &config.gateway.access_log {
        config::AccessLogTarget::Stdout => Sink::Stdout,
        config::AccessLogTarget::Off => Sink::Off,
        config::AccessLogTarget::File(path) => Sink::File(path.clone()),
    };
    let format = match config.gateway.access_log_format {
        Some(config::AccessLogFormat::Text) => Format::Text,
        Some(config::AccessLogFormat::Json) => Format::Json,
        Some(config::AccessLogFormat::Combined) => Format::Combined,
        None if log_json => Format::Json,
        None => Format::Text,
    };
    AccessLog::start(sink.clone(), format).map_err(|error| StartError::AccessLog {
        sink: format!("{sink:?}"),
        error,
    })
}
