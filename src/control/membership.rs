//! Who is in the cluster (pure: no I/O, no clocks).
//!
//! # The etcd record
//!
//! Every node registers itself at `<prefix><name>` (by default
//! `/nexuscache/nodes/<name>`), attached to a lease it keeps alive, with a
//! JSON value:
//!
//! ```json
//! {"name":"node-a","http_addr":"10.0.0.1:9999","grpc_addr":"10.0.0.1:10999","cores":4,"version":"0.1.0","resp_addr":"10.0.0.1:11999"}
//! ```
//!
//! * `name` must equal the key's last segment (the key is authoritative for
//!   who the record is about; a mismatch means a hand-edited or corrupt
//!   record and is skipped).
//! * `http_addr` / `grpc_addr` are `host:port` (IPv6 hosts in brackets).
//! * `cores` is the node's number of data cores.
//! * `resp_addr` (optional, absent when the node serves no RESP port or
//!   predates the field) is its Redis-protocol address, `host:port`. It is
//!   only told to clients (`NEXUS.OWNER`), so a record whose `resp_addr` is
//!   malformed or longer than [`MAX_ADDR_BYTES`] keeps its member in the
//!   ring with the address unknown, rather than dropping a node whose data
//!   path is fine.
//! * `version` is the NexusCache version of the writer (informational: it
//!   lets an operator spot a mixed-version cluster with `etcdctl get`).
//!
//! Readers ignore unknown fields and tolerate a missing `version`, so the
//! record can grow without breaking older nodes. A record that cannot be
//! decoded is logged and skipped; it never stops discovery.
//!
//! # Static peers
//!
//! Without etcd, the member list comes from `--peers`, parsed by
//! [`parse_static_peers`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::routing::{Member, Ring};

/// Where nodes register unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/nexuscache/nodes/";

/// Offset between a static peer's HTTP port and its derived gRPC port when
/// `--peers` gives only the HTTP address (matches the node's default
/// `--grpc-port` of HTTP port + 1000).
pub const GRPC_PORT_OFFSET: u16 = 1000;

/// `cores` of a static peer whose `--peers` entry does not say: 0 means
/// "unknown" (forwarding then targets the sending core's own id).
pub const UNKNOWN_CORES: u32 = 0;

/// Most data cores a `--peers` entry may give (`@N`); far above any
/// machine, it only keeps a typo from becoming a nonsense core id.
pub const MAX_PEER_CORES: u32 = 65_536;

/// Longest `host:port` accepted anywhere (a DNS name is at most 253 bytes;
/// brackets, colon and port fit in the rest): a bound on what an untrusted
/// record or a `--peers` entry can make every node keep and print.
pub const MAX_ADDR_BYTES: usize = 262;

/// The JSON value stored at `<prefix><name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub cores: u32,
    /// NexusCache version of the node that wrote the record.
    #[serde(default)]
    pub version: String,
    /// The node's RESP address; absent in records of nodes without one or
    /// from before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_addr: Option<String>,
}

/// Why a record or key from etcd was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("key {key:?} is not under the prefix {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    #[error("record at {key:?} is not a node record: {source}")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record at {key:?} is about {name:?}, but the key names {expected:?}")]
    NameMismatch {
        key: String,
        name: String,
        expected: String,
    },
    #[error("invalid node name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error("invalid {field} {addr:?} for node {name:?}: {reason}")]
    Addr {
        name: String,
        field: &'static str,
        addr: String,
        reason: String,
    },
    #[error("cannot encode the record of {name:?}: {source}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why a `--peers` entry (or a `set_peer` address) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid peer {entry:?}: {reason} \
     (expected name=http_host:port[/grpc_host:port[/resp_host:port]][@cores])"
)]
pub struct PeerSpecError {
    pub entry: String,
    pub reason: String,
}

/// The etcd key of node `name`.
pub fn record_key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// The JSON value that registers `member`.
pub fn encode(member: &Member) -> Result<Vec<u8>, RecordError> {
    let record = NodeRecord {
        name: member.name.to_string(),
        http_addr: member.http_addr.clone(),
        grpc_addr: member.grpc_addr.clone(),
        cores: member.cores,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        resp_addr: member.resp_addr.clone(),
    };
    serde_json::to_vec(&record).map_err(|source| RecordError::Encode {
        name: record.name.clone(),
        source,
    })
}

/// The member registered by the record `value` at `key`. Validates that the
/// key is under `prefix`, that the record's name matches the key, and that
/// the name and both addresses are well formed.
pub fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Member, RecordError> {
    let expected = name_of_key(prefix, key)?;
    let key_text = || String::from_utf8_lossy(key).into_owned();
    let record: NodeRecord = serde_json::from_slice(value).map_err(|source| RecordError::Json {
        key: key_text(),
        source,
    })?;
    if record.name != expected {
        return Err(RecordError::NameMismatch {
            key: key_text(),
            name: record.name,
            expected: expected.to_owned(),
        });
    }
    validate_name(&record.name)?;
    for (field, addr) in [
        ("http_addr", &record.http_addr),
        ("grpc_addr", &record.grpc_addr),
    ] {
        parse_host_port(addr).map_err(|reason| RecordError::Addr {
            name: record.name.clone(),
            field,
            addr: addr.clone(),
            reason,
        })?;
    }
    let resp_addr = record
        .resp_addr
        .and_then(|addr| match parse_host_port(&addr) {
            Ok(_) => Some(addr),
            Err(reason) => {
                warn!(member = %record.name, reason,
                  "ignoring the record's resp_addr (the member stays, its RESP address unknown)");
                None
            }
        });
    Ok(Member {
        name: record.name.as_str().into(),
        http_addr: record.http_addr,
        grpc_addr: record.grpc_addr,
        cores: record.cores,
        resp_addr,
    })
}

/// The node name a key under `prefix` is about.
pub fn name_of_key<'k>(prefix: &str, key: &'k [u8]) -> Result<&'k str, RecordError> {
    let outside = || RecordError::OutsidePrefix {
        key: String::from_utf8_lossy(key).into_owned(),
        prefix: prefix.to_owned(),
    };
    let rest = key.strip_prefix(prefix.as_bytes()).ok_or_else(outside)?;
    let name = std::str::from_utf8(rest).map_err(|_| RecordError::Name {
        name: String::from_utf8_lossy(rest).into_owned(),
        reason: "not UTF-8",
    })?;
    validate_name(name)?;
    Ok(name)
}

/// A node name is used as an etcd key segment and inside `--peers`, so it
/// must not contain `/`, `,`, `=`, whitespace or control characters.
pub fn validate_name(name: &str) -> Result<(), RecordError> {
    let bad = |reason| {
        Err(RecordError::Name {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ',' || c == '=' || c.is_whitespace() || c.is_control())
    {
        return bad("contains '/', ',', '=', whitespace or a control character");
    }
    Ok(())
}

/// Split `host:port`, requiring a non-empty host (IPv6 in brackets), a
/// port from 1 to 65535, and at most [`MAX_ADDR_BYTES`] in all.
fn parse_host_port(addr: &str) -> Result<(&str, u16), String> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(format!(
            "{} bytes long, over the {MAX_ADDR_BYTES} a host:port can need",
            addr.len()
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err("IPv6 hosts must be in brackets, e.g. [::1]:9999".to_owned());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == ',')
    {
        return Err("host contains an invalid character".to_owned());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port:?} is not 1-65535")),
        Ok(port) => Ok((host, port)),
    }
}

/// A member from a name and `http_addr[/grpc_addr[/resp_addr]][@cores]`;
/// without a gRPC address (or with an empty one, `http_addr//resp_addr`)
/// the gRPC port is the HTTP port + [`GRPC_PORT_OFFSET`] on the same host;
/// without a RESP address it is unknown (never derived: a node may serve
/// none); without `@cores`, `cores` is [`UNKNOWN_CORES`].
pub fn parse_peer(name: &str, addrs: &str) -> Result<Member, PeerSpecError> {
    let entry = format!("{name}={addrs}");
    let fail = |reason: String| PeerSpecError {
        entry: entry.clone(),
        reason,
    };
    validate_name(name).map_err(|e| fail(e.to_string()))?;
    let (addrs, cores) = match addrs.rsplit_once('@') {
        None => (addrs, UNKNOWN_CORES),
        Some((addrs, cores)) => match cores.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_PEER_CORES).contains(&n) => (addrs, n),
            _ => {
                return Err(fail(format!(
                    "core count {:?} after '@' is not 1-{MAX_PEER_CORES}",
                    cores.trim()
                )))
            }
        },
    };
    let mut parts = addrs.split('/').map(str::trim);
    let http_addr = parts.next().unwrap_or_default();
    let grpc_addr = parts.next().filter(|grpc| !grpc.is_empty());
    let resp_addr = parts.next();
    if parts.next().is_some() {
        return Err(fail(
            "more than three addresses (http/grpc/resp) before '@'".to_owned(),
        ));
    }
    let resp_addr = match resp_addr {
        Some(resp) => {
            parse_host_port(resp).map_err(|reason| fail(format!("resp address: {reason}")))?;
            Some(resp.to_owned())
        }
        None => None,
    };
    let (host, http_port) =
        parse_host_port(http_addr).map_err(|reason| fail(format!("http address: {reason}")))?;
    let grpc_addr = match grpc_addr {
        Some(grpc) => {
            parse_host_port(grpc).map_err(|reason| fail(format!("grpc address: {reason}")))?;
            grpc.to_owned()
        }
        None => {
            let port = http_port.checked_add(GRPC_PORT_OFFSET).ok_or_else(|| {
                fail(format!(
                    "cannot derive a gRPC port from HTTP port {http_port} (+{GRPC_PORT_OFFSET} \
                     is over 65535); give it explicitly as http_addr/grpc_addr"
                ))
            })?;
            format!("{host}:{port}")
        }
    };
    Ok(Member {
        name: name.into(),
        http_addr: http_addr.to_owned(),
        grpc_addr,
        cores,
        resp_addr,
    })
}

/// Parse a static member list (`--peers`):
///
/// ```text
/// name=http_host:port[/grpc_host:port[/resp_host:port]][@cores],name=...
/// a=127.0.0.1:9999/127.0.0.1:10999/127.0.0.1:11999@4,b=127.0.0.1:9998
/// ```
///
/// Entries are separated by commas (blanks around them are ignored, empty
/// entries skipped); an entry without `/grpc_addr` gets the HTTP port +
/// [`GRPC_PORT_OFFSET`] on the same host (`b` above: `127.0.0.1:10998`).
/// The third address is the node's RESP port, told to clients by
/// `NEXUS.OWNER`; without it (`b`) that is unknown (`http//resp` gives it
/// with the derived gRPC address).
/// `@cores` is the node's number of data cores (`--cores`), so this node
/// can send each key's ops to its home core there; without it (`b`) the
/// count is unknown and each core's connection targets its own id there,
/// which is the home core whenever both nodes have the same count.
/// Names must be unique. An empty string is an empty list.
pub fn parse_static_peers(text: &str) -> Result<Vec<Member>, PeerSpecError> {
    let mut peers: Vec<Member> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addrs) = entry.split_once('=').ok_or_else(|| PeerSpecError {
            entry: entry.to_owned(),
            reason: "missing '='".to_owned(),
        })?;
        let member = parse_peer(name.trim(), addrs.trim())?;
        if peers.iter().any(|p| p.name == member.name) {
            return Err(PeerSpecError {
                entry: entry.to_owned(),
                reason: format!("{:?} is listed twice", member.name),
            });
        }
        peers.push(member);
    }
    Ok(peers)
}

/// Why [`Membership`] refused a change asked for by an operator
/// (`/setpeer`, `/removepeer`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error(
        "the ring already has {max} members (--max-ring-members), so {name:?} cannot join; \
         remove a member first or raise the cap"
    )]
    RingFull { name: String, max: usize },
    #[error("{name:?} is this node, which is always a member of its own ring")]
    IsSelf { name: String },
    #[error("{name:?} is not a member of this node's ring")]
    NotMember { name: String },
}

/// The member list of one node's view of the cluster: the records seen in
/// etcd (or the static peers) plus this node itself, which is always a
/// member with its configured addresses whatever etcd says about it.
///
/// The list never grows past `max_members` (this node included): an
/// operator's [`Membership::admit`] past it is an error, an etcd record past
/// it is ignored and counted ([`Membership::take_refused_over_cap`]) so the
/// caller can warn at a bounded rate.
///
/// A member an operator took out ([`Membership::take_out`]) stays out of an
/// etcd-driven membership until an operator admits it again, or etcd shows
/// it registering anew: its record deleted (it left, or its lease expired)
/// or written with different content. A rewrite of the same record (the
/// node reconnecting to etcd) does not bring it back.
#[derive(Debug, Clone)]
pub struct Membership {
    prefix: String,
    vnodes: usize,
    self_member: Member,
    /// Known records by name; may include our own (ignored for the ring).
    records: BTreeMap<String, Member>,
    /// Most members, this node included.
    max_members: usize,
    /// Members taken out by an operator, with the record they had then.
    taken_out: BTreeMap<String, Member>,
    /// etcd records ignored because the ring was full, since last taken.
    refused_over_cap: u64,
}

impl Membership {
    /// A membership of `self_member` alone, without a member cap.
    pub fn new(self_member: Member, prefix: impl Into<String>, vnodes: usize) -> Membership {
        Membership {
            prefix: prefix.into(),
            vnodes,
            self_member,
            records: BTreeMap::new(),
            max_members: usize::MAX,
            taken_out: BTreeMap::new(),
            refused_over_cap: 0,
        }
    }

    /// Cap the ring at `max` members, this node included (at least 1).
    pub fn with_max_members(mut self, max: usize) -> Membership {
        self.max_members = max.max(1);
        self
    }

    /// The member cap, this node included.
    pub fn max_members(&self) -> usize {
        self.max_members
    }

    /// How many members the ring has, this node included.
    pub fn len(&self) -> usize {
        1 + self
            .records
            .keys()
            .filter(|name| !self.is_self(name))
            .count()
    }

    /// Never empty: this node is always a member.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether a member called `name` could be added without passing the cap
    /// (true for names already in the ring: they are replaced).
    fn has_room_for(&self, name: &str) -> bool {
        self.is_self(name) || self.records.contains_key(name) || self.len() < self.max_members
    }

    /// etcd records ignored because the ring was full since the last call.
    pub fn take_refused_over_cap(&mut self) -> u64 {
        std::mem::take(&mut self.refused_over_cap)
    }

    /// An operator puts `member` into the ring (`/setpeer`): lifts a
    /// [`take_out`](Membership::take_out), refuses past the cap. Returns
    /// whether the ring changes.
    pub fn admit(&mut self, member: Member) -> Result<bool, MembershipError> {
        if self.is_self(&member.name) {
            return Ok(false);
        }
        if !self.has_room_for(&member.name) {
            return Err(MembershipError::RingFull {
                name: member.name.to_string(),
                max: self.max_members,
            });
        }
        self.taken_out.remove(&*member.name);
        Ok(self.upsert(member))
    }

    /// An operator takes `name` out of the ring (`/removepeer`); etcd
    /// records of it are ignored until it registers anew (see the type's
    /// docs).
    pub fn take_out(&mut self, name: &str) -> Result<(), MembershipError> {
        if self.is_self(name) {
            return Err(MembershipError::IsSelf {
                name: name.to_owned(),
            });
        }
        let Some(record) = self.records.get(name).cloned() else {
            return Err(MembershipError::NotMember {
                name: name.to_owned(),
            });
        };
        self.remove(name);
        self.taken_out.insert(name.to_owned(), record);
        Ok(())
    }

    /// Whether an etcd record `member` must stay out because an operator
    /// took this exact record out; a different record lifts that.
    fn held_out(&mut self, member: &Member) -> bool {
        match self.taken_out.get(&*member.name) {
            Some(taken) if taken == member => true,
            Some(_) => {
                info!(member = %member.name, "a member taken out registered again with a new record");
                self.taken_out.remove(&*member.name);
                false
            }
            None => false,
        }
    }

    /// Add or replace an etcd `member` unless it is held out or the ring is
    /// full (then counted); returns whether the ring changes.
    fn upsert_record(&mut self, member: Member) -> bool {
        if self.held_out(&member) {
            return false;
        }
        if !self.has_room_for(&member.name) {
            self.refused_over_cap += 1;
            return false;
        }
        self.upsert(member)
    }

    /// This node.
    pub fn self_member(&self) -> &Member {
        &self.self_member
    }

    /// The etcd prefix records live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `name` is this node.
    pub fn is_self(&self, name: &str) -> bool {
        &*self.self_member.name == name
    }

    /// Apply a put of `value` at `key`; returns whether the ring changes.
    /// A record that does not decode is logged and skipped.
    pub fn apply_put(&mut self, key: &[u8], value: &[u8]) -> bool {
        match decode(&self.prefix, key, value) {
            Ok(member) => self.upsert_record(member),
            Err(e) => {
                warn!("skipping bad membership record: {e}");
                false
            }
        }
    }

    /// Apply a delete of `key`; returns whether the ring changes. A member
    /// taken out by an operator may come back once it registers again.
    pub fn apply_delete(&mut self, key: &[u8]) -> bool {
        match name_of_key(&self.prefix, key) {
            Ok(name) => {
                self.taken_out.remove(name);
                self.remove(name)
            }
            Err(e) => {
                warn!("ignoring delete of a key that is not a node record: {e}");
                false
            }
        }
    }

    /// Add or replace `member` whatever the cap; returns whether the ring
    /// changes. For trusted sources only (the configured `--peers`, checked
    /// against the cap at start-up); operators go through
    /// [`admit`](Membership::admit), etcd records through `apply_put`.
    pub fn upsert(&mut self, member: Member) -> bool {
        let name = member.name.to_string();
        let is_self = self.is_self(&name);
        match self.records.insert(name, member.clone()) {
            Some(old) if old == member => false,
            _ if is_self => false,
            Some(_) => {
                info!(member = %member.name, http = %member.http_addr, grpc = %member.grpc_addr,
                      cores = member.cores, "member updated");
                true
            }
            None => {
                info!(member = %member.name, http = %member.http_addr, grpc = %member.grpc_addr,
                      cores = member.cores, "member joined");
                true
            }
        }
    }

    /// Remove the member called `name`; returns whether the ring changes
    /// (never for this node, which stays a member).
    pub fn remove(&mut self, name: &str) -> bool {
        let removed = self.records.remove(name).is_some();
        if removed && !self.is_self(name) {
            info!(member = name, "member left");
            true
        } else {
            false
        }
    }

    /// Replace every record with those in `kvs` (a fresh listing of the
    /// prefix), skipping bad ones; returns whether the ring changes. Members
    /// already in the ring keep their place; newcomers fill what the cap
    /// leaves in name order, so nodes that see the same listing agree.
    pub fn replace_all<'a, I>(&mut self, kvs: I) -> bool
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut fresh: BTreeMap<String, Member> = BTreeMap::new();
        for (key, value) in kvs {
            match decode(&self.prefix, key, value) {
                Ok(member) => {
                    fresh.insert(member.name.to_string(), member);
                }
                Err(e) => warn!("skipping bad membership record: {e}"),
            }
        }
        // A member taken out whose record is gone has left: it may come back.
        self.taken_out.retain(|name, _| fresh.contains_key(name));
        let gone: Vec<String> = self
            .records
            .keys()
            .filter(|name| !fresh.contains_key(*name))
            .cloned()
            .collect();
        let mut changed = false;
        for name in gone {
            changed |= self.remove(&name);
        }
        let (known, newcomers): (Vec<Member>, Vec<Member>) = fresh
            .into_values()
            .partition(|m| self.records.contains_key(&*m.name));
        for member in known.into_iter().chain(newcomers) {
            changed |= self.upsert_record(member);
        }
        changed
    }

    /// The member called `name` as it appears in the ring.
    pub fn get(&self, name: &str) -> Option<&Member> {
        if self.is_self(name) {
            Some(&self.self_member)
        } else {
            self.records.get(name)
        }
    }

    /// Every member, this node included, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .records
            .values()
            .filter(|m| !self.is_self(&m.name))
            .cloned()
            .collect();
        members.push(self.self_member.clone());
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// The ring of [`Membership::members`] with the configured vnodes.
    pub fn ring(&self) -> Ring {
        Ring::new(self.members(), self.vnodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "/nexuscache/nodes/";

    fn member(name: &str, port: u16) -> Member {
        Member {
            name: name.into(),
            http_addr: format!("127.0.0.1:{port}"),
            grpc_addr: format!("127.0.0.1:{}", port + 1000),
            cores: 2,
            resp_addr: None,
        }
    }

    fn key(name: &str) -> Vec<u8> {
        record_key(PREFIX, name).into_bytes()
    }

    fn names(ring: &Ring) -> Vec<&str> {
        ring.members().iter().map(|m| &*m.name).collect()
    }

    #[test]
    fn records_round_trip() {
        let a = member("node-a", 9000);
        let json = encode(&a).expect("encodes");
        let text = std::str::from_utf8(&json).expect("utf-8");
        assert!(text.contains(r#""name":"node-a""#), "{text}");
        assert!(text.contains(&format!(r#""version":"{}""#, env!("CARGO_PKG_VERSION"))));
        assert_eq!(decode(PREFIX, &key("node-a"), &json).expect("decodes"), a);
    }

    #[test]
    fn records_carry_the_resp_address_and_old_records_still_parse() {
        let mut a = member("node-a", 9000);
        let old = encode(&a).expect("encodes");
        assert!(
            !std::str::from_utf8(&old).unwrap().contains("resp_addr"),
            "a node without a RESP port writes the record older nodes wrote"
        );
        a.resp_addr = Some("127.0.0.1:11000".into());
        let json = encode(&a).expect("encodes");
        let text = std::str::from_utf8(&json).expect("utf-8");
        assert!(text.contains(r#""resp_addr":"127.0.0.1:11000""#), "{text}");
        assert_eq!(decode(PREFIX, &key("node-a"), &json).expect("decodes"), a);
        // A record from before the field: the address is unknown.
        let before =
            br#"{"name":"b","http_addr":"h:80","grpc_addr":"h:81","cores":3,"version":"0.1.0"}"#;
        assert_eq!(decode(PREFIX, &key("b"), before).unwrap().resp_addr, None);
        let null =
            br#"{"name":"b","http_addr":"h:80","grpc_addr":"h:81","cores":3,"resp_addr":null}"#;
        assert_eq!(decode(PREFIX, &key("b"), null).unwrap().resp_addr, None);
    }

    #[test]
    fn a_bad_resp_address_in_a_record_is_dropped_not_the_member() {
        let long = format!("{}:1", "h".repeat(MAX_ADDR_BYTES));
        for bad in ["nohost", "h:0", "::1:80", "h:1/x", "a b:1", long.as_str()] {
            let value = serde_json::json!({
                "name": "b", "http_addr": "h:80", "grpc_addr": "h:81", "cores": 3, "resp_addr": bad,
            })
            .to_string();
            let b = decode(PREFIX, &key("b"), value.as_bytes()).expect(bad);
            assert_eq!((b.http_addr.as_str(), b.resp_addr), ("h:80", None), "{bad}");
        }
        // Not a string at all: the record is malformed, as for any field.
        let number =
            br#"{"name":"b","http_addr":"h:80","grpc_addr":"h:81","cores":3,"resp_addr":7}"#;
        assert!(matches!(
            decode(PREFIX, &key("b"), number),
            Err(RecordError::Json { .. })
        ));
        // The bound applies to the data-path addresses too.
        let value = serde_json::json!({
            "name": "b", "http_addr": long, "grpc_addr": "h:81", "cores": 3,
        })
        .to_string();
        assert!(matches!(
            decode(PREFIX, &key("b"), value.as_bytes()),
            Err(RecordError::Addr {
                field: "http_addr",
                ..
            })
        ));
    }

    #[test]
    fn decode_is_tolerant_of_extra_and_missing_optional_fields() {
        let value =
            br#"{"name":"b","http_addr":"[::1]:80","grpc_addr":"h:81","cores":3,"zone":"x"}"#;
        let b = decode(PREFIX, &key("b"), value).expect("decodes");
        assert_eq!(b.http_addr, "[::1]:80");
        assert_eq!(b.cores, 3);
    }

    #[test]
    fn decode_rejects_bad_records_with_reasons() {
        let good = |name: &str| {
            format!(r#"{{"name":"{name}","http_addr":"h:1","grpc_addr":"h:2","cores":1}}"#)
        };
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (
                b"/other/a".to_vec(),
                good("a").into_bytes(),
                "not under the prefix",
            ),
            (key("a"), b"not json".to_vec(), "not a node record"),
            (key("a"), br#"{"name":"a"}"#.to_vec(), "not a node record"),
            (key("a"), good("b").into_bytes(), "the key names"),
            (key(""), good("").into_bytes(), "empty"),
            (key("a/b"), good("a/b").into_bytes(), "contains '/'"),
            (
                key("a"),
                br#"{"name":"a","http_addr":"nohost","grpc_addr":"h:2","cores":1}"#.to_vec(),
                "http_addr",
            ),
            (
                key("a"),
                br#"{"name":"a","http_addr":"h:1","grpc_addr":"h:0","cores":1}"#.to_vec(),
                "grpc_addr",
            ),
            (
                key("a"),
                br#"{"name":"a","http_addr":"::1:80","grpc_addr":"h:2","cores":1}"#.to_vec(),
                "brackets",
            ),
            (
                key("a"),
                br#"{"name":"a","http_addr":"h:1","grpc_addr":"h:2","cores":-1}"#.to_vec(),
                "not a node record",
            ),
        ];
        for (key, value, expected) in cases {
            let err = decode(PREFIX, &key, &value).expect_err("must be rejected");
            assert!(
                err.to_string().contains(expected),
                "{err} does not mention {expected:?}"
            );
        }
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let mut rng = fastrand::Rng::with_seed(11);
        let template = encode(&member("n", 1)).expect("encodes");
        for _ in 0..5000 {
            let mut value = template.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..value.len());
                value[at] = rng.u8(..);
            }
            let mut k = key("n");
            if rng.bool() {
                let at = rng.usize(..k.len());
                k[at] = rng.u8(..);
            }
            let _ = decode(PREFIX, &k, &value);
        }
    }

    #[test]
    fn puts_and_deletes_change_the_ring() {
        let mut m = Membership::new(member("a", 1), PREFIX, 10);
        assert_eq!(names(&m.ring()), ["a"]);

        let b = member("b", 2);
        assert!(m.apply_put(&key("b"), &encode(&b).expect("encodes")));
        assert_eq!(names(&m.ring()), ["a", "b"]);
        assert_eq!(m.ring().vnodes(), 10);
        // The same record again changes nothing.
        assert!(!m.apply_put(&key("b"), &encode(&b).expect("encodes")));
        // New addresses do.
        let moved = member("b", 3);
        assert!(m.apply_put(&key("b"), &encode(&moved).expect("encodes")));
        assert_eq!(m.get("b"), Some(&moved));

        assert!(m.apply_delete(&key("b")));
        assert!(!m.apply_delete(&key("b")));
        assert_eq!(names(&m.ring()), ["a"]);
    }

    #[test]
    fn this_node_is_always_a_member_with_its_own_addresses() {
        let me = member("a", 1);
        let mut m = Membership::new(me.clone(), PREFIX, 10);
        // Our own record (with stale addresses) neither changes nor
        // duplicates us; its deletion does not remove us.
        let stale = member("a", 7);
        assert!(!m.apply_put(&key("a"), &encode(&stale).expect("encodes")));
        assert_eq!(m.members(), std::slice::from_ref(&me));
        assert!(!m.apply_delete(&key("a")));
        assert_eq!(m.ring().member("a"), Some(&me));
        assert!(!m.replace_all(std::iter::empty()));
        assert_eq!(m.members(), [me]);
    }

    #[test]
    fn bad_records_are_skipped() {
        let mut m = Membership::new(member("a", 1), PREFIX, 10);
        assert!(!m.apply_put(&key("b"), b"{garbage"));
        assert!(!m.apply_put(b"/elsewhere/b", &encode(&member("b", 2)).expect("encodes")));
        assert!(!m.apply_delete(b"/elsewhere/b"));
        assert_eq!(names(&m.ring()), ["a"]);
    }

    #[test]
    fn replace_all_diffs_against_the_known_records() {
        let mut m = Membership::new(member("a", 1), PREFIX, 10);
        m.upsert(member("b", 2));
        m.upsert(member("c", 3));
        let d = encode(&member("d", 4)).expect("encodes");
        let c = encode(&member("c", 3)).expect("encodes");
        let (kc, kd, kx) = (key("c"), key("d"), key("x"));
        let listing: Vec<(&[u8], &[u8])> = vec![(&kc, &c), (&kd, &d), (&kx, b"bad")];
        assert!(m.replace_all(listing.clone()));
        assert_eq!(names(&m.ring()), ["a", "c", "d"]);
        assert!(!m.replace_all(listing));
    }

    #[test]
    fn the_cap_bounds_operators_and_etcd_alike() {
        let mut m = Membership::new(member("a", 1), PREFIX, 10).with_max_members(3);
        assert_eq!(m.admit(member("b", 2)), Ok(true));
        // Newcomers from etcd past the cap are ignored and counted.
        for (name, port) in [("c", 3), ("d", 4), ("e", 5)] {
            m.apply_put(&key(name), &encode(&member(name, port)).expect("encodes"));
        }
        assert_eq!(names(&m.ring()), ["a", "b", "c"]);
        assert_eq!(m.take_refused_over_cap(), 2);
        assert_eq!(m.take_refused_over_cap(), 0);
        // An operator's newcomer is an error; members already in may move.
        assert_eq!(
            m.admit(member("z", 9)),
            Err(MembershipError::RingFull {
                name: "z".into(),
                max: 3
            })
        );
        assert_eq!(m.admit(member("c", 7)), Ok(true));
        assert!(m.apply_put(&key("b"), &encode(&member("b", 8)).expect("encodes")));
        assert_eq!(m.len(), 3);
        // Our own record never counts against the cap.
        assert!(!m.apply_put(&key("a"), &encode(&member("a", 1)).expect("encodes")));
        assert_eq!(m.take_refused_over_cap(), 0);
    }

    #[test]
    fn a_listing_past_the_cap_keeps_members_and_fills_by_name() {
        let mut m = Membership::new(member("m", 1), PREFIX, 10).with_max_members(3);
        m.admit(member("x", 2)).expect("room");
        let values: Vec<(Vec<u8>, Vec<u8>)> = [("b", 3), ("c", 4), ("x", 2), ("a", 5)]
            .iter()
            .map(|(n, p)| (key(n), encode(&member(n, *p)).expect("encodes")))
            .collect();
        let listing = values.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        m.replace_all(listing);
        assert_eq!(names(&m.ring()), ["a", "m", "x"]);
        assert_eq!(m.take_refused_over_cap(), 2);
    }

    #[test]
    fn taken_out_members_stay_out_until_they_register_anew() {
        let mut m = Membership::new(member("a", 1), PREFIX, 10);
        let b = encode(&member("b", 2)).expect("encodes");
        m.apply_put(&key("b"), &b);
        assert_eq!(
            m.take_out("a"),
            Err(MembershipError::IsSelf { name: "a".into() })
        );
        assert_eq!(
            m.take_out("q"),
            Err(MembershipError::NotMember { name: "q".into() })
        );
        m.take_out("b").expect("member");
        assert_eq!(names(&m.ring()), ["a"]);
        // The same record rewritten (a reconnect) or listed again: still out.
        assert!(!m.apply_put(&key("b"), &b));
        assert!(!m.replace_all([(key("b").as_slice(), b.as_slice())]));
        assert_eq!(names(&m.ring()), ["a"]);
        // An operator admits it again.
        assert_eq!(m.admit(member("b", 2)), Ok(true));
        m.take_out("b").expect("member");
        // A new record (new address) brings it back by itself.
        let moved = encode(&member("b", 3)).expect("encodes");
        assert!(m.apply_put(&key("b"), &moved));
        m.take_out("b").expect("member");
        // So does a delete followed by the same record (it restarted).
        assert!(!m.apply_delete(&key("b")));
        assert!(m.apply_put(&key("b"), &moved));
        m.take_out("b").expect("member");
        // Or a listing without it, then with it.
        m.replace_all(std::iter::empty());
        assert!(m.replace_all([(key("b").as_slice(), moved.as_slice())]));
        assert_eq!(names(&m.ring()), ["a", "b"]);
    }

    #[test]
    fn static_peers_parse() {
        let peers = parse_static_peers(
            " a=127.0.0.1:9999/127.0.0.1:10999 , b=127.0.0.1:9998,,c=[::1]:80/h:90",
        )
        .expect("parses");
        assert_eq!(
            peers,
            [
                Member {
                    name: "a".into(),
                    http_addr: "127.0.0.1:9999".into(),
                    grpc_addr: "127.0.0.1:10999".into(),
                    cores: UNKNOWN_CORES,
                    resp_addr: None,
                },
                Member {
                    name: "b".into(),
                    http_addr: "127.0.0.1:9998".into(),
                    grpc_addr: "127.0.0.1:10998".into(),
                    cores: UNKNOWN_CORES,
                    resp_addr: None,
                },
                Member {
                    name: "c".into(),
                    http_addr: "[::1]:80".into(),
                    grpc_addr: "h:90".into(),
                    cores: UNKNOWN_CORES,
                    resp_addr: None,
                },
            ]
        );
        let with_cores =
            parse_static_peers("a=127.0.0.1:9999/127.0.0.1:10999@4, b=127.0.0.1:9998@ 2 ")
                .expect("parses");
        assert_eq!(
            with_cores
                .iter()
                .map(|m| (m.grpc_addr.as_str(), m.cores))
                .collect::<Vec<_>>(),
            [("127.0.0.1:10999", 4), ("127.0.0.1:10998", 2)]
        );
        assert_eq!(parse_static_peers("").expect("empty is fine"), []);
        assert_eq!(parse_static_peers(" , ").expect("blank is fine"), []);
    }

    #[test]
    fn static_peers_take_an_optional_resp_address_third() {
        let peers = parse_static_peers(
            "a=127.0.0.1:9999/127.0.0.1:10999/127.0.0.1:11999@4, \
             b=127.0.0.1:9998//127.0.0.1:11998, c=127.0.0.1:9997/127.0.0.1:10997, \
             d=[::1]:80/[::1]:81/ [::1]:82 ",
        )
        .expect("parses");
        assert_eq!(
            peers
                .iter()
                .map(|m| (m.grpc_addr.as_str(), m.resp_addr.as_deref(), m.cores))
                .collect::<Vec<_>>(),
            [
                ("127.0.0.1:10999", Some("127.0.0.1:11999"), 4),
                // An empty gRPC part is derived as without one.
                ("127.0.0.1:10998", Some("127.0.0.1:11998"), UNKNOWN_CORES),
                // Never derived: the node may serve no RESP port.
                ("127.0.0.1:10997", None, UNKNOWN_CORES),
                ("[::1]:81", Some("[::1]:82"), UNKNOWN_CORES),
            ]
        );
        for (text, expected) in [
            ("a=h:1/h:2/h", "resp address: expected host:port"),
            ("a=h:1/h:2/h:0", "resp address"),
            ("a=h:1/h:2/", "resp address"),
            ("a=h:1/h:2/h:3/h:4", "more than three addresses"),
        ] {
            let message = parse_static_peers(text).expect_err(text).to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains("[/resp_host:port]"), "{message}");
        }
        let long = format!("a=h:1/h:2/{}:3", "h".repeat(MAX_ADDR_BYTES));
        assert!(parse_static_peers(&long)
            .expect_err("too long")
            .to_string()
            .contains("resp address"));
    }

    #[test]
    fn static_peer_errors_name_the_entry_and_the_problem() {
        for (text, expected) in [
            ("a", "missing '='"),
            ("=h:1", "empty"),
            ("a=h", "expected host:port"),
            ("a=h:0", "not 1-65535"),
            ("a=h:70000", "not 1-65535"),
            ("a=:1", "empty host"),
            ("a=h:1/h", "grpc address"),
            ("a=h:65000", "cannot derive a gRPC port"),
            ("a=h:1,a=h:2", "listed twice"),
            ("a b=h:1", "whitespace"),
            ("a=h:1@0", "core count \"0\""),
            ("a=h:1@", "core count \"\""),
            ("a=h:1/h:2@x", "core count \"x\""),
            ("a=h:1@65537", "not 1-65536"),
        ] {
            let err = parse_static_peers(text).expect_err(text);
            let message = err.to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                message.contains("expected name=http_host:port"),
                "{message}"
            );
        }
    }
}
