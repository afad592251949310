//! Node-wide lifecycle: the flags shared between the control thread and the
//! data cores (they change a handful of times per process lifetime and are
//! read by cores on a timer, never per request), and crash-stop: a panic on
//! any thread ends the whole process.

use std::any::Any;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Exit status of a crash-stop: the status Rust gives a process whose main
/// thread panicked.
pub const PANIC_EXIT_STATUS: i32 = 101;

/// Make a panic on any thread (data core, control, signals, main) end the
/// whole process with [`PANIC_EXIT_STATUS`] after one log line naming the
/// thread, the message and the location.
///
/// Without it a panicking core dies alone: its ports stop answering while
/// the process, its etcd lease and its exit status all look healthy, so
/// neither a supervisor nor the other nodes notice. Ending the process lets
/// systemd (`Restart=on-failure`) and Docker restart it, and lets the etcd
/// lease expire so peers drop the node.
///
/// It ends with `_exit(2)` rather than `abort(3)`: abort raises SIGABRT,
/// which by default dumps core, and this process's memory is the cache
/// (up to `--max-memory`), so the dump could take minutes and gigabytes of
/// disk while the node is neither alive nor restarted. `_exit` stops every
/// thread at once without running destructors or `atexit` handlers (which
/// could wait on locks the panicking thread holds); nothing is lost, since
/// the cache is memory only and the log line is written before.
pub fn install_crash_stop() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = crash_line(thread.name(), info);
        // One line through the node's logger (synchronous: stderr).
        tracing::error!("{message}");
        // SAFETY: _exit(2) only ends the process; it is async-signal-safe
        // and touches no Rust state.
        unsafe { libc::_exit(PANIC_EXIT_STATUS) }
    }));
}

/// The crash-stop log line: thread, panic message (on one line), location.
fn crash_line(thread: Option<&str>, info: &PanicHookInfo<'_>) -> String {
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "an unknown location".to_owned());
    format_crash_line(thread, payload_text(info.payload()), &location)
}

fn format_crash_line(thread: Option<&str>, message: &str, location: &str) -> String {
    format!(
        "thread '{}' panicked at {location}: {}; crash-stop: exiting with status \
         {PANIC_EXIT_STATUS}",
        thread.unwrap_or("<unnamed>"),
        message.escape_debug()
    )
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn payload_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}

#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set by the signal handler: stop being ready, then stop accepting.
    draining: AtomicBool,
    /// Set after the pre-stop delay: listeners close.
    closing: AtomicBool,
    /// Cores whose client connections have all finished.
    cores_drained: AtomicUsize,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    pub fn start_closing(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.closing.store(true, Ordering::SeqCst);
    }
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
    pub fn core_drained(&self) {
        self.cores_drained.fetch_add(1, Ordering::SeqCst);
    }
    pub fn cores_drained(&self) -> usize {
        self.cores_drained.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_line_is_one_line_naming_thread_message_and_location() {
        let line = format_crash_line(Some("nc-core-1"), "boom\nsecond line", "src/x.rs:3:5");
        assert_eq!(
            line,
            "thread 'nc-core-1' panicked at src/x.rs:3:5: boom\\nsecond line; crash-stop: \
             exiting with status 101"
        );
        assert!(!line.contains('\n'));
        assert!(format_crash_line(None, "m", "l").contains("'<unnamed>'"));
    }

    #[test]
    fn payloads_of_both_panic_forms_are_read() {
        let text: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(payload_text(&*text), "static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("formatted 7"));
        assert_eq!(payload_text(&*owned), "formatted 7");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(payload_text(&*other), "<non-string panic payload>");
    }
}
