//! The parts of OpenAI's wire format that Tollgate reads. Everything else passes through
//! untouched: requests are forwarded as the caller's bytes unless a stage must change a field,
//! and responses as the upstream's bytes.

pub mod multipart;
pub mod operations;
pub mod path;
pub mod requests;
pub mod route;
pub mod sse;
pub mod usage;
pub mod websocket;

pub use route::ModelRoute;
