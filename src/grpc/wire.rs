//! The `nexuscache.v1` messages as our server and peer client use them:
//! generated from `proto/` like [`crate::proto`], but with every `bytes`
//! field a [`bytes::Bytes`], so decoding a received frame slices keys and
//! values out of it instead of copying them. The protobuf schema exists in
//! one place, `proto/nexuscache/v1/cache.proto`.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/wire/nexuscache.v1.rs"));
