//! The io_uring setup flag glommio does not ask for.
//!
//! glommio 0.9 creates its rings with no setup flags. Then every completion
//! that arrives while a core runs user code (a client socket became
//! readable, say) interrupts that core with an inter-processor interrupt so
//! io_uring's task work runs at once. On a busy core that is one IPI per
//! request, and in a VM each IPI is a VM exit. `scripts/bench-http.sh` on
//! one core measured 0.85 IPIs per request (nginx: 0.02) and 81k req/s.
//!
//! `IORING_SETUP_COOP_TASKRUN` (Linux 5.19) keeps the wake-up of a sleeping
//! core and drops the interrupt of a running one: the completion is handled
//! at the core's next system call instead, and a data core makes several per
//! request. With it the same run measured 0.001 IPIs per request and 111k
//! req/s.
//!
//! Every ring glommio creates goes through liburing's
//! `__sys_io_uring_setup` (bundled with glommio, called from its
//! `io_uring_queue_init_params`). `build.rs` links our binaries with
//! `--wrap=__sys_io_uring_setup`, which sends that call here. A kernel that
//! rejects the flag gets its rings without it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `IORING_SETUP_COOP_TASKRUN` from `linux/io_uring.h`.
const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;

/// The head of `struct io_uring_params` (`linux/io_uring.h`). Only `flags`
/// is touched; the kernel reads the caller's whole struct.
#[repr(C)]
pub struct IoUringParamsHead {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
}

static COOP_REJECTED: AtomicBool = AtomicBool::new(false);
static COOP_RINGS: AtomicUsize = AtomicUsize::new(0);
static PLAIN_RINGS: AtomicUsize = AtomicUsize::new(0);

/// How many rings this process created with and without cooperative task
/// running.
pub fn rings_created() -> (usize, usize) {
    (
        COOP_RINGS.load(Ordering::Relaxed),
        PLAIN_RINGS.load(Ordering::Relaxed),
    )
}

fn io_uring_setup(entries: u32, params: *mut IoUringParamsHead) -> i32 {
    // SAFETY: the same raw system call liburing's own
    // `__sys_io_uring_setup` makes, with the caller's arguments; it returns
    // a new fd or -1 with errno set, which is what the caller expects.
    unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params) as i32 }
}

/// liburing's raw ring setup, with `IORING_SETUP_COOP_TASKRUN` added.
///
/// # Safety
/// `params` must point to a valid, writable `struct io_uring_params`, as
/// for the `__sys_io_uring_setup` it replaces (liburing is the only caller).
#[no_mangle]
pub unsafe extern "C" fn __wrap___sys_io_uring_setup(
    entries: u32,
    params: *mut IoUringParamsHead,
) -> i32 {
    if params.is_null() {
        return io_uring_setup(entries, params);
    }
    if !COOP_REJECTED.load(Ordering::Relaxed) {
        // SAFETY: the caller passes a valid, writable io_uring_params.
        let requested = unsafe { (*params).flags };
        unsafe { (*params).flags = requested | IORING_SETUP_COOP_TASKRUN };
        let fd = io_uring_setup(entries, params);
        if fd >= 0 {
            COOP_RINGS.fetch_add(1, Ordering::Relaxed);
            return fd;
        }
        let error = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { (*params).flags = requested };
        if error.raw_os_error() != Some(libc::EINVAL) {
            // Not about the flag (no memory, io_uring disabled, ...): the
            // caller reports it, with errno as the kernel left it.
            return fd;
        }
        // Linux before 5.19: remember, so the other rings skip the retry.
        COOP_REJECTED.store(true, Ordering::Relaxed);
    }
    let fd = io_uring_setup(entries, params);
    if fd >= 0 {
        PLAIN_RINGS.fetch_add(1, Ordering::Relaxed);
    }
    fd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The link flag is in effect: a glommio executor's rings came through
    /// the wrapper, and on this kernel (6.x) they got the flag.
    #[test]
    fn glommio_rings_are_created_with_coop_taskrun() {
        let before = rings_created();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(crate::runtime::platform::IO_MEMORY)
            .spawn(|| async {})
            .expect("executor starts")
            .join()
            .expect("executor ends");
        let (coop, plain) = rings_created();
        assert_eq!(plain, before.1, "no ring was created without the flag");
        assert!(
            coop >= before.0 + 2,
            "glommio's main and latency rings went through the wrapper ({} -> {coop})",
            before.0
        );
    }
}
