//! A real etcd for integration tests: the Debian `etcd` binary (package
//! `etcd-server`, installed by scripts/setup.sh) on free loopback ports with
//! a temporary data directory, polled for readiness, and killed by PID when
//! dropped. It can be frozen (SIGSTOP), killed and restarted on the same
//! ports and data directory to test outages.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long etcd may take to elect itself and answer `/health`.
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// Kills etcd if the test process dies without running `Drop`: its stdin is
/// a pipe from us, which closes when we exit.
const WATCHDOG: &str = "read _unused; kill -9 \"$1\" 2>/dev/null; exit 0";

static SEQ: AtomicUsize = AtomicUsize::new(0);

// The same reservations as `common` (a test crate may include both; the
// file locks keep them unique either way).
#[allow(clippy::duplicate_mod)]
#[path = "../common/ports.rs"]
mod ports;
use ports::free_port;

/// One single-member etcd cluster.
pub struct Etcd {
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    watchdog: Option<(Child, ChildStdin)>,
    paused: bool,
}

impl Etcd {
    /// Start etcd and wait until it is healthy.
    pub fn start() -> Etcd {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("nexuscache-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        let mut etcd = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            log: dir.join("etcd.log"),
            dir,
            child: None,
            watchdog: None,
            paused: false,
        };
        etcd.spawn();
        etcd
    }

    /// `127.0.0.1:<client port>`, as given to `--etcd`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// PID of the running etcd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open etcd log");
        let child = Command::new("etcd")
            .args(["--name", "nc-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("nc-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            // Fast elections so a (re)started member leads within a few
            // hundred milliseconds; this also lowers etcd's minimum lease
            // TTL (1.5 election timeouts) below one second.
            .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCD_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `etcd` ({e}); install it with `apt-get install -y etcd-server \
                     etcd-client` (scripts/setup.sh does)"
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "etcd-watchdog", &pid.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog shell");
        let stdin = watchdog.stdin.take().expect("watchdog stdin");
        self.watchdog = Some((watchdog, stdin));
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "etcd exited with {status} during start-up:\n{}",
                        self.log_tail()
                    );
                }
            }
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "etcd not healthy after {READY_DEADLINE:?}:\n{}",
            self.log_tail()
        );
    }

    /// `GET /health` answers `{"health":"true"}` once etcd has a leader.
    pub fn healthy(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains(r#""health":"true""#)
    }

    /// Freeze etcd (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// Thaw a paused etcd (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Kill etcd (SIGKILL) and reap it; the data directory stays.
    pub fn kill(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = watchdog.wait();
        }
    }

    /// Start etcd again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kill etcd, delete its data and start an empty one on the same ports
    /// (a rebuilt cluster: revisions start again from 1, leases are gone).
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
        self.spawn();
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("etcd is running") as libc::pid_t;
        // SAFETY: kill(2) with the PID of our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
