//! Carrying out the engine's loads: a read forwarded to the key's owner
//! node, or a fetch from the origin. What to load, who waits and what to
//! keep is the engine's business (`engine/`); this is the I/O and the
//! counters that go with it.

use super::core::{Core, RingView};
use crate::engine::{OriginLoad, PeerLoad};
use crate::grpc::reason::ReasonCode;
use crate::metrics::OriginResult;
use crate::ops::Op;
use crate::origin::Fetched;
use crate::peer::PeerError;

impl Core {
    /// Ask the node at `owner` for `key`; `keep_copy` tells it this node
    /// keeps the answer.
    pub(super) async fn load_from_peer(
        &self,
        view: &RingView,
        owner: usize,
        key: Box<[u8]>,
        keep_copy: bool,
    ) -> PeerLoad {
        match self.forward(view, owner, Op::Get { key, keep_copy }).await {
            Ok(reply) => PeerLoad::Answered(reply),
            Err(PeerError::Status {
                reason: Some(reason),
                message,
                ..
            }) => match reason.code {
                ReasonCode::Draining => PeerLoad::NotServing,
                ReasonCode::OriginFailed => PeerLoad::Status(reason.detail),
                _ => PeerLoad::Status(message),
            },
            Err(PeerError::Status { message, .. }) => PeerLoad::Status(message),
            Err(_) => PeerLoad::Unreachable,
        }
    }

    pub(super) async fn load_from_origin(&self, key: &[u8]) -> OriginLoad {
        let Some(origin) = &self.origin else {
            // The engine asks only when an origin is configured.
            return OriginLoad::NotFound;
        };
        match origin.fetch(key).await {
            Ok(Fetched::Found(value)) => {
                self.metrics.record_origin(OriginResult::Found);
                OriginLoad::Found(value)
            }
            Ok(Fetched::NotFound) => {
                self.metrics.record_origin(OriginResult::NotFound);
                OriginLoad::NotFound
            }
            Err(e) => {
                let result = if e.is_timeout() {
                    OriginResult::Timeout
                } else {
                    OriginResult::Error
                };
                self.metrics.record_origin(result);
                OriginLoad::Failed(e.to_string())
            }
        }
    }
}
