//! Front ends that turn client bytes into ops: HTTP/1.1 today.

pub mod http;
