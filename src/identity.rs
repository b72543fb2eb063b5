//! Who is calling, once authenticated: the [`Principal`] every later stage, service and record
//! reads. Built by `pipeline::authenticate`; a leaf, so that services (limits, budgets, the
//! cache) and records can name callers without reaching into the pipeline.

use std::net::IpAddr;
use std::sync::Arc;

use crate::error::GatewayError;
use crate::keys::ApiKey;
use crate::limiter::rules::Rule;

/// Who presented the request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A gateway key.
    Key(Arc<ApiKey>),
    /// A user JWT; the subject is the user.
    Jwt { subject: String },
    /// No credential, allowed by `[anonymous] enabled = true`.
    Anonymous,
}

/// The authenticated caller, as a request extension.
#[derive(Debug, Clone)]
pub struct Principal {
    pub caller: Caller,
    /// The end user the caller acts for, when known.
    pub user: Option<String>,
    /// The client's address (after trusted proxies).
    pub client_ip: IpAddr,
    /// Models the caller may use; empty means every model.
    pub models: Arc<[String]>,
    /// The limit rules that apply to the caller.
    pub rules: Arc<[Rule]>,
    /// Route families (`batches`, `fine_tuning`, ...) a restricted caller may use although
    /// their model or cost cannot be checked before forwarding (`pipeline::authorize`).
    pub routes: Arc<[String]>,
}

/// Whether `user` may name an end user (also used for the body's `user`).
pub fn is_valid_user(user: &str) -> bool {
    (1..=128).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@+-".contains(&b))
}

impl Principal {
    /// The authorize stage's check: the caller may use `model` (403 otherwise).
    pub fn authorize_model(&self, model: &str) -> Result<(), GatewayError> {
        if self.may_use(model) {
            Ok(())
        } else {
            Err(GatewayError::ModelNotAllowed {
                model: model.to_owned(),
            })
        }
    }

    /// Whether the caller may use `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// The key's id, for key callers.
    pub fn key_id(&self) -> Option<&str> {
        match &self.caller {
            Caller::Key(key) => Some(&key.id),
            Caller::Jwt { .. } | Caller::Anonymous => None,
        }
    }

    /// The Redis hash tag of the caller's own buckets (key- and user-scoped), so they share one
    /// Cluster slot; `None` when there is nothing to key them on.
    pub fn bucket_tag(&self) -> Option<String> {
        match &self.caller {
            Caller::Key(key) => Some(format!("key:{}", key.id)),
            Caller::Jwt { subject } => Some(format!("jwt:{subject}")),
            Caller::Anonymous => self.user.as_ref().map(|user| format!("anon:{user}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(is_valid_user("user_42@example.com"));
        assert!(is_valid_user("a:b+c-d.e"));
        assert!(!is_valid_user(""));
        assert!(!is_valid_user("has space"));
        assert!(!is_valid_user("tab\there"));
        assert!(!is_valid_user(&"u".repeat(129)));
        assert!(!is_valid_user("ünïcode"));
    }
}
