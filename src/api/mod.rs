//! Front ends that turn client bytes into ops: HTTP/1.1 today.

pub mod grpc;
pub mod http;
