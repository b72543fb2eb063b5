//! Tests that measure latency, in a binary of their own: cargo runs test binaries one after
//! another, so these run after the main suite, on a machine no other test is loading.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code: a panic is a failed test, and a skip must say why on stderr"
)]

#[allow(dead_code)]
#[path = "../it/support/mod.rs"]
mod support;

mod postgres_outage;
