//! Front ends that turn client bytes into ops: HTTP/1.1, gRPC and the
//! Redis protocol (RESP2/RESP3).

pub mod grpc;
pub mod http;
pub mod resp;
