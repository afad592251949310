//! The load engine: worker threads, their connections, and the
//! coordinator that merges their measurements.
//!
//! ```text
//!  coordinator (main thread)                worker 0 .. worker T-1 (one OS thread each)
//!  ------------------------                 ---------------------------------------------
//!  spawn workers                   ---->    connect own TCP connections (blocking, once)
//!                                           prefill own key range (closed loop)
//!  merge prefill reports           <----    Prefilled
//!  pick start time, open barrier   ---->    sleep until start; run warmup + measurement
//!  merge interval i of all         <----    Interval(i) at every 1 s boundary (stats swapped out)
//!  workers, print, log, total               ...
//!                                  <----    Finished
//! ```
//!
//! A worker is a single-threaded epoll loop (mio, edge-triggered) over the
//! connections it owns; nothing on the request path is shared with other
//! threads: no locks, no atomics. Each worker records into its own
//! HdrHistograms and hands them over once per interval through a channel.
//!
//! Why mio/epoll rather than glommio/io_uring: the loop issues exactly the
//! syscalls wrk does (one `read` and one `write` per response on a busy
//! connection, with short-read detection so no extra `read` just to see
//! `EAGAIN`), needs no locked memory (`ulimit -l`), and its timing is easy
//! to reason about. Measured against wrk it is not the bottleneck (see
//! `README.md`).
//!
//! Closed loop: each connection keeps its depth of requests in flight and
//! sends the next as soon as one is answered; latency is from send to
//! answer. Open loop (`--rate`): see `schedule.rs`; due requests go to any
//! connection with a free slot, and latency counts from the intended time.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cli::{Config, ConnSpec};
use crate::clock::{now_ns, Timer};
use crate::schedule::{interval_plan, IntervalSpan, Schedule};
use crate::stats::IntervalStats;
use crate::transport::{Completion, ConnCodec, Decoded, RequestId, Transport};
use crate::workload::{
    derive_seed, prefill_range, KeySampler, Op, OpGenerator, OpKind, WorkloadError,
};

const TIMER_TOKEN: Token = Token(usize::MAX);
/// Initial per-connection receive buffer; grows only for huge response heads.
const READ_BUF_BYTES: usize = 16 * 1024;
const MAX_READ_BUF_BYTES: usize = crate::http::MAX_HEAD_BYTES * 2;
/// Timeout checks and reconnect retries run this often.
const HOUSEKEEPING_NS: u64 = 100_000_000;
/// Wait before re-trying a failed connect.
const RECONNECT_BACKOFF_NS: u64 = 100_000_000;
/// Reporting interval.
const INTERVAL_NS: u64 = 1_000_000_000;
/// Lead time between the coordinator's "go" and the common start instant.
const START_LEAD_NS: u64 = 20_000_000;

/// Failures that stop the run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("poller failure: {0}")]
    Poll(io::Error),
    #[error("timer failure: {0}")]
    Timer(io::Error),
    #[error("cannot start worker thread: {0}")]
    Spawn(io::Error),
    #[error("worker {0} stopped unexpectedly (panicked)")]
    WorkerDied(usize),
    #[error("prefill made no progress for {0:?}: is the server still up?")]
    PrefillStalled(Duration),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

/// Result of the prefill phase, all workers merged.
#[derive(Debug, Clone, Default)]
pub struct PrefillReport {
    pub keys: u64,
    pub elapsed: Duration,
    pub stats: IntervalStats,
}

/// Result of the timed phase.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub prefill: Option<PrefillReport>,
    /// Everything answered during the measured intervals (warmup excluded).
    pub measured: IntervalStats,
    pub measured_duration: Duration,
    /// Requests still unanswered when the run ended (not counted anywhere else).
    pub in_flight_at_end: u64,
    /// Open loop: requests that were due but never sent because every
    /// connection was busy (the server could not keep up with `--rate`).
    pub backlog_at_end: u64,
}

/// Receives results as the run goes.
pub trait Observer {
    fn prefill_done(&mut self, _report: &PrefillReport) {}
    /// One interval, merged over all workers. `offset` is the interval's
    /// start relative to the start of the measurement (negative in warmup).
    fn interval(&mut self, _span: &IntervalSpan, _offset_ns: i64, _stats: &IntervalStats) {}
}

enum Msg {
    Prefilled {
        stats: Box<IntervalStats>,
    },
    Interval {
        index: usize,
        stats: Box<IntervalStats>,
    },
    Finished {
        in_flight: u64,
        backlog: u64,
    },
    Failed {
        error: EngineError,
    },
}

/// What one worker is told to do.
struct WorkerPlan {
    id: usize,
    conns: Vec<ConnSpec>,
    addrs: Vec<SocketAddr>,
    target_names: Vec<String>,
    prefill: Option<std::ops::Range<u64>>,
    prefill_window: usize,
    sampler: KeySampler,
    read_ratio: f64,
    seed: u64,
    /// Open loop: total rate and this worker's share of it.
    rate: Option<(f64, u64, u64)>,
    timeout_ns: u64,
    warmup_ns: u64,
    duration_ns: u64,
}

/// Runs prefill (if asked), warmup and measurement; blocks until done.
pub fn run<T: Transport, O: Observer>(
    cfg: &Config,
    transport: T,
    observer: &mut O,
) -> Result<RunOutcome, EngineError> {
    let sampler = KeySampler::new(cfg.keys, cfg.distribution)?;
    let transport = Arc::new(transport);
    let threads = cfg.layout.len();
    let (tx, rx) = mpsc::channel::<Msg>();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start_at = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(threads);
    for (id, conns) in cfg.layout.iter().enumerate() {
        let share: u64 = conns.iter().map(|c| c.depth as u64).sum();
        let plan = WorkerPlan {
            id,
            conns: conns.clone(),
            addrs: cfg.targets.iter().map(|t| t.addr).collect(),
            target_names: cfg.targets.iter().map(|t| t.name.clone()).collect(),
            prefill: cfg.prefill.then(|| prefill_range(cfg.keys, id, threads)),
            prefill_window: cfg.prefill_window,
            sampler: sampler.clone(),
            read_ratio: cfg.read_ratio,
            seed: derive_seed(cfg.seed, id as u64),
            rate: cfg.rate.map(|r| (r, share, cfg.concurrency as u64)),
            timeout_ns: cfg.timeout.as_nanos().min(u64::MAX as u128) as u64,
            warmup_ns: cfg.warmup.as_nanos() as u64,
            duration_ns: cfg.duration.as_nanos() as u64,
        };
        let (tx, barrier, start_at, transport) = (
            tx.clone(),
            barrier.clone(),
            start_at.clone(),
            transport.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("bench-worker-{id}"))
            .spawn(move || worker_main(plan, &*transport, tx, &barrier, &start_at))
            .map_err(EngineError::Spawn)?;
        handles.push(handle);
    }
    drop(tx);

    // Phase 1: connections up and prefill done everywhere.
    let prefill_start = now_ns();
    let mut prefill = PrefillReport::default();
    for _ in 0..threads {
        match rx.recv() {
            Ok(Msg::Prefilled { stats }) => prefill.stats.merge(&stats),
            Ok(Msg::Failed { error }) => return Err(error),
            Ok(_) => {}
            Err(_) => return Err(EngineError::WorkerDied(0)),
        }
    }
    let prefill = cfg.prefill.then(|| {
        prefill.keys = cfg.keys;
        prefill.elapsed = Duration::from_nanos(now_ns() - prefill_start);
        observer.prefill_done(&prefill);
        prefill
    });

    // Phase 2: common start, then one message per worker per interval.
    let start = now_ns() + START_LEAD_NS;
    start_at.store(start, Ordering::Release);
    barrier.wait();
    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let plan = interval_plan(
        start,
        warmup_ns,
        cfg.duration.as_nanos() as u64,
        INTERVAL_NS,
    );
    let measure_start = start + warmup_ns;
    let mut pending: HashMap<usize, (usize, IntervalStats)> = HashMap::new();
    let mut measured = IntervalStats::default();
    let (mut finished, mut in_flight_at_end, mut backlog_at_end) = (0, 0, 0);
    while finished < threads {
        match rx.recv() {
            Ok(Msg::Interval { index, stats }) => {
                let entry = pending
                    .entry(index)
                    .or_insert_with(|| (0, IntervalStats::default()));
                entry.0 += 1;
                entry.1.merge(&stats);
                if entry.0 == threads {
                    let (_, merged) = pending.remove(&index).unwrap_or_default();
                    // Workers derive the same plan from the same inputs.
                    let Some(&span) = plan.get(index) else {
                        continue;
                    };
                    if !span.warmup {
                        measured.merge(&merged);
                    }
                    observer.interval(&span, span.start_ns as i64 - measure_start as i64, &merged);
                }
            }
            Ok(Msg::Finished { in_flight, backlog }) => {
                finished += 1;
                in_flight_at_end += in_flight;
                backlog_at_end += backlog;
            }
            Ok(Msg::Failed { error }) => return Err(error),
            Ok(Msg::Prefilled { .. }) => {}
            Err(_) => return Err(EngineError::WorkerDied(0)),
        }
    }
    for (id, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            return Err(EngineError::WorkerDied(id));
        }
    }
    Ok(RunOutcome {
        prefill,
        measured,
        measured_duration: cfg.duration,
        in_flight_at_end,
        backlog_at_end,
    })
}

/// Tells the coordinator if a worker dies without finishing (a panic).
struct DeathNotice {
    tx: mpsc::Sender<Msg>,
    worker: usize,
    armed: bool,
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Msg::Failed {
                error: EngineError::WorkerDied(self.worker),
            });
        }
    }
}

fn worker_main<T: Transport>(
    plan: WorkerPlan,
    transport: &T,
    tx: mpsc::Sender<Msg>,
    barrier: &Barrier,
    start_at: &AtomicU64,
) {
    let mut notice = DeathNotice {
        tx: tx.clone(),
        worker: plan.id,
        armed: true,
    };
    let result = (|| -> Result<(), EngineError> {
        let mut worker = Worker::connect(plan, transport)?;
        let mut events = Events::with_capacity(1024);
        let prefill = worker.prefill(&mut events)?;
        let _ = tx.send(Msg::Prefilled {
            stats: Box::new(prefill),
        });
        barrier.wait();
        let start = start_at.load(Ordering::Acquire);
        worker.run_timed(&mut events, start, &tx)
    })();
    if let Err(error) = result {
        let _ = tx.send(Msg::Failed { error });
        // Don't leave the coordinator waiting at the barrier: it returns
        // the error above and the process exits.
    }
    notice.armed = false;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Open,
    Connecting { since: u64 },
    Down { retry_at: u64 },
}

/// A request waiting for its response.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: RequestId,
    kind: OpKind,
    /// Latency origin: send time (closed loop) or intended time (open loop).
    origin_ns: u64,
    /// When it was handed to the socket (for timeouts).
    sent_ns: u64,
}

struct Conn<C> {
    spec: ConnSpec,
    addr: SocketAddr,
    stream: Option<TcpStream>,
    state: ConnState,
    codec: C,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    inflight: VecDeque<InFlight>,
    dirty: bool,
}

impl<C> Conn<C> {
    fn has_free_slot(&self) -> bool {
        self.state == ConnState::Open && self.inflight.len() < self.spec.depth
    }
}

/// What the worker sends right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing new (between phases and after the end).
    Idle,
    Prefill {
        next: u64,
        end: u64,
    },
    Closed,
    Open,
}

/// Why a connection is being dropped; decides which error counter moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Io,
    Timeout,
    Parse,
    /// The server announced `Connection: close` (or closed an idle connection).
    ClosedByServer,
}

struct Worker<C: ConnCodec> {
    poll: Poll,
    conns: Vec<Conn<C>>,
    timer: Timer,
    mode: Mode,
    gen: OpGenerator,
    stats: IntervalStats,
    schedule: Option<Schedule>,
    rate: Option<(f64, u64, u64)>,
    /// Open loop: requests sent so far.
    issued: u64,
    /// Open loop: free request slots over all open connections.
    free_slots: usize,
    cursor: usize,
    dirty: Vec<usize>,
    timeout_ns: u64,
    warmup_ns: u64,
    duration_ns: u64,
    prefill: Option<std::ops::Range<u64>>,
    /// Writes each connection keeps outstanding while prefilling.
    prefill_window: usize,
    completions: u64,
}

impl<C: ConnCodec> Worker<C> {
    /// Opens every connection (blocking, with the timeout) and registers it.
    fn connect<T: Transport<Codec = C>>(
        plan: WorkerPlan,
        transport: &T,
    ) -> Result<Self, EngineError> {
        let poll = Poll::new().map_err(EngineError::Poll)?;
        let mut timer = Timer::new().map_err(EngineError::Timer)?;
        poll.registry()
            .register(&mut timer, TIMER_TOKEN, Interest::READABLE)
            .map_err(EngineError::Timer)?;
        let timeout = Duration::from_nanos(plan.timeout_ns);
        let mut conns = Vec::with_capacity(plan.conns.len());
        for (i, spec) in plan.conns.iter().enumerate() {
            let addr = plan.addrs[spec.target];
            let connect_err = |source| EngineError::Connect {
                target: plan.target_names[spec.target].clone(),
                source,
            };
            let std_stream =
                std::net::TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
            std_stream.set_nodelay(true).map_err(connect_err)?;
            std_stream.set_nonblocking(true).map_err(connect_err)?;
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(EngineError::Poll)?;
            let mut conn = Conn {
                spec: *spec,
                addr,
                stream: Some(stream),
                state: ConnState::Open,
                codec: transport.codec(spec.target),
                wbuf: Vec::with_capacity(4096),
                wpos: 0,
                rbuf: vec![0; READ_BUF_BYTES],
                rstart: 0,
                rend: 0,
                inflight: VecDeque::with_capacity(spec.depth),
                dirty: false,
            };
            conn.codec.on_connect(&mut conn.wbuf);
            conns.push(conn);
        }
        Ok(Worker {
            poll,
            conns,
            timer,
            mode: Mode::Idle,
            gen: OpGenerator::new(plan.seed, plan.sampler, plan.read_ratio),
            stats: IntervalStats::default(),
            schedule: None,
            rate: plan.rate,
            issued: 0,
            free_slots: 0,
            cursor: 0,
            dirty: Vec::new(),
            timeout_ns: plan.timeout_ns,
            warmup_ns: plan.warmup_ns,
            duration_ns: plan.duration_ns,
            prefill: plan.prefill,
            prefill_window: plan.prefill_window,
            completions: 0,
        })
    }

    /// Writes this worker's key range once, closed loop over all connections.
    fn prefill(&mut self, events: &mut Events) -> Result<IntervalStats, EngineError> {
        let Some(range) = self.prefill.clone() else {
            return Ok(IntervalStats::default());
        };
        self.mode = Mode::Prefill {
            next: range.start,
            end: range.end,
        };
        let now = now_ns();
        for i in 0..self.conns.len() {
            self.kick(i, now);
        }
        let stall_limit = (self.timeout_ns * 3).max(10_000_000_000);
        let mut last_progress = (now, self.completions);
        let mut next_housekeeping = now + HOUSEKEEPING_NS;
        loop {
            let done = matches!(self.mode, Mode::Prefill { next, end } if next >= end);
            if done && self.conns.iter().all(|c| c.inflight.is_empty()) {
                break;
            }
            let now = now_ns();
            if self.completions != last_progress.1 {
                last_progress = (now, self.completions);
            } else if now - last_progress.0 > stall_limit {
                return Err(EngineError::PrefillStalled(Duration::from_nanos(
                    stall_limit,
                )));
            }
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING_NS;
            }
            self.poll_once(events, next_housekeeping.saturating_sub(now))?;
        }
        self.mode = Mode::Idle;
        Ok(std::mem::take(&mut self.stats))
    }

    /// Warmup and measurement, reporting every interval.
    fn run_timed(
        &mut self,
        events: &mut Events,
        start: u64,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<(), EngineError> {
        let plan = interval_plan(start, self.warmup_ns, self.duration_ns, INTERVAL_NS);
        let Some(end) = plan.last().map(|s| s.end_ns) else {
            let _ = tx.send(Msg::Finished {
                in_flight: 0,
                backlog: 0,
            });
            return Ok(());
        };
        let now = now_ns();
        if start > now {
            std::thread::sleep(Duration::from_nanos(start - now));
        }
        self.stats = IntervalStats::default();
        match self.rate {
            Some((rate, share, total)) => {
                self.schedule = Schedule::new(start, rate, share, total);
                self.mode = Mode::Open;
                self.free_slots = self
                    .conns
                    .iter()
                    .filter(|c| c.state == ConnState::Open)
                    .map(|c| c.spec.depth - c.inflight.len())
                    .sum();
            }
            None => {
                self.mode = Mode::Closed;
                let now = now_ns();
                for i in 0..self.conns.len() {
                    self.kick(i, now);
                }
            }
        }
        let mut index = 0;
        let mut next_housekeeping = start + HOUSEKEEPING_NS;
        loop {
            let now = now_ns();
            while index < plan.len() && now >= plan[index].end_ns {
                let stats = Box::new(std::mem::take(&mut self.stats));
                let _ = tx.send(Msg::Interval { index, stats });
                index += 1;
            }
            if index >= plan.len() {
                break;
            }
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING_NS;
            }
            let mut wake = plan[index].end_ns.min(next_housekeeping);
            if self.mode == Mode::Open {
                if let Some(at) = self.dispatch(now) {
                    self.timer.arm_at(at).map_err(EngineError::Timer)?;
                    wake = wake.min(at);
                }
            }
            self.poll_once(events, wake.saturating_sub(now))?;
        }
        let in_flight = self.conns.iter().map(|c| c.inflight.len() as u64).sum();
        let backlog = self.schedule.map_or(0, |s| {
            s.due_count(end.saturating_sub(1))
                .saturating_sub(self.issued)
        });
        self.mode = Mode::Idle;
        let _ = tx.send(Msg::Finished { in_flight, backlog });
        Ok(())
    }

    /// Waits up to `wait_ns` for readiness and handles what arrived.
    fn poll_once(&mut self, events: &mut Events, wait_ns: u64) -> Result<(), EngineError> {
        // epoll's timeout is in ms (mio rounds up); exact wake-ups come from the timerfd.
        let timeout = Duration::from_nanos(wait_ns);
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(EngineError::Poll(e)),
        }
        for event in events.iter() {
            let token = event.token();
            if token == TIMER_TOKEN {
                self.timer.acknowledge();
                continue;
            }
            let idx = token.0;
            let Some(conn) = self.conns.get(idx) else {
                continue;
            };
            match conn.state {
                ConnState::Open => {
                    if event.is_writable() && conn.wpos < conn.wbuf.len() {
                        self.flush(idx);
                    }
                    // A failed flush replaced the connection: nothing to read on it yet.
                    let still_open = self.conns[idx].state == ConnState::Open;
                    if still_open
                        && (event.is_readable() || event.is_read_closed() || event.is_error())
                    {
                        self.on_readable(idx, event.is_read_closed());
                    }
                }
                ConnState::Connecting { .. } => self.finish_connect(idx, now_ns()),
                ConnState::Down { .. } => {}
            }
        }
        Ok(())
    }

    /// Open loop: sends every request that is due and has a free slot.
    /// Returns when to wake for the next one, if nothing is backlogged.
    fn dispatch(&mut self, now: u64) -> Option<u64> {
        let schedule = self.schedule?;
        let due = schedule.due_count(now);
        while self.issued < due && self.free_slots > 0 {
            let n = self.conns.len();
            let Some(i) = (0..n)
                .map(|s| (self.cursor + s) % n)
                .find(|&i| self.conns[i].has_free_slot())
            else {
                // Bookkeeping drifted; recount rather than spin.
                self.free_slots = 0;
                break;
            };
            self.cursor = (i + 1) % n;
            let op = self.gen.next_op();
            self.issue(i, op, schedule.intended(self.issued), now);
            self.issued += 1;
            self.free_slots -= 1;
            if !self.conns[i].dirty {
                self.conns[i].dirty = true;
                self.dirty.push(i);
            }
        }
        while let Some(i) = self.dirty.pop() {
            self.conns[i].dirty = false;
            self.flush(i);
        }
        (self.issued >= due).then(|| schedule.intended(self.issued))
    }

    /// Appends a request to a connection's write buffer.
    #[inline]
    fn issue(&mut self, idx: usize, op: Op, origin_ns: u64, now: u64) {
        if self.mode == Mode::Open {
            // How much later than intended the request leaves.
            self.stats
                .send_lag_ns
                .saturating_record(now.saturating_sub(origin_ns).max(1));
        }
        let conn = &mut self.conns[idx];
        let id = conn.codec.encode(op, &mut conn.wbuf);
        conn.inflight.push_back(InFlight {
            id,
            kind: op.kind,
            origin_ns,
            sent_ns: now,
        });
    }

    /// Next request for a connection that just freed a slot (or opened).
    /// Returns false if there is nothing to send.
    #[inline]
    fn refill_one(&mut self, idx: usize, now: u64) -> bool {
        match self.mode {
            Mode::Idle => false,
            Mode::Prefill { next, end } => {
                if next >= end {
                    return false;
                }
                self.mode = Mode::Prefill {
                    next: next + 1,
                    end,
                };
                self.issue(
                    idx,
                    Op {
                        kind: OpKind::Write,
                        key: next,
                    },
                    now,
                    now,
                );
                true
            }
            Mode::Closed => {
                let op = self.gen.next_op();
                self.issue(idx, op, now, now);
                true
            }
            Mode::Open => {
                let Some(schedule) = self.schedule else {
                    return false;
                };
                if self.issued < schedule.due_count(now) {
                    let op = self.gen.next_op();
                    self.issue(idx, op, schedule.intended(self.issued), now);
                    self.issued += 1;
                    true
                } else {
                    self.free_slots += 1;
                    false
                }
            }
        }
    }

    /// Fills a connection up to its depth and sends.
    fn kick(&mut self, idx: usize, now: u64) {
        if self.conns[idx].state != ConnState::Open {
            return;
        }
        if self.mode == Mode::Open {
            // Slots are handed out by `dispatch`.
            self.flush(idx);
            return;
        }
        let window = window(self.mode, self.conns[idx].spec.depth, self.prefill_window);
        while self.conns[idx].inflight.len() < window && self.refill_one(idx, now) {}
        self.flush(idx);
    }

    /// Writes as much of the connection's buffer as the socket takes.
    fn flush(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        while conn.wpos < conn.wbuf.len() {
            match stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => return self.fail(idx, Failure::Io),
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return, // writable event resumes
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(idx, Failure::Io),
            }
        }
        conn.wbuf.clear();
        conn.wpos = 0;
    }

    /// Reads and handles what arrived. `peer_closed`: the event also
    /// reported the peer's FIN, so read on to the end of stream even after a
    /// short read (edge-triggered epoll would not report it again, and a
    /// response cut short would otherwise wait for the request timeout).
    fn on_readable(&mut self, idx: usize, peer_closed: bool) {
        loop {
            let conn = &mut self.conns[idx];
            if conn.rend == conn.rbuf.len() {
                if conn.rstart > 0 {
                    conn.rbuf.copy_within(conn.rstart..conn.rend, 0);
                    conn.rend -= conn.rstart;
                    conn.rstart = 0;
                } else if conn.rbuf.len() < MAX_READ_BUF_BYTES {
                    let len = conn.rbuf.len() * 2;
                    conn.rbuf.resize(len, 0);
                } else {
                    return self.fail(idx, Failure::Parse);
                }
            }
            let space = conn.rbuf.len() - conn.rend;
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            match stream.read(&mut conn.rbuf[conn.rend..]) {
                Ok(0) => return self.on_eof(idx),
                Ok(n) => {
                    conn.rend += n;
                    if !self.process_input(idx, now_ns()) {
                        return;
                    }
                    // A short read drained the socket; edge-triggered epoll
                    // reports any later data, so skip the read that would
                    // only return EAGAIN.
                    if n < space && !peer_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(idx, Failure::Io),
            }
        }
        self.flush(idx);
    }

    /// Decodes buffered responses. Returns false if the connection was dropped.
    fn process_input(&mut self, idx: usize, now: u64) -> bool {
        loop {
            let conn = &mut self.conns[idx];
            let decoded = conn
                .codec
                .decode(&conn.rbuf[conn.rstart..conn.rend], &mut conn.wbuf);
            match decoded {
                Ok(Decoded::NeedMore { consumed }) => {
                    conn.rstart += consumed;
                    break;
                }
                Ok(Decoded::Done {
                    consumed,
                    completion,
                }) => {
                    conn.rstart += consumed;
                    if !self.complete(idx, completion, now) {
                        return false;
                    }
                }
                Err(_) => {
                    self.fail(idx, Failure::Parse);
                    return false;
                }
            }
        }
        let conn = &mut self.conns[idx];
        if conn.rstart == conn.rend {
            conn.rstart = 0;
            conn.rend = 0;
        }
        true
    }

    /// Accounts one response and sends the next request. Returns false if
    /// the connection was dropped.
    #[inline]
    fn complete(&mut self, idx: usize, completion: Completion, now: u64) -> bool {
        let conn = &mut self.conns[idx];
        let request = match conn.inflight.front() {
            Some(front) if front.id == completion.id => conn.inflight.pop_front(),
            _ => conn
                .inflight
                .iter()
                .position(|r| r.id == completion.id)
                .and_then(|p| conn.inflight.remove(p)),
        };
        let Some(request) = request else {
            // A response nobody asked for: the stream is out of sync.
            self.fail(idx, Failure::Parse);
            return false;
        };
        self.completions += 1;
        self.stats.record(
            request.kind,
            completion.class,
            now.saturating_sub(request.origin_ns),
        );
        if completion.close_after {
            self.fail(idx, Failure::ClosedByServer);
            return false;
        }
        // In the open loop, a slot with nothing due goes back to the pool.
        self.refill_one(idx, now);
        true
    }

    fn on_eof(&mut self, idx: usize) {
        let now = now_ns();
        match self.conns[idx].codec.on_eof() {
            Ok(Some(completion)) => {
                let completion = Completion {
                    close_after: true,
                    ..completion
                };
                // `complete` drops the connection because of close_after.
                self.complete(idx, completion, now);
            }
            Ok(None) => self.fail(idx, Failure::ClosedByServer),
            Err(_) => self.fail(idx, Failure::Io),
        }
    }

    /// Drops a connection, counts its unanswered requests as errors of
    /// the failure's kind, and starts reconnecting.
    fn fail(&mut self, idx: usize, failure: Failure) {
        let conn = &mut self.conns[idx];
        if conn.state != ConnState::Open {
            return;
        }
        let lost = conn.inflight.len() as u64;
        let errors = &mut self.stats.errors;
        match failure {
            Failure::Io | Failure::ClosedByServer => errors.io += lost,
            Failure::Timeout => errors.timeout += lost,
            Failure::Parse => errors.parse += lost.max(1),
        }
        if self.mode == Mode::Open {
            self.free_slots = self
                .free_slots
                .saturating_sub(conn.spec.depth - conn.inflight.len());
        }
        self.close(idx);
        self.start_connect(idx, now_ns());
    }

    fn close(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.codec.reset();
        conn.inflight.clear();
        conn.wbuf.clear();
        conn.wpos = 0;
        conn.rstart = 0;
        conn.rend = 0;
        conn.state = ConnState::Down { retry_at: 0 };
    }

    fn start_connect(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        match TcpStream::connect(conn.addr) {
            Ok(mut stream) => {
                match self.poll.registry().register(
                    &mut stream,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        conn.stream = Some(stream);
                        conn.state = ConnState::Connecting { since: now };
                    }
                    Err(_) => self.connect_failed(idx, now),
                }
            }
            Err(_) => self.connect_failed(idx, now),
        }
    }

    fn connect_failed(&mut self, idx: usize, now: u64) {
        self.stats.errors.connect += 1;
        let conn = &mut self.conns[idx];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.state = ConnState::Down {
            retry_at: now + RECONNECT_BACKOFF_NS,
        };
    }

    fn finish_connect(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        let Some(stream) = conn.stream.as_ref() else {
            return;
        };
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return self.connect_failed(idx, now),
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(_) => return self.connect_failed(idx, now),
        }
        let _ = stream.set_nodelay(true);
        conn.state = ConnState::Open;
        conn.codec.on_connect(&mut conn.wbuf);
        if self.mode == Mode::Open {
            self.free_slots += conn.spec.depth;
        }
        self.kick(idx, now);
    }

    /// Request timeouts, connect timeouts and reconnect retries.
    fn housekeeping(&mut self, now: u64) {
        for idx in 0..self.conns.len() {
            let conn = &self.conns[idx];
            match conn.state {
                ConnState::Open => {
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|r| now.saturating_sub(r.sent_ns) > self.timeout_ns)
                    {
                        self.fail(idx, Failure::Timeout);
                    }
                }
                ConnState::Connecting { since } => {
                    if now.saturating_sub(since) > self.timeout_ns {
                        self.connect_failed(idx, now);
                    }
                }
                ConnState::Down { retry_at } => {
                    if now >= retry_at {
                        self.start_connect(idx, now);
                    }
                }
            }
        }
    }
}

/// Requests one connection keeps outstanding in `mode`: its measured depth,
/// or while prefilling the larger `prefill_window` (writes are pipelined over
/// HTTP/1.1 and multiplexed over gRPC; answers free slots one by one, so the
/// window slides and never grows past this bound).
fn window(mode: Mode, depth: usize, prefill_window: usize) -> usize {
    match mode {
        Mode::Prefill { .. } => depth.max(prefill_window),
        Mode::Idle | Mode::Closed | Mode::Open => depth,
    }
}

#[cfg(test)]
mod tests {
    /// The mock servers' framing: takes the complete request (head and
    /// Content-Length body) at the front of `buf` and returns its path, or
    /// `None` while it is incomplete.
    fn take_request(buf: &mut Vec<u8>) -> Option<String> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(buf) else {
            return None;
        };
        let len: usize = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        if buf.len() < head + len {
            return None;
        }
        let path = req.path.unwrap_or("").to_string();
        buf.drain(..head + len);
        Some(path)
    }

    use super::*;
    use crate::cli::Args;
    use crate::http::HttpTransport;
    use clap::Parser;
    use std::net::TcpListener;

    /// A tiny keep-alive HTTP/1.1 server for the seed API: reads of even
    /// keys hit, odd keys miss, writes succeed. Answers pipelined requests
    /// in order. Runs until the test process ends.
    fn mock_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16384];
                    loop {
                        let n = match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut out = Vec::new();
                        while let Some(path) = take_request(&mut buf) {
                            let odd = path.ends_with(['1', '3', '5', '7', '9']);
                            let resp: &[u8] = if path.starts_with("/api/set") {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                            } else if odd {
                                b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n"
                            } else {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nvalue=abc"
                            };
                            out.extend_from_slice(resp);
                        }
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[derive(Default)]
    struct Recorder {
        prefill: Option<u64>,
        intervals: Vec<(bool, u64)>,
    }

    impl Observer for Recorder {
        fn prefill_done(&mut self, r: &PrefillReport) {
            self.prefill = Some(r.stats.op(OpKind::Write).stored);
        }
        fn interval(&mut self, span: &IntervalSpan, _offset_ns: i64, stats: &IntervalStats) {
            self.intervals.push((span.warmup, stats.completed()));
        }
    }

    fn run_against(addr: SocketAddr, extra: &[&str]) -> (RunOutcome, Recorder) {
        let target = addr.to_string();
        let mut argv = vec!["x", "--targets", &target, "--seed", "3", "--quiet"];
        argv.extend_from_slice(extra);
        let cfg = Config::from_args(Args::try_parse_from(argv).unwrap()).unwrap();
        let transport = HttpTransport::new(
            cfg.mode,
            std::slice::from_ref(&target),
            cfg.auth_token.as_deref(),
            &cfg.key_names,
            cfg.value_size,
        );
        let mut rec = Recorder::default();
        let outcome = run(&cfg, transport, &mut rec).unwrap();
        (outcome, rec)
    }

    #[test]
    fn closed_loop_with_prefill_warmup_and_pipelining() {
        let addr = mock_server();
        let (out, rec) = run_against(
            addr,
            &[
                "--duration",
                "600ms",
                "--warmup",
                "200ms",
                "--prefill",
                "--keys",
                "500",
                "--threads",
                "2",
                "--connections",
                "4",
                "--concurrency",
                "8",
                "--pipeline",
                "2",
            ],
        );
        assert_eq!(rec.prefill, Some(500));
        assert_eq!(out.measured.errors.total(), 0, "{:?}", out.measured.errors);
        let reads = out.measured.op(OpKind::Read);
        assert!(reads.hits > 0 && reads.misses > 0);
        let hit_rate = reads.hits as f64 / (reads.hits + reads.misses) as f64;
        assert!((0.4..0.6).contains(&hit_rate), "{hit_rate}");
        assert!(out.measured.op(OpKind::Write).stored > 0);
        // One warmup interval, then 600 ms as one interval; totals exclude warmup.
        assert_eq!(
            rec.intervals.iter().map(|i| i.0).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert_eq!(out.measured.completed(), rec.intervals[1].1);
        assert_eq!(out.measured.send_lag_ns.len(), 0);
    }

    #[test]
    fn open_loop_sends_at_the_requested_rate() {
        let addr = mock_server();
        let (out, _) = run_against(
            addr,
            &[
                "--duration",
                "1s",
                "--rate",
                "2000",
                "--threads",
                "2",
                "--concurrency",
                "4",
                "--mode",
                "api",
            ],
        );
        let done = out.measured.completed() + out.in_flight_at_end + out.backlog_at_end;
        assert!((1990..=2010).contains(&done), "{done}");
        assert_eq!(out.measured.errors.total(), 0);
        assert!(out.measured.send_lag_ns.len() > 1900);
    }

    /// How a [`prefill_mock`] connection misbehaves.
    #[derive(Clone, Copy)]
    struct MockFaults {
        /// Requests number k*N on a connection (counting from 1) are
        /// answered 503, numbers k*N+1 400.
        error_every: Option<usize>,
        /// The first connection, after answering this many requests, sends
        /// half of the next response and closes (a short read).
        cut_after: Option<usize>,
    }

    /// An HTTP/1.1 server for prefill writes: answers `POST /api/set` in
    /// order, only after reading whole requests, and records the most
    /// requests it ever had outstanding on one connection (those received
    /// but not yet answered) in `most_outstanding`.
    fn prefill_mock(faults: MockFaults, most_outstanding: Arc<AtomicU64>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (conn_no, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let most_outstanding = most_outstanding.clone();
                std::thread::spawn(move || {
                    let (mut buf, mut chunk, mut answered) = (Vec::new(), [0u8; 65536], 0usize);
                    loop {
                        let n = match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut out = Vec::new();
                        let mut batch = 0u64;
                        loop {
                            if take_request(&mut buf).is_none() {
                                break;
                            }
                            batch += 1;
                            answered += 1;
                            let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                            if conn_no == 0 && faults.cut_after == Some(answered - 1) {
                                out.extend_from_slice(&ok[..ok.len() / 2]);
                                let _ = stream.write_all(&out);
                                return; // dropped: the client sees a short read
                            }
                            out.extend_from_slice(match faults.error_every.map(|n| answered % n) {
                                Some(0) => b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nbusy\n",
                                Some(1) => b"HTTP/1.1 400 Bad\r\nContent-Length: 4\r\n\r\nbad\n",
                                _ => ok,
                            });
                        }
                        most_outstanding.fetch_max(batch, Ordering::Relaxed);
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn window_is_the_prefill_window_only_while_prefilling() {
        let prefill = Mode::Prefill { next: 0, end: 10 };
        assert_eq!(window(prefill, 1, 64), 64);
        // A deeper measured depth is never lowered.
        assert_eq!(window(prefill, 100, 64), 100);
        for mode in [Mode::Idle, Mode::Closed, Mode::Open] {
            assert_eq!(window(mode, 3, 64), 3);
        }
    }

    #[test]
    fn prefill_pipelines_up_to_the_window_and_counts_error_answers() {
        let most = Arc::new(AtomicU64::new(0));
        let faults = MockFaults {
            error_every: Some(10),
            cut_after: None,
        };
        let addr = prefill_mock(faults, most.clone());
        let (out, rec) = run_against(
            addr,
            &[
                "--prefill",
                "--prefill-window",
                "16",
                "--keys",
                "2000",
                "--connections",
                "1",
                "--concurrency",
                "1",
                "--threads",
                "1",
                "--read-ratio",
                "0",
                "--duration",
                "1ms",
            ],
        );
        let prefill = out.prefill.expect("prefill ran");
        let errors = &prefill.stats.errors;
        // One connection, 2000 writes: 200 answered 503, 200 answered 400,
        // the rest stored.
        assert_eq!(errors.http_5xx, 200, "{errors:?}");
        assert_eq!(errors.http_4xx, 200, "{errors:?}");
        assert_eq!(rec.prefill, Some(1600));
        assert_eq!(errors.total(), 400, "{errors:?}");
        // Pipelined (more than one request outstanding at once), never
        // more than the window.
        let most = most.load(Ordering::Relaxed);
        assert!((2..=16).contains(&most), "{most} outstanding");
    }

    #[test]
    fn prefill_counts_a_short_read_and_reconnects() {
        let faults = MockFaults {
            error_every: None,
            cut_after: Some(100),
        };
        let addr = prefill_mock(faults, Arc::new(AtomicU64::new(0)));
        let (out, rec) = run_against(
            addr,
            &[
                "--prefill",
                "--prefill-window",
                "8",
                "--keys",
                "1000",
                "--connections",
                "1",
                "--concurrency",
                "1",
                "--threads",
                "1",
                "--read-ratio",
                "0",
                "--duration",
                "1ms",
            ],
        );
        let prefill = out.prefill.expect("prefill ran");
        let errors = &prefill.stats.errors;
        let stored = rec.prefill.expect("prefill reported");
        // The requests outstanding when the answer was cut (at least the one
        // cut short, at most the window) are io errors; the rest of the keys
        // went over a new connection.
        assert!((1..=8).contains(&errors.io), "{errors:?}");
        assert_eq!(stored + errors.total(), 1000, "{errors:?}");
        assert!(stored >= 992, "{stored}");
    }

    #[test]
    fn unreachable_target_is_a_clear_error() {
        // Bind then drop to get a port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = format!("127.0.0.1:{port}");
        let cfg = Config::from_args(
            Args::try_parse_from(["x", "--targets", &target, "--duration", "1s", "--quiet"])
                .unwrap(),
        )
        .unwrap();
        let transport = HttpTransport::new(
            cfg.mode,
            std::slice::from_ref(&target),
            None,
            &crate::keys::KeyNames::numbered("k"),
            1,
        );
        let err = run(&cfg, transport, &mut Recorder::default()).unwrap_err();
        assert!(matches!(err, EngineError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&target));
    }
}
