//! Start-up checks for what glommio needs from the kernel, so a node that
//! cannot run says why and how to fix it instead of failing deep inside an
//! executor.

use crate::error::StartupError;

/// Locked memory each executor needs: its io_uring rings plus the I/O buffer
/// we register (see `IO_MEMORY`).
pub const MEMLOCK_PER_CORE: u64 = 512 << 10;
/// Registered I/O buffer per executor. NexusCache does network I/O only, so
/// glommio's 10 MiB default (meant for file I/O) would be locked for nothing.
pub const IO_MEMORY: usize = 128 << 10;

/// Raise RLIMIT_MEMLOCK if needed and possible, else explain.
pub fn ensure_memlock(cores: usize) -> Result<(), StartupError> {
    let need = MEMLOCK_PER_CORE * cores as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // Cannot tell; let the executors report.
    }
    let enough = |v: libc::rlim_t| v == libc::RLIM_INFINITY || v >= need;
    if enough(limit.rlim_cur) {
        return Ok(());
    }
    let wanted = libc::rlimit {
        rlim_cur: need,
        rlim_max: if enough(limit.rlim_max) {
            limit.rlim_max
        } else {
            need
        },
    };
    // SAFETY: setrlimit reads the struct we pass. Raising the hard limit
    // only works with CAP_SYS_RESOURCE; we report failure below.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } == 0 {
        tracing::info!(
            from_kib = limit.rlim_cur / 1024,
            to_kib = need / 1024,
            "raised RLIMIT_MEMLOCK for io_uring"
        );
        return Ok(());
    }
    Err(StartupError::Memlock(format!(
        "RLIMIT_MEMLOCK is {} KiB but {} data cores need at least {} KiB ({} KiB each) \
         and raising it was not permitted; run `ulimit -l unlimited` as root before \
         starting, set LimitMEMLOCK=infinity in the systemd unit, or `--ulimit memlock=-1` \
         in Docker",
        limit.rlim_cur / 1024,
        cores,
        need / 1024,
        MEMLOCK_PER_CORE / 1024
    )))
}

/// File descriptors a node needs besides its client connections: listeners,
/// io_uring rings and eventfds, peer links (one per peer per core), etcd,
/// origin connections, log files.
pub const NOFILE_RESERVE: u64 = 256;

/// The open-files limit after start-up and whether it fits the
/// configured connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileReport {
    /// Soft limit before we raised it.
    pub before: u64,
    /// Soft limit now.
    pub after: u64,
    /// `--max-connections` plus [`NOFILE_RESERVE`] exceeds `after`: past
    /// `after` accepts fail with EMFILE (the accept loop backs off).
    pub short: bool,
}

/// Raise RLIMIT_NOFILE's soft limit to its hard limit (allowed without
/// privileges; many systems start processes at a soft 1024), then report
/// whether `max_connections` plus [`NOFILE_RESERVE`] fits. Logs what it
/// did; never fails start-up.
pub fn raise_nofile(max_connections: usize) -> Option<NofileReport> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    let mut after = before;
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft
        // limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            after = limit.rlim_max;
            tracing::info!(
                from = before,
                to = after,
                "raised RLIMIT_NOFILE to its hard limit"
            );
        }
    }
    let report = NofileReport {
        before,
        after,
        short: nofile_short(after, max_connections),
    };
    if report.short {
        tracing::warn!(
            limit = report.after,
            max_connections,
            reserve = NOFILE_RESERVE,
            "the open-files limit is below --max-connections plus a reserve for listeners,              rings and peer links: past it new connections fail with EMFILE; raise              LimitNOFILE= (systemd), --ulimit nofile= (Docker) or ulimit -n, or lower              --max-connections"
        );
    }
    Some(report)
}

/// Whether `limit` open files are too few for `max_connections` clients.
fn nofile_short(limit: u64, max_connections: usize) -> bool {
    limit != libc::RLIM_INFINITY && (max_connections as u64).saturating_add(NOFILE_RESERVE) > limit
}

/// Create and close a tiny io_uring to learn whether the kernel lets us.
pub fn probe_io_uring() -> Result<(), StartupError> {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: io_uring_setup(2) reads and writes `params`, which is at least
                                 // as large as the kernel's struct io_uring_params.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4u32,
            params.as_mut_ptr() as *mut libc::c_void,
        )
    };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is closed once.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let hint = match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring (need Linux 5.8 or newer)".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "io_uring_setup was denied: kernel.io_uring_disabled={disabled} (set it to 0 with \
             `sysctl kernel.io_uring_disabled=0`) or a seccomp profile blocks it (Docker 25+ and \
             containerd 2 do by default: run with deploy/seccomp-io_uring.json)"
        ),
        Some(libc::ENOMEM) => {
            "not enough locked memory for an io_uring: run `ulimit -l unlimited`".to_string()
        }
        _ => "unexpected error from io_uring_setup".to_string(),
    };
    Err(StartupError::IoUring(format!("{err}; {hint}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_shortage_counts_the_reserve() {
        assert!(!nofile_short(4096 + NOFILE_RESERVE, 4096));
        assert!(nofile_short(4096 + NOFILE_RESERVE - 1, 4096));
        assert!(nofile_short(1024, 4096));
        assert!(!nofile_short(libc::RLIM_INFINITY, usize::MAX));
    }

    #[test]
    fn raising_nofile_never_lowers_it() {
        let report = raise_nofile(1).expect("getrlimit works on Linux");
        assert!(report.after >= report.before);
    }

    #[test]
    fn io_uring_probe_runs() {
        // On the project's machines io_uring is available; elsewhere the
        // error must carry a hint rather than panic.
        match probe_io_uring() {
            Ok(()) => {}
            Err(e) => assert!(e.to_string().contains("io_uring")),
        }
    }
}
