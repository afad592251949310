//! Carrying out the engine's writes that need the network: a write
//! forwarded to the key's owner node, and an owner's replica updates sent
//! to the nodes that may hold copies. Which nodes, in what order, strict or
//! best effort, and what the write answers is the engine's business
//! (`engine/`); this is the I/O and the counters that go with it.

use crate::engine::{forwarded_reply, TargetOutcome};
use crate::error::ApiError;
use crate::metrics::ReplicaOutcome;
use crate::ops::{Op, ReplicaUpdate, Reply};
use crate::peer::PeerError;
use crate::routing::NodeId;

use super::core::{Core, RingView};

impl Core {
    /// Send a write to the node at `owner`; its reply, or why it could not
    /// be asked. A failure the owner gave a reason for is answered as the
    /// owner would answer its own client (a hot copy it could not update
    /// is named, not the owner).
    pub(super) async fn forward_write(&self, view: &RingView, owner: usize, op: Op) -> Reply {
        let name = &view.names[owner];
        match self.forward(view, owner, op).await {
            Err(PeerError::Status {
                reason: Some(reason),
                ..
            }) => match ApiError::from_reason(reason, name) {
                ApiError::ReplicaNotUpdated { peer, reason } => {
                    Reply::ReplicaNotUpdated { peer, reason }
                }
                ApiError::EntryTooLarge(detail) => Reply::TooLarge(detail),
                ApiError::Origin(detail) => Reply::OriginFailed(detail),
                ApiError::Refused(refusal) => Reply::Refused(refusal),
                ApiError::OwnerUnavailable { peer, reason } => {
                    Reply::OwnerUnavailable { peer, reason }
                }
                other => Reply::OwnerUnavailable {
                    peer: name.to_string(),
                    reason: other.to_string(),
                },
            },
            result => forwarded_reply(name, result.map_err(|e| e.to_string())),
        }
    }

    /// One replica update to each of `targets`, concurrently; every
    /// target's outcome. A node no longer in the ring holds no copy the
    /// owner answers for, and a node whose port refuses is down: neither
    /// is a failure.
    pub(super) async fn send_update(
        &self,
        view: &RingView,
        targets: &[NodeId],
        key: &[u8],
        update: &ReplicaUpdate,
    ) -> Vec<(NodeId, TargetOutcome)> {
        let remove = matches!(update, ReplicaUpdate::Remove);
        let mut outcomes = Vec::with_capacity(targets.len());
        let mut pending = Vec::with_capacity(targets.len());
        for target in targets {
            let Some(index) = view.position(target) else {
                outcomes.push((target.clone(), TargetOutcome::Down));
                continue;
            };
            let Some(addr) = view.grpc_addrs[index] else {
                self.metrics
                    .record_replica_update(remove, ReplicaOutcome::Failed);
                let reason = "its gRPC address does not resolve".to_string();
                outcomes.push((target.clone(), TargetOutcome::Failed(reason)));
                continue;
            };
            // The key's home core at that node, whose core count may
            // differ from ours.
            let cores = view.ring.members()[index].cores;
            let client = self.peers.client_for_key(addr, key, cores);
            let key: Box<[u8]> = key.into();
            let update = update.clone();
            let task = glommio::spawn_local(async move { client.replicate(&key, &update).await });
            pending.push((target.clone(), task));
        }
        for (target, task) in pending {
            let (metric, outcome) = match task.await {
                Ok(()) => (ReplicaOutcome::Ok, TargetOutcome::Updated),
                Err(e) if e.peer_is_down() => (ReplicaOutcome::NodeDown, TargetOutcome::Down),
                Err(e) => (ReplicaOutcome::Failed, TargetOutcome::Failed(e.to_string())),
            };
            self.metrics.record_replica_update(remove, metric);
            outcomes.push((target, outcome));
        }
        outcomes
    }
}
