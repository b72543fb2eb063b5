//! One integration-test binary: the real server and the real mock upstream on loopback.

mod support;

mod errors;
mod key_store;
mod routes;
mod server;
mod streaming;
mod upstream;
