//! The commands of one connection's pipeline that are still running or
//! waiting for their turn to answer.
//!
//! A pipeline's commands start in the order they came, and the ones that
//! need the cluster ([`Job`]s: another core, another node, a load) may run
//! at once, so a pipeline of keys owned elsewhere costs about one round
//! trip, not one per command. Replies still leave in order: a reply that
//! is ready waits behind the ones before it. A job that reads or writes a
//! key a running job touches waits until the running ones are done, so
//! commands on one key keep their order (an `INCR` pipeline counts as
//! Redis would). At most [`MAX_RUNNING`] jobs run at once per connection.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;

use super::commands::{run, Job, KeyHashes};
use super::Outcome;
use crate::metrics::Protocol as MetricProtocol;
use crate::runtime::core::Core;

/// Most jobs of one connection running at once. Their replies are held
/// until their turn, so this also bounds what a connection holds beyond
/// its unsent-output cap: this many replies.
pub const MAX_RUNNING: usize = 16;

/// One command's place in the pipeline.
enum Slot {
    /// Answered; its reply goes out once the slots before it have.
    Ready {
        reply: Vec<u8>,
        outcome: Outcome,
        took: Duration,
    },
    Running {
        task: glommio::Task<(Vec<u8>, Outcome, Duration)>,
        /// The keys it reads or writes.
        keys: KeyHashes,
    },
}

/// The slots of one connection, in pipeline order.
#[derive(Default)]
pub(super) struct Pipeline {
    slots: VecDeque<Slot>,
    running: usize,
    /// Bytes of the replies that are ready and waiting for their turn.
    ready_bytes: usize,
    /// Reply buffers to reuse (one per command would be an allocation per
    /// command).
    spare: Vec<Vec<u8>>,
}

impl Pipeline {
    /// No command is waiting: a reply may go straight to the output.
    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held in replies waiting for their turn and in spare buffers.
    pub(super) fn held(&self) -> usize {
        self.ready_bytes + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Bytes of ready replies not yet in the output.
    pub(super) fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// An empty buffer for a reply that cannot go to the output yet.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// A reply written to a buffer from [`Pipeline::buffer`], answered at
    /// once: it waits behind the slots before it.
    pub(super) fn push_ready(&mut self, reply: Vec<u8>, outcome: Outcome, took: Duration) {
        self.ready_bytes += reply.len();
        self.slots.push_back(Slot::Ready {
            reply,
            outcome,
            took,
        });
    }

    /// Whether `job` must wait for the running jobs first: it touches a
    /// key one of them touches, or as many run as may.
    pub(super) fn must_wait(&self, job: &Job) -> bool {
        if self.running == 0 {
            return false;
        }
        if self.running >= MAX_RUNNING {
            return true;
        }
        let keys = job.key_hashes();
        self.slots.iter().any(|slot| match slot {
            Slot::Running { keys: running, .. } => running.overlaps(&keys),
            Slot::Ready { .. } => false,
        })
    }

    /// Starts `job`. When it answers at once (a key of this core) and
    /// nothing waits before it, its reply goes straight to `out`;
    /// otherwise it takes a slot.
    pub(super) async fn start(&mut self, core: &Rc<Core>, job: Job, out: &mut Vec<u8>) {
        let keys = job.key_hashes();
        let started = Instant::now();
        let direct = self.slots.is_empty();
        let mut reply = if direct {
            // Nothing waits before it: the job appends to the output
            // itself, so no buffer is made or copied. If it must wait, the
            // output goes with it (the replies before it included) and
            // comes back, in order, when it is done.
            std::mem::take(out)
        } else {
            self.buffer()
        };
        let runner = Rc::clone(core);
        let mut call = Box::pin(async move {
            let outcome = run(&runner, job, &mut reply).await;
            (reply, outcome, started.elapsed())
        });
        match poll_once(&mut call).await {
            Some((reply, outcome, took)) if direct => {
                *out = reply;
                record(core, &outcome, took);
            }
            Some((reply, outcome, took)) => self.push_ready(reply, outcome, took),
            None => {
                self.running += 1;
                self.slots.push_back(Slot::Running {
                    task: glommio::spawn_local(call),
                    keys,
                });
            }
        }
    }

    /// Moves the replies at the front that are ready (running jobs that
    /// finished included) to `out`, in order, without waiting.
    pub(super) async fn drain_ready(&mut self, core: &Core, out: &mut Vec<u8>) {
        while let Some(front) = self.slots.front_mut() {
            if let Slot::Running { task, .. } = front {
                match poll_once(task).await {
                    Some((reply, outcome, took)) => {
                        self.running -= 1;
                        self.ready_bytes += reply.len();
                        *front = Slot::Ready {
                            reply,
                            outcome,
                            took,
                        };
                    }
                    None => return,
                }
            }
            self.pop_ready(core, out);
        }
    }

    /// Waits for every slot and moves all replies to `out`, in order.
    pub(super) async fn finish(&mut self, core: &Core, out: &mut Vec<u8>) {
        while let Some(slot) = self.slots.pop_front() {
            let (reply, outcome, took) = match slot {
                Slot::Running { task, .. } => {
                    self.running -= 1;
                    task.await
                }
                Slot::Ready {
                    reply,
                    outcome,
                    took,
                } => {
                    self.ready_bytes -= reply.len();
                    (reply, outcome, took)
                }
            };
            self.append(out, reply);
            record(core, &outcome, took);
        }
    }

    /// The front slot, known to be ready, to `out`.
    fn pop_ready(&mut self, core: &Core, out: &mut Vec<u8>) {
        if let Some(Slot::Ready {
            reply,
            outcome,
            took,
        }) = self.slots.pop_front()
        {
            self.ready_bytes -= reply.len();
            self.append(out, reply);
            record(core, &outcome, took);
        }
    }

    /// `reply` after what `out` holds; the emptied buffer is kept for
    /// reuse (a large one is let go).
    fn append(&mut self, out: &mut Vec<u8>, mut reply: Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut reply);
        } else {
            out.extend_from_slice(&reply);
        }
        reply.clear();
        if reply.capacity() > 0 && reply.capacity() <= super::IDLE_BUFFER && self.spare.len() < 4 {
            self.spare.push(reply);
        }
    }

    /// Lets the spare buffers go (an idle connection holds none).
    pub(super) fn settle(&mut self) {
        self.spare.clear();
    }
}

fn record(core: &Core, outcome: &Outcome, took: Duration) {
    core.metrics
        .record_request_on(MetricProtocol::Resp, outcome.op, outcome.status, took);
}
