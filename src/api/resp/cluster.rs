//! The commands that speak about the whole cluster rather than one key:
//! `DBSIZE` and `NEXUS.OWNER`.

use crate::resp::{Protocol, ReplyWriter};
use crate::runtime::core::Core;

/// `DBSIZE`: the number of keys held. Today this node's (every core's
/// shard); the cluster's sum needs each member's count.
pub(super) async fn db_size(core: &Core) -> u64 {
    core.snapshot_all().await.iter().map(|(s, _)| s.items).sum()
}

/// `NEXUS.OWNER key`: the owner's name, addresses and core, as a map.
/// A member's RESP address is known only for this node (the ring carries
/// HTTP and gRPC addresses); for another node it is null.
pub(super) fn write_owner(core: &Core, out: &mut Vec<u8>, protocol: Protocol, key: &[u8]) {
    let view = core.ring_view();
    let mut w = ReplyWriter::new(out, protocol);
    let Some(member) = view.ring.owner(key) else {
        w.null();
        return;
    };
    let is_me = *member.name == *core.config.node_name;
    w.map(5);
    w.bulk(b"node");
    w.bulk(member.name.as_bytes());
    w.bulk(b"http");
    w.bulk(member.http_addr.as_bytes());
    w.bulk(b"grpc");
    w.bulk(member.grpc_addr.as_bytes());
    w.bulk(b"resp");
    match core.config.advertised_resp().filter(|_| is_me) {
        Some(addr) => w.bulk(addr.as_bytes()),
        None => w.null(),
    }
    w.bulk(b"core");
    // Meaningful only when the owner's core count is known (static peers
    // without @cores report 0).
    if member.cores > 0 {
        let home = crate::routing::core_of(key, member.cores as usize);
        w.integer(i64::try_from(home).unwrap_or(i64::MAX));
    } else {
        w.null();
    }
}
