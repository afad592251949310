//! The commands that speak about the whole cluster rather than one key:
//! `DBSIZE` and `NEXUS.OWNER`.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::peer::{PeerClient, PeerConfig, PeerPool};
use crate::resp::{Protocol, ReplyWriter};
use crate::routing::Member;
use crate::runtime::core::Core;

/// At most one warning per core per this period about members that did
/// not answer a `DBSIZE` (a monitoring loop polling it while a node is down
/// must not flood the log).
const UNANSWERED_WARN_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    /// This core's connections for `Peer/Stats`, made on the first
    /// `DBSIZE` (a core is one thread). Apart from the core's forwarding
    /// pool, which this module cannot reach.
    static STATS_PEERS: RefCell<Option<PeerPool>> = const { RefCell::new(None) };
    /// Each member's resolved gRPC address, for one ring version.
    static RESOLVED: RefCell<(u64, Vec<Option<SocketAddr>>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    static LAST_WARNED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// `DBSIZE`: the number of keys held in the whole cluster: this node's
/// shards plus what every other ring member says its shards hold, asked
/// concurrently (each bounded by `--peer-connect-timeout-ms` +
/// `--peer-timeout-ms`). Entries in shards only, never hot copies, so a key
/// copied to every node counts once.
///
/// A member that does not answer is left out of the sum (and logged):
/// Redis clients expect an integer, and the keys of a node that cannot be
/// reached cannot be read through this node either.
pub(super) async fn db_size(core: &Core) -> u64 {
    let view = core.ring_view();
    let addrs = resolved(view.version, view.ring.members());
    let me = &*core.config.node_name;
    let targets: Vec<(String, Option<PeerClient>)> = STATS_PEERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pool = slot.get_or_insert_with(|| {
            let pool = PeerPool::new(PeerConfig::for_node(&core.config));
            pool.set_local_core(core.id);
            pool
        });
        // Members that left take their connections with them.
        pool.retain(|addr| addrs.contains(&Some(*addr)));
        view.ring
            .members()
            .iter()
            .zip(&addrs)
            .filter(|(member, _)| &*member.name != me)
            .map(|(member, addr)| (member.name.to_string(), addr.map(|a| pool.client(a))))
            .collect()
    });
    let asks: Vec<_> = targets
        .into_iter()
        .map(|(name, client)| {
            glommio::spawn_local(async move {
                let answer = match client {
                    Some(client) => client.stats().await.map_err(|e| e.to_string()),
                    None => Err("its gRPC address does not resolve".to_owned()),
                };
                (name, answer)
            })
        })
        .collect();
    let mut total: u64 = core.snapshot_all().await.iter().map(|(s, _)| s.items).sum();
    let mut unanswered = Vec::new();
    for ask in asks {
        match ask.await {
            (_, Ok(items)) => total = total.saturating_add(items),
            (name, Err(reason)) => unanswered.push(format!("{name}: {reason}")),
        }
    }
    if !unanswered.is_empty() && should_warn(Instant::now()) {
        warn!(
            core = core.id,
            "DBSIZE counts only the members that answered; left out: {}",
            unanswered.join("; ")
        );
    }
    total
}

/// Whether to log now, at most once per [`UNANSWERED_WARN_EVERY`].
fn should_warn(now: Instant) -> bool {
    LAST_WARNED.with(|last| match last.get() {
        Some(at) if now.saturating_duration_since(at) < UNANSWERED_WARN_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    })
}

/// The gRPC address of each of `members`, resolved once per ring version
/// (a host name costs a lookup; the ring changes rarely).
fn resolved(version: u64, members: &[Member]) -> Vec<Option<SocketAddr>> {
    RESOLVED.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != version || cache.1.len() != members.len() {
            let addrs = members
                .iter()
                .map(|m| match m.grpc_addr.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => m
                        .grpc_addr
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next()),
                })
                .collect();
            *cache = (version, addrs);
        }
        cache.1.clone()
    })
}

/// `NEXUS.OWNER key`: the owner's name, addresses and home core, as a map.
/// `resp` is the RESP address the owner announced (etcd record or
/// `--peers` entry), this node's own from its configuration, null when
/// unknown (the owner serves no RESP port, or its entry does not say).
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
    let resp = if is_me {
        core.config.advertised_resp()
    } else {
        member.resp_addr.clone()
    };
    match resp {
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

/// The `INFO cluster` lines naming each ring member, in ring order:
/// `nexuscache_member<i>:name=<n>,http=<addr>,grpc=<addr>,resp=<addr>,cores=<n>,self=<0|1>`
/// (`resp=` empty when unknown, `cores=0` when unknown). For
/// `commands.rs::info_text` (not wired there yet: that file is not this
/// module's).
#[allow(dead_code)] // until `info_text` calls it (see the doc above)
pub(super) fn info_members(core: &Core) -> String {
    let view = core.ring_view();
    member_lines(
        view.ring.members(),
        &core.config.node_name,
        core.config.advertised_resp(),
    )
}

/// [`info_members`] for `members`, of which `me` is this node (whose RESP
/// address is `my_resp`, from its own configuration).
fn member_lines(members: &[Member], me: &str, my_resp: Option<String>) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    for (i, member) in members.iter().enumerate() {
        let is_me = &*member.name == me;
        let resp = if is_me {
            my_resp.clone()
        } else {
            member.resp_addr.clone()
        };
        let _ = write!(
            text,
            "nexuscache_member{i}:name={},http={},grpc={},resp={},cores={},self={}\r\n",
            member.name,
            member.http_addr,
            member.grpc_addr,
            resp.as_deref().unwrap_or(""),
            member.cores,
            u8::from(is_me),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, port: u16, resp: Option<&str>) -> Member {
        Member {
            name: name.into(),
            http_addr: format!("10.0.0.1:{port}"),
            grpc_addr: format!("10.0.0.1:{}", port + 1000),
            cores: 2,
            resp_addr: resp.map(str::to_owned),
        }
    }

    #[test]
    fn info_names_every_member_with_its_addresses() {
        let members = [
            member("a", 9999, None),
            member("b", 9998, Some("10.0.0.1:11998")),
            member("c", 9997, None),
        ];
        let text = member_lines(&members, "a", Some("10.0.0.1:11999".into()));
        assert_eq!(
            text,
            "nexuscache_member0:name=a,http=10.0.0.1:9999,grpc=10.0.0.1:10999,\
             resp=10.0.0.1:11999,cores=2,self=1\r\n\
             nexuscache_member1:name=b,http=10.0.0.1:9998,grpc=10.0.0.1:10998,\
             resp=10.0.0.1:11998,cores=2,self=0\r\n\
             nexuscache_member2:name=c,http=10.0.0.1:9997,grpc=10.0.0.1:10997,\
             resp=,cores=2,self=0\r\n"
        );
    }
}
