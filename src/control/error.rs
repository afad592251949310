//! Errors of the control plane: start-up, etcd sessions, `set_peer` and
//! `remove_peer`.

use std::time::Duration;

use super::membership::{MembershipError, PeerSpecError, RecordError};

/// What went wrong in discovery or a control command. Variants carry the
/// operation and the value involved so a log line or an HTTP body explains
/// itself.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid control configuration: {0}")]
    Config(String),
    #[error(transparent)]
    PeerSpec(#[from] PeerSpecError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("peer {name:?} is not registered in etcd under {prefix:?}")]
    PeerNotFound { name: String, prefix: String },
    #[error(
        "peer {name:?} is not in the static member list, so set_peer needs its address \
         (http_host:port[/grpc_host:port])"
    )]
    AddrRequired { name: String },
    /// Static mode: `/setpeer` of a name that is neither in `--peers` nor in
    /// the ring.
    #[error("peer {name:?} is not in this node's --peers list")]
    UnknownPeer { name: String },
    /// Static mode without `--allow-setpeer-addr`: `addr=` would add a
    /// member that is not in `--peers`, or move one.
    #[error(
        "{what}; /setpeer may only re-add members of --peers at their configured \
         addresses unless the node runs with --allow-setpeer-addr"
    )]
    AddrChangeForbidden { name: String, what: String },
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("etcd {op} failed: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("etcd answered {op} without a response header")]
    MissingHeader { op: &'static str },
    #[error("etcd closed the {stream} stream")]
    StreamEnded { stream: &'static str },
    #[error("etcd has not answered lease keep-alives for {silent:?}")]
    KeepAliveSilent { silent: Duration },
    #[error("etcd cancelled the watch on {prefix:?}: {reason}")]
    WatchCancelled { prefix: String, reason: String },
    #[error("etcd is unreachable (last error: {last_error}); retrying in the background")]
    Unavailable { last_error: String },
    #[error("cannot start the control thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the control thread has stopped")]
    Stopped,
}
