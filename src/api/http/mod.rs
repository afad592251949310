//! The HTTP/1.1 front end: framing (`parse`), form fields (`form`),
//! validation and routing (`route`, with the atomic ops' fields and answers
//! in `mutate`), response bytes (`response`), and the per-connection loop
//! on a core (`conn`). Only `conn` touches glommio.

pub mod conn;
pub mod endpoint;
pub mod form;
pub mod mutate;
pub mod parse;
pub mod response;
pub mod route;
