//! Membership from etcd: register under a lease, list, watch, republish.
//!
//! One *session* is one etcd client with three live things on it:
//!
//! 1. a lease (TTL `lease_ttl`) with our record `<prefix><name>` attached,
//!    kept alive every TTL/3 over a keep-alive stream;
//! 2. a listing of the prefix, diffed against the members we knew, then a
//!    watch from the listing's revision + 1;
//! 3. the command channel (`set_peer`).
//!
//! Why list again on every session instead of resuming the old watch from
//! the last revision seen + 1: the result is the same current membership,
//! but a listing is also right when the history was compacted, and when
//! etcd was rebuilt empty (its revisions restart, so the old revision can
//! lie in its future and a resumed watch would wait in silence). We only
//! see the revisions of our own prefix, so "the last revision seen" lags
//! the store's revision and cannot tell those cases apart reliably. A
//! listing also skips the transient states of the outage (a member whose
//! lease expired and that registered again is not dropped and re-added).
//! The cost is one range read of a few hundred bytes per member per
//! reconnect. A compaction in the middle of a session cancels the watch and
//! is handled the same way: list, then watch again.
//!
//! etcd-client does not re-create its streams when etcd restarts or the
//! connection breaks, and a frozen etcd (or a silently dead TCP path) just
//! stops answering. So any stream error, end of stream, or keep-alive left
//! unanswered for a whole interval ends the session; the loop in [`run`]
//! backs off (100 ms doubling to 2 s) and starts a new one with a new
//! client. A new session re-uses our lease if etcd still has it, otherwise
//! grants a new one and writes our record again.
//!
//! Between sessions the last published ring stays: an unreachable etcd
//! never empties the ring, and this node is always in it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    WatchOptions, WatchStream,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::membership::{self, record_key, Membership};
use super::{shutdown_requested, Command, ControlConfig, ControlError, RingBoard, Status};
use crate::routing::Member;
use crate::runtime::log_limit::LogLimiter;

/// Limit on each unary etcd call and on opening a stream. The client's own
/// timeout is not relied on: a request queued in its balancer while no
/// endpoint is reachable can wait without limit.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect limit for one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Budget for revoking the lease at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);
/// First and last delay between sessions.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// HTTP/2 pings on the etcd connection (a second detector of dead paths).
/// etcd answers pings more frequent than its `--grpc-keepalive-min-time`
/// (5 s by default) with GOAWAY, so stay well above it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// While etcd stays away, log one failed session in this many.
const LOG_EVERY_NTH_FAILURE: u32 = 30;
/// At most one warning per this period about records ignored because the
/// ring is full (a flood of records must not flood the log).
const OVER_CAP_WARN_PERIOD: Duration = Duration::from_secs(10);

/// Run etcd discovery until shutdown, then revoke our lease.
pub(super) async fn run(
    cfg: ControlConfig,
    membership: Membership,
    board: Arc<RingBoard>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
    status: Arc<Status>,
) {
    let mut node = Node::new(cfg, membership, board, status);
    let mut backoff = BACKOFF_START;
    'sessions: loop {
        let ended = tokio::select! {
            biased;
            _ = shutdown_requested(&mut shutdown) => break 'sessions,
            ended = node.session(&mut commands, &mut backoff) => ended,
        };
        node.status.set_connected(false);
        let last_error = ended.to_string();
        node.failures += 1;
        // An outage fails a session every couple of seconds: say so at once,
        // then about once a minute.
        if node.failures == 1 || node.failures % LOG_EVERY_NTH_FAILURE == 0 {
            warn!(error = %last_error, retry_in = ?backoff, failures = node.failures,
                  "etcd session ended; keeping the last ring and reconnecting");
        } else {
            debug!(error = %last_error, retry_in = ?backoff, failures = node.failures,
                   "etcd session attempt failed");
        }

        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => break 'sessions,
                _ = &mut pause => break,
                Some(command) = commands.recv() => node.refuse(command, &last_error),
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    node.status.set_connected(false);
    node.revoke().await;
}

/// The control thread's view of etcd, kept across sessions.
struct Node {
    cfg: ControlConfig,
    membership: Membership,
    board: Arc<RingBoard>,
    status: Arc<Status>,
    /// Our record's key and value.
    own_key: String,
    own_record: Vec<u8>,
    /// TTL asked of etcd, in whole seconds.
    ttl_secs: i64,
    /// The lease our record is attached to, if one was granted.
    lease: Option<i64>,
    /// Sessions that failed since the last one was established.
    failures: u32,
    /// Highest revision applied to `membership`: the last listing's, then
    /// the watched events'. The watch starts after it.
    last_rev: i64,
    /// Rate limit of the "ring is full" warning.
    over_cap_log: LogLimiter,
    /// Records ignored over the cap since the last warning.
    over_cap_unlogged: u64,
}

/// A granted lease's keep-alive stream.
struct KeepAlive {
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl Node {
    fn new(
        cfg: ControlConfig,
        membership: Membership,
        board: Arc<RingBoard>,
        status: Arc<Status>,
    ) -> Node {
        let own_key = record_key(&cfg.prefix, &cfg.self_member.name);
        // Encoding a record of strings and a number cannot fail; an empty
        // value would be rejected by every reader and logged there.
        let own_record = membership::encode(&cfg.self_member).unwrap_or_else(|e| {
            warn!("{e}");
            Vec::new()
        });
        let ttl_secs = cfg.lease_ttl.as_secs_f64().ceil().max(1.0) as i64;
        Node {
            cfg,
            membership,
            board,
            status,
            own_key,
            own_record,
            ttl_secs,
            lease: None,
            failures: 0,
            last_rev: 0,
            over_cap_log: LogLimiter::new(OVER_CAP_WARN_PERIOD),
            over_cap_unlogged: 0,
        }
    }

    /// Keep-alive period: a third of the TTL, so two may be lost.
    fn keep_alive_interval(&self) -> Duration {
        (self.cfg.lease_ttl / 3).max(Duration::from_millis(100))
    }

    /// One session; returns only with the error that ended it.
    async fn session(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        backoff: &mut Duration,
    ) -> ControlError {
        match self.session_inner(commands, backoff).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn session_inner(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, ControlError> {
        let client = self.connect().await?;
        let mut keep_alive = self.register(&client).await?;
        // Every session starts from a fresh listing, diffed against what we
        // knew, and watches from the listing's revision + 1 (see the module
        // docs for why this beats resuming the old watch).
        self.list(&client).await?;
        let mut watch = self.watch(&client).await?;
        self.status.set_connected(true);
        self.status.set_synced();
        *backoff = BACKOFF_START;
        if self.failures > 0 {
            info!(failed_attempts = self.failures, "etcd reachable again");
        }
        self.failures = 0;
        info!(lease = ?self.lease, revision = self.last_rev,
              members = self.membership.members().len(), "etcd session established");

        let period = self.keep_alive_interval();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the oldest keep-alive still unanswered was sent. etcd answers
        // in well under a millisecond; one still unanswered at the next tick
        // means etcd is frozen or the path is dead (the TCP connection may
        // look open for minutes), so the session ends.
        let mut unanswered_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Some(since) = unanswered_since {
                        // Half a period: the tick can fire a hair earlier
                        // than one full period after the send was stamped.
                        if since.elapsed() >= period / 2 {
                            return Err(ControlError::KeepAliveSilent { silent: since.elapsed() });
                        }
                    }
                    within("lease keep-alive", OP_TIMEOUT, keep_alive.keeper.keep_alive()).await?;
                    unanswered_since.get_or_insert_with(Instant::now);
                }
                answer = keep_alive.responses.message() => {
                    let answer = answer.map_err(|source| ControlError::Etcd {
                        op: "lease keep-alive",
                        source,
                    })?;
                    let Some(answer) = answer else {
                        return Err(ControlError::StreamEnded { stream: "lease keep-alive" });
                    };
                    unanswered_since = None;
                    if answer.ttl() <= 0 {
                        warn!(lease = answer.id(), "our lease expired; dropping cached entries and registering again");
                        self.board.request_flush();
                        self.lease = None;
                        keep_alive = self.register(&client).await?;
                    }
                }
                message = watch.message() => {
                    let message = message.map_err(|source| ControlError::Etcd {
                        op: "watch",
                        source,
                    })?;
                    let Some(message) = message else {
                        return Err(ControlError::StreamEnded { stream: "watch" });
                    };
                    if message.canceled() {
                        if message.compact_revision() > 0 {
                            warn!(from = self.last_rev + 1, compacted = message.compact_revision(),
                                  "watch history compacted; listing again");
                            self.list(&client).await?;
                            watch = self.watch(&client).await?;
                            continue;
                        }
                        return Err(ControlError::WatchCancelled {
                            prefix: self.cfg.prefix.clone(),
                            reason: message.cancel_reason().to_owned(),
                        });
                    }
                    let own_record_gone = self.apply(message.events().iter().filter_map(|e| e.kv()));
                    if own_record_gone {
                        warn!(key = %self.own_key, "our record was deleted; dropping cached entries and registering again");
                        self.board.request_flush();
                        keep_alive = self.register(&client).await?;
                        unanswered_since = None;
                    }
                }
                Some(command) = commands.recv() => self.execute(&client, command).await,
            }
        }
    }

    async fn connect(&self) -> Result<Client, ControlError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(H2_PING_INTERVAL, H2_PING_TIMEOUT);
        within(
            "connect",
            OP_TIMEOUT,
            Client::connect(&self.cfg.etcd_endpoints, Some(options)),
        )
        .await
    }

    /// Make sure our record is in etcd under a live lease: keep the lease we
    /// had if etcd still knows it, else grant a new one; then (re)write the
    /// record. Returns the lease's keep-alive stream.
    async fn register(&mut self, client: &Client) -> Result<KeepAlive, ControlError> {
        // Two rounds: the lease can expire between the keep-alive that found
        // it alive and the put.
        for _ in 0..2 {
            let keep_alive = match self.lease {
                Some(id) => match self.keep_alive(client, id).await {
                    Err(ControlError::Etcd { source, .. }) if lease_is_gone(&source) => {
                        info!(
                            lease = id,
                            "our lease is gone; dropping cached entries and granting a new one"
                        );
                        self.board.request_flush();
                        self.lease = None;
                        self.grant(client).await?
                    }
                    other => other?,
                },
                None => self.grant(client).await?,
            };
            let lease = keep_alive.keeper.id();
            let put = within(
                "put of our record",
                OP_TIMEOUT,
                client.kv_client().put(
                    self.own_key.as_bytes(),
                    self.own_record.as_slice(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await;
            match put {
                Ok(_) => {
                    debug!(key = %self.own_key, lease, "registered");
                    return Ok(keep_alive);
                }
                Err(ControlError::Etcd { source, .. }) if lease_is_gone(&source) => {
                    self.lease = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ControlError::Etcd {
            op: "registration",
            source: etcd_client::Error::LeaseKeepAliveError(
                "the lease expired twice while registering".into(),
            ),
        })
    }

    async fn grant(&mut self, client: &Client) -> Result<KeepAlive, ControlError> {
        let granted = within(
            "lease grant",
            OP_TIMEOUT,
            client.lease_client().grant(self.ttl_secs, None),
        )
        .await?;
        info!(
            lease = granted.id(),
            ttl_secs = granted.ttl(),
            "lease granted"
        );
        self.lease = Some(granted.id());
        self.keep_alive(client, granted.id()).await
    }

    async fn keep_alive(&self, client: &Client, id: i64) -> Result<KeepAlive, ControlError> {
        let (keeper, responses) = within(
            "lease keep-alive",
            OP_TIMEOUT,
            client.lease_client().keep_alive(id),
        )
        .await?;
        Ok(KeepAlive { keeper, responses })
    }

    /// Replace the membership with a fresh listing of the prefix.
    async fn list(&mut self, client: &Client) -> Result<(), ControlError> {
        let listing = within(
            "list",
            OP_TIMEOUT,
            client.kv_client().get(
                self.cfg.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = listing
            .header()
            .map(|h| h.revision())
            .ok_or(ControlError::MissingHeader { op: "list" })?;
        let changed = self
            .membership
            .replace_all(listing.kvs().iter().map(|kv| (kv.key(), kv.value())));
        self.last_rev = revision;
        if changed {
            self.publish();
        }
        self.warn_over_cap();
        Ok(())
    }

    /// Watch the prefix from the revision after the last one applied, and
    /// wait for etcd to confirm the watch.
    async fn watch(&self, client: &Client) -> Result<WatchStream, ControlError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.last_rev + 1);
        let mut stream = within(
            "watch",
            OP_TIMEOUT,
            client
                .watch_client()
                .watch(self.cfg.prefix.as_bytes(), Some(options)),
        )
        .await?;
        let created = within("watch creation", OP_TIMEOUT, stream.message()).await?;
        match created {
            Some(response) if response.created() && !response.canceled() => Ok(stream),
            Some(response) => Err(ControlError::WatchCancelled {
                prefix: self.cfg.prefix.clone(),
                reason: format!(
                    "unexpected first response (created: {}, canceled: {}, reason: {:?})",
                    response.created(),
                    response.canceled(),
                    response.cancel_reason()
                ),
            }),
            None => Err(ControlError::StreamEnded { stream: "watch" }),
        }
    }

    /// Apply watched changes and publish if the ring changed. Returns
    /// whether our own record was deleted (lease expired or removed by hand).
    fn apply<'a>(&mut self, changes: impl Iterator<Item = &'a KeyValue>) -> bool {
        let mut changed = false;
        let mut own_record_gone = false;
        for kv in changes {
            self.last_rev = self.last_rev.max(kv.mod_revision());
            // A delete event carries the key with version 0 (etcd resets a
            // key's version on deletion; every put makes it at least 1).
            // Reading this instead of `Event::event_type` keeps an unknown
            // event type from panicking the control thread.
            let deleted = kv.version() == 0;
            if kv.key() == self.own_key.as_bytes() {
                if deleted {
                    own_record_gone = true;
                } else if kv.value() != self.own_record.as_slice() {
                    warn!(key = %self.own_key,
                          "another record was written under this node's name; \
                           are two nodes using the same --node-name?");
                }
            }
            changed |= if deleted {
                self.membership.apply_delete(kv.key())
            } else {
                self.membership.apply_put(kv.key(), kv.value())
            };
        }
        if changed {
            self.publish();
        }
        self.warn_over_cap();
        own_record_gone
    }

    /// Warn (at a bounded rate) about etcd records ignored because the ring
    /// holds `max_ring_members` already.
    fn warn_over_cap(&mut self) {
        let refused = self.membership.take_refused_over_cap();
        if refused == 0 {
            return;
        }
        self.over_cap_unlogged += refused;
        if self.over_cap_log.hit(Instant::now()).is_some() {
            warn!(
                ignored = std::mem::take(&mut self.over_cap_unlogged),
                max = self.membership.max_members(),
                prefix = %self.cfg.prefix,
                "etcd holds more node records than --max-ring-members; the extra ones are \
                 ignored (raise the cap or clean up the prefix)"
            );
        }
    }

    fn publish(&mut self) {
        let ring = self.membership.ring();
        let members = ring.len();
        self.board.publish(ring);
        debug!(version = self.board.version(), members, "ring published");
    }

    async fn execute(&mut self, client: &Client, command: Command) {
        match command {
            Command::SetPeer { name, reply, .. } => {
                let result = self.set_peer(client, &name).await;
                if let Err(e) = &result {
                    warn!(peer = %name, "set_peer failed: {e}");
                }
                let _ = reply.send(result);
            }
            Command::RemovePeer { name, reply } => {
                let _ = reply.send(self.remove_peer(&name));
            }
        }
    }

    /// Take `name` out of this node's ring; it stays out until `set_peer`
    /// or a new registration of it (see [`Membership`]). Needs no etcd
    /// round trip, so it also works while etcd is away.
    fn remove_peer(&mut self, name: &str) -> Result<(), ControlError> {
        match self.membership.take_out(name) {
            Ok(()) => {
                self.publish();
                info!(
                    member = name,
                    "remove_peer: member taken out of this node's ring"
                );
                Ok(())
            }
            Err(e) => {
                warn!(peer = name, "remove_peer refused: {e}");
                Err(e.into())
            }
        }
    }

    /// Read `name`'s record from etcd, put it in the ring, republish.
    async fn set_peer(&mut self, client: &Client, name: &str) -> Result<Member, ControlError> {
        membership::validate_name(name)?;
        let member = if self.membership.is_self(name) {
            self.membership.self_member().clone()
        } else {
            let key = record_key(&self.cfg.prefix, name);
            let found = within(
                "get",
                OP_TIMEOUT,
                client.kv_client().get(key.as_bytes(), None),
            )
            .await?;
            let record = found
                .kvs()
                .first()
                .ok_or_else(|| ControlError::PeerNotFound {
                    name: name.to_owned(),
                    prefix: self.cfg.prefix.clone(),
                })?;
            // Not trusted: decode checks the name against the key and parses
            // both addresses.
            let member = membership::decode(&self.cfg.prefix, record.key(), record.value())?;
            self.membership.admit(member.clone())?;
            member
        };
        // Always a new version: cores that dropped the peer locally take the
        // board's ring again.
        self.publish();
        info!(peer = name, http = %member.http_addr, "set_peer: peer is in the ring");
        Ok(member)
    }

    /// Answer a command while no session is up: `set_peer` needs etcd's
    /// record, `remove_peer` does not.
    fn refuse(&mut self, command: Command, last_error: &str) {
        match command {
            Command::SetPeer { reply, .. } => {
                let _ = reply.send(Err(ControlError::Unavailable {
                    last_error: last_error.to_owned(),
                }));
            }
            Command::RemovePeer { name, reply } => {
                let _ = reply.send(self.remove_peer(&name));
            }
        }
    }

    /// Best effort at shutdown: revoking the lease deletes our record now,
    /// so peers stop routing to us at once instead of after the TTL.
    async fn revoke(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let attempt = async {
            let client = self.connect().await?;
            within(
                "lease revoke",
                REVOKE_TIMEOUT,
                client.lease_client().revoke(lease),
            )
            .await
        };
        match tokio::time::timeout(REVOKE_TIMEOUT, attempt).await {
            Ok(Ok(_)) => info!(lease, "lease revoked; left the cluster"),
            Ok(Err(e)) => warn!(
                lease,
                "could not revoke our lease (peers drop us after the TTL): {e}"
            ),
            Err(_) => warn!(
                lease,
                "revoking our lease timed out (peers drop us after the TTL)"
            ),
        }
    }
}

/// Whether etcd says the lease does not exist (expired or revoked).
fn lease_is_gone(error: &etcd_client::Error) -> bool {
    match error {
        // etcd-client's keep_alive reports a first answer with TTL <= 0 so.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound || status.message().contains("lease not found")
        }
        _ => false,
    }
}

/// Run an etcd call with a time limit, naming the operation in errors.
async fn within<T>(
    op: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ControlError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ControlError::Etcd { op, source }),
        Err(_) => Err(ControlError::Timeout { op, after: limit }),
    }
}
