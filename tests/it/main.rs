//! One integration-test binary: the real server and the real mock upstream on loopback.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code: a panic is a failed test, and a skip must say why on stderr"
)]

mod support;

mod admin;
mod admin_schema;
mod azure;
mod batches;
mod budgets;
mod cache;
mod cli;
mod content;
mod cost_table;
mod dashboard;
mod demo;
mod docs;
mod durability;
mod errors;
mod hostile;
mod jwt;
mod key_store;
mod limiter;
mod limits;
mod managed_redis;
mod money;
mod observability;
mod pools;
mod postgres_tls;
mod realtime;
mod reconcile;
mod records;
mod reload;
mod routes;
mod routing;
mod sdk;
mod security;
mod server;
mod signals;
mod streaming;
mod traces;
mod upstream;
mod worst_case;
