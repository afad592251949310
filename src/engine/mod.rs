//! The per-key policy of one core as plain, synchronous code with time
//! passed in (being extracted from `runtime/`; see issue 12).
