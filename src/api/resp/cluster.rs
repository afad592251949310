//! The commands that speak about the whole cluster rather than one key:
//! `DBSIZE` and `NEXUS.OWNER`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::resp::{Protocol, ReplyWriter};
use crate::routing::Member;
use crate::runtime::core::Core;

/// At most one warning per core per this period about members that did
/// not answer a `DBSIZE` (a monitoring loop polling it while a node is down
/// must not flood the log).
const UNANSWERED_WARN_EVERY: Duration = Duration::from_secs(10);

thread_local! {
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
    let (own, others) =
        futures_lite::future::zip(core.snapshot_all(), core.member_item_counts()).await;
    let mut total: u64 = own.iter().map(|(s, _)| s.items).sum();
    let mut unanswered = Vec::new();
    for answer in others {
        match answer {
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
/// (`resp=` empty when unknown, `cores=0` when unknown), for `INFO cluster`.
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
