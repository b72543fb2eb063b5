//! Which of Tollgate's model routes a call is: the wire-level fact every layer that reads a
//! body needs (validation, tokens, content rules, limits), so it lives with the wire types.

/// The model routes, each validated its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRoute {
    Chat,
    Embeddings,
    Images,
    Responses,
    /// A Realtime session (`/v1/realtime`, a WebSocket).
    Realtime,
    /// Any other `/v1/*` route.
    Passthrough,
}

impl ModelRoute {
    /// Low-cardinality label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Images => "images",
            Self::Responses => "responses",
            Self::Realtime => "realtime",
            Self::Passthrough => "passthrough",
        }
    }
}
