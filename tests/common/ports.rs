//! Loopback ports for the servers tests start, unique across every test
//! process running at once.
//!
//! The server binds its ports with SO_REUSEPORT, so two nodes given the
//! same port do not fail: they silently share its connections (a RESP
//! client of one test then talks to another test's HTTP port). A port
//! that was free a moment ago is therefore also reserved with an exclusive
//! `flock` on a file named after it, held until this process exits: test
//! processes running in parallel never hand out the same port, and a
//! crashed one leaves nothing behind (the kernel drops its locks).

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// The reservations this process holds.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port free a moment ago that no other test process (and no
/// earlier call in this one) has reserved.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if reserve(port) {
            return port;
        }
    }
}

/// Takes the port's lock; `false` if another reservation holds it. Where
/// no lock file can be made, every port counts as free (as before).
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("nexuscache-test-ports");
    let opened = std::fs::create_dir_all(&dir).and_then(|()| {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
    });
    let Ok(file) = opened else {
        return true;
    };
    // SAFETY: flock on a descriptor we own; no memory is involved.
    // A second open of the same file in this process is a separate open
    // file description, so it conflicts too.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    true
}
