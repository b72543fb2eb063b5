//! Our own HTTP layers. They are composed, in order, in `server::router`; each file says what
//! it guards.

pub mod access_log;
pub mod content_type;
pub mod origin;
pub mod request_id;
pub mod security_headers;
