//! The read path on a key's home core: the local shard, the hot tier,
//! singleflight loads from the owner node or from the origin.
//!
//! ```text
//! owner here:   shard ─hit─> answer
//!                 └─miss─> hot copy? ─> negative? ─> origin load (one per key)
//! owner remote: hot copy ─hit─> answer (no network)
//!                 └─miss─> peer load (one per key) ─> maybe keep an auto copy
//! ```
//!
//! A load runs in a detached task and every reader waits on the flight, so
//! a client that goes away never cancels a load other readers share.

use std::rc::Rc;
use std::time::Instant;

use futures_channel::oneshot;

use super::core::{Core, RingView, Step};
use crate::hot::Joined;
use crate::metrics::{CopyKind, OriginResult};
use crate::ops::{Hit, Op, Reply};
use crate::origin::Fetched;
use crate::peer::PeerError;

/// The result of one load, shared by every reader of the flight.
#[derive(Debug, Clone)]
pub enum Loaded {
    Value(Option<Hit>),
    OriginFailed(String),
    Unavailable,
}

impl From<Loaded> for Reply {
    fn from(loaded: Loaded) -> Reply {
        match loaded {
            Loaded::Value(hit) => Reply::Value(hit),
            Loaded::OriginFailed(reason) => Reply::OriginFailed(reason),
            Loaded::Unavailable => Reply::Unavailable,
        }
    }
}

/// Where a flight's leader loads the key from.
enum Source {
    Peer {
        view: Rc<RingView>,
        owner: usize,
        keep_copy: bool,
    },
    Origin,
}

/// A read waiting for a load.
pub struct ReadWork {
    key: Box<[u8]>,
    flight: oneshot::Receiver<Loaded>,
    /// A forwarded read whose node keeps a copy: answer with what the
    /// shard holds once the load is in, and mark it replicated.
    keep_copy: bool,
}

impl Core {
    /// A read of a key this node owns.
    pub(super) fn start_owner_get(&self, key: Box<[u8]>, keep_copy: bool, now: Instant) -> Step {
        {
            let mut shard = self.shard.borrow_mut();
            if let Some(found) = shard.get(&key, now) {
                if keep_copy {
                    shard.mark_replicated(&key, now);
                }
                return Step::Done(Reply::Value(Some(Hit::from(found))));
            }
        }
        // A replica pushed by the previous owner before the ring moved the
        // key here: still current, since writes now come here and drop it.
        if self.hot_enabled && self.hot.borrow().contains(&key, now) {
            if let Some(found) = self.hot.borrow_mut().get(&key, now) {
                return Step::Done(Reply::Value(Some(Hit::from(found))));
            }
        }
        if self.origin.is_none() {
            return Step::Done(Reply::Value(None));
        }
        if self.config.negative_ttl_secs > 0 && self.negative.borrow().contains(&key, now) {
            self.metrics.record_negative_hit();
            return Step::Done(Reply::Value(None));
        }
        let flight = self.join_flight(&key, || Source::Origin);
        Step::Read(ReadWork {
            key,
            flight,
            keep_copy,
        })
    }

    /// A read of a key another node owns.
    pub(super) fn start_remote_get(
        &self,
        key: Box<[u8]>,
        view: Rc<RingView>,
        owner: usize,
        now: Instant,
    ) -> Step {
        if self.hot_enabled {
            if let Some(found) = self.hot.borrow_mut().get(&key, now) {
                return Step::Done(Reply::Value(Some(Hit::from(found))));
            }
        }
        let keep_copy = self.hot_enabled && self.auto_hot.borrow_mut().record(&key, now);
        let flight = self.join_flight(&key, || Source::Peer {
            view,
            owner,
            keep_copy,
        });
        Step::Read(ReadWork {
            key,
            flight,
            keep_copy: false,
        })
    }

    pub(super) async fn finish_read(&self, work: ReadWork) -> Reply {
        let Ok(loaded) = work.flight.await else {
            return Reply::Unavailable;
        };
        if !work.keep_copy {
            return loaded.into();
        }
        // The asking node keeps what we answer, so answer with what the
        // shard holds now (a write may have overtaken the load) and record
        // that a copy exists, so the next write invalidates it.
        let now = Instant::now();
        let mut shard = self.shard.borrow_mut();
        // Not `get`: this read was already counted when it missed.
        if let Some(found) = shard.peek(&work.key, now) {
            shard.mark_replicated(&work.key, now);
            return Reply::Value(Some(Hit::from(found)));
        }
        match loaded {
            // Written over (deleted) while loading, or loaded but not kept:
            // nothing the other node may hold on to.
            Loaded::Value(Some(_)) => Reply::Value(None),
            other => other.into(),
        }
    }

    /// Joins the load of `key`, starting it (in a task of its own) when
    /// none is running.
    fn join_flight(
        &self,
        key: &[u8],
        source: impl FnOnce() -> Source,
    ) -> oneshot::Receiver<Loaded> {
        let joined = self.flights.borrow_mut().join(key);
        match joined {
            Joined::Follower(flight) => {
                self.metrics.record_singleflight_shared();
                flight
            }
            Joined::Leader(flight) => {
                let source = source();
                match self.this.upgrade() {
                    Some(this) => {
                        let key: Box<[u8]> = key.into();
                        glommio::spawn_local(async move { this.lead(key, source).await }).detach();
                    }
                    None => self.land(key, Loaded::Unavailable, |_| {}),
                }
                flight
            }
        }
    }

    /// The leader of a flight: load, keep what should be kept, answer all.
    async fn lead(&self, key: Box<[u8]>, source: Source) {
        match source {
            Source::Origin => {
                let loaded = self.load_from_origin(&key).await;
                self.land(&key, loaded, |loaded| self.keep_loaded(&key, loaded));
            }
            Source::Peer {
                view,
                owner,
                keep_copy,
            } => {
                let loaded = self.load_from_peer(&key, &view, owner, keep_copy).await;
                self.land(&key, loaded, |loaded| {
                    if keep_copy {
                        self.keep_auto_copy(&key, loaded);
                    }
                });
            }
        }
    }

    /// Ends the flight of `key`: `keep` runs unless a write overtook the
    /// load, then every reader gets the result.
    fn land(&self, key: &[u8], loaded: Loaded, keep: impl FnOnce(&Loaded)) {
        let flight = self.flights.borrow_mut().land(key);
        let Some(flight) = flight else {
            return;
        };
        if !flight.stale {
            keep(&loaded);
        }
        flight.deliver(loaded);
    }

    /// Ask the owner node; a failure is a miss, unless an origin is
    /// configured: then the owner's error is a 502, and an owner that cannot
    /// be reached is replaced by loading from the origin here (not kept:
    /// only owners cache origin values).
    async fn load_from_peer(
        &self,
        key: &[u8],
        view: &RingView,
        owner: usize,
        keep_copy: bool,
    ) -> Loaded {
        let op = Op::Get {
            key: key.into(),
            keep_copy,
        };
        match self.forward(view, owner, op).await {
            Ok(Reply::Value(hit)) => Loaded::Value(hit),
            Ok(Reply::OriginFailed(reason)) => Loaded::OriginFailed(reason),
            Ok(_) => Loaded::Value(None),
            Err(_) if self.origin.is_none() => Loaded::Value(None),
            Err((_, PeerError::Status { message, .. })) => {
                let reason = message.strip_prefix("origin failed: ").unwrap_or(&message);
                Loaded::OriginFailed(format!("{reason} (loaded by owner {})", view.names[owner]))
            }
            Err(_) => self.load_from_origin(key).await,
        }
    }

    async fn load_from_origin(&self, key: &[u8]) -> Loaded {
        let Some(origin) = &self.origin else {
            return Loaded::Value(None);
        };
        match origin.fetch(key).await {
            Ok(Fetched::Found(value)) => {
                self.metrics.record_origin(OriginResult::Found);
                let now = Instant::now();
                let expires_at =
                    self.jitter
                        .expiry(now, self.config.origin_ttl(), &mut self.rng.borrow_mut());
                Loaded::Value(Some(Hit {
                    value,
                    hot: false,
                    expires_at,
                }))
            }
            Ok(Fetched::NotFound) => {
                self.metrics.record_origin(OriginResult::NotFound);
                Loaded::Value(None)
            }
            Err(e) => {
                let result = if e.is_timeout() {
                    OriginResult::Timeout
                } else {
                    OriginResult::Error
                };
                self.metrics.record_origin(result);
                Loaded::OriginFailed(e.to_string())
            }
        }
    }

    /// Cache what the origin answered: the value in the shard, a 404 in
    /// the negative cache when `--negative-ttl` asks for it.
    fn keep_loaded(&self, key: &[u8], loaded: &Loaded) {
        let now = Instant::now();
        match loaded {
            Loaded::Value(Some(hit)) => {
                let mut shard = self.shard.borrow_mut();
                if let Err(e) = shard.set(key, hit.value.clone(), hit.expires_at, false, now) {
                    tracing::debug!("origin value not cached: {e}");
                }
                drop(shard);
                self.invalidate_evicted_copies();
            }
            Loaded::Value(None) if self.config.negative_ttl_secs > 0 => {
                let until = now + self.config.negative_ttl();
                let _ = self.negative.borrow_mut().set(
                    key,
                    bytes::Bytes::new(),
                    Some(until),
                    false,
                    now,
                );
            }
            _ => {}
        }
    }

    /// Keep an automatic copy of a value this node keeps asking the owner
    /// for, for at most `--hot-auto-ttl-ms` and never past its expiry.
    fn keep_auto_copy(&self, key: &[u8], loaded: &Loaded) {
        let Loaded::Value(Some(hit)) = loaded else {
            return;
        };
        let now = Instant::now();
        let limit = now + self.config.hot_auto_ttl();
        let expires_at = Some(hit.expires_at.map_or(limit, |at| at.min(limit)));
        let stored = self
            .hot
            .borrow_mut()
            .set(key, hit.value.clone(), expires_at, false, now);
        if stored.is_ok() {
            self.metrics.record_copy(CopyKind::Auto);
        }
    }
}
