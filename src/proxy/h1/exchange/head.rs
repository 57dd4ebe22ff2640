//! The engine's read of an instance's response head, relayed to the client as it is read.

use bytes::BytesMut;
use tokio::io::AsyncRead;

use crate::http1::response::{self, RelayOptions, ResponseHead};
use crate::http1::upstream_head::{self, ReadError};

/// Reads an instance's response head and writes the client's version of it to `out`,
/// skipping interim (1xx) responses as hyper's client does. `options` are read when the head
/// is complete.
pub(super) async fn relay_response<'o, R: AsyncRead + Unpin>(
    stream: &mut R,
    buffered: &mut BytesMut,
    out: &mut Vec<u8>,
    options: impl Fn() -> RelayOptions<'o>,
) -> Result<ResponseHead, ReadError> {
    upstream_head::read(stream, buffered, |buf| {
        response::relay_response(buf, out, &options())
    })
    .await
}
