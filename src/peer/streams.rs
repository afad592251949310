//! Moving one gRPC message over an h2 stream, for the server
//! (`api::grpc`) and the client ([`super::PeerClient`]) alike.
//!
//! Both directions respect HTTP/2 flow control: received bytes are handed
//! back to the window as soon as the decoder has them, and a large message
//! is sent only as fast as the peer grants capacity, so neither side buffers
//! more than one message per stream.

use std::future::poll_fn;

use bytes::Bytes;
use h2::{RecvStream, SendStream};

use crate::grpc::budget::Hold;
use crate::grpc::cache::FramedMessage;
use crate::grpc::frame::{FrameError, UnaryDecoder};

/// Messages up to this size are handed to h2 in one go; h2 queues them
/// until the window allows. Larger ones wait for capacity chunk by chunk.
const DIRECT_SEND_MAX: usize = 16 * 1024;

/// Why a message could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream failed: {0}")]
    Stream(#[from] h2::Error),
}

/// Reads the one message of a unary stream up to its end. `Ok(None)` when
/// the stream ended without any byte. Stops at the first byte that makes
/// the stream invalid (an oversized prefix, a second message), without
/// reading on.
pub async fn read_unary(body: &mut RecvStream, limit: usize) -> Result<Option<Bytes>, ReadError> {
    let mut decoder = UnaryDecoder::new(limit);
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        // The bytes are ours now: reopen the window for the next ones.
        // Failure means the stream is already gone, which the next
        // `data()` reports.
        let _ = body.flow_control().release_capacity(chunk.len());
        decoder.push(chunk)?;
    }
    Ok(decoder.finish_optional()?)
}

/// [`read_unary`] for a server, which must not buffer without bound: the
/// partial message is charged to `hold` (its connection's and core's
/// budgets) as it grows and released once complete; growing past the room
/// left fails with [`FrameError::OverBudget`] before allocating.
/// `on_change(grown, shrunk)` sees every change of the charge.
pub async fn read_unary_within(
    body: &mut RecvStream,
    limit: usize,
    hold: &mut Hold,
    mut on_change: impl FnMut(usize, usize),
) -> Result<Option<Bytes>, ReadError> {
    let mut decoder = UnaryDecoder::new(limit);
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        decoder.push_within(chunk, hold.room())?;
        // Within the room by construction; a complete message drops to 0.
        if let Ok((grown, shrunk)) = hold.set(decoder.held()) {
            on_change(grown, shrunk);
        }
    }
    Ok(decoder.finish_optional()?)
}

/// Sends `message` as DATA frames, ending the stream after it if
/// `end_of_stream`.
pub async fn send_message(
    stream: &mut SendStream<Bytes>,
    message: FramedMessage,
    end_of_stream: bool,
) -> Result<(), h2::Error> {
    let direct = message.len() <= DIRECT_SEND_MAX;
    let chunks = message.into_chunks();
    let count = chunks.len();
    if count == 0 {
        if end_of_stream {
            stream.send_data(Bytes::new(), true)?;
        }
        return Ok(());
    }
    for (i, mut chunk) in chunks.into_iter().enumerate() {
        let last = i + 1 == count;
        if direct {
            stream.send_data(chunk, end_of_stream && last)?;
            continue;
        }
        while !chunk.is_empty() {
            stream.reserve_capacity(chunk.len());
            let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(granted) => granted?,
                // The stream can no longer send: it was reset or closed.
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            };
            if granted == 0 {
                continue;
            }
            let piece = chunk.split_to(granted.min(chunk.len()));
            stream.send_data(piece, end_of_stream && last && chunk.is_empty())?;
        }
    }
    Ok(())
}
