//! Node-wide lifecycle flags shared between the control thread and the data
//! cores. They change a handful of times per process lifetime and are read
//! by cores on a timer, never per request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
