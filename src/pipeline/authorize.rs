//! The authorize stage: the caller may use this model, and this operation at all.
//!
//! The rule: a restriction that cannot be enforced on a request is a refusal, never a bypass.
//! A caller is *restricted* when it has a model list or a budget that applies. For such a
//! caller, an operation whose model or cost the gateway cannot see before forwarding
//! ([`Governance::Opaque`]: batches, fine-tuning, assistants runs, ...) is refused unless the
//! caller's `routes` allowance names its family; a model operation must name its model (to a
//! caller with a model list, or a budgeted caller when OpenAI bills it); and a multipart
//! upload whose fields could not be read unambiguously (`pipeline::upload`) is refused.

use super::Call;
use crate::error::GatewayError;
use crate::identity::Principal;
use crate::openai::operations::Governance;
use crate::state::AppState;

/// Checks the model and the operation against the caller's restrictions.
pub fn authorize(call: &Call, state: &AppState) -> Result<(), GatewayError> {
    let principal = &call.principal;
    let operation = call.operation.as_deref();
    let request = &call.request;
    let form_unread = call.form_unread;
    for model in request.model.iter().chain(&request.tool_models) {
        principal.authorize_model(model)?;
    }
    // What a tool's own model costs is not in the answer's usage: a budget cannot hold it.
    if let Some(model) = request.tool_models.first()
        && !super::budget::lines_for(state, principal).is_empty()
    {
        return Err(GatewayError::PermissionDenied {
            message: format!(
                "A tool that runs its own model (`{model}`) is billed outside the answer's \
                 usage, so it cannot be held to this caller's budget."
            ),
        });
    }
    // Tollgate's own model routes require `model` in a JSON body: checked above.
    let Some(operation) = operation else {
        return Ok(());
    };
    if operation.governance == Governance::Free || !is_restricted(state, principal) {
        return Ok(());
    }
    // Named in refusals only: built when one is made.
    let route = || format!("{} {}", operation.method, operation.template);
    match operation.governance {
        Governance::Free => Ok(()),
        Governance::Opaque if principal.routes.contains(&operation.family) => Ok(()),
        Governance::Opaque => Err(GatewayError::PermissionDenied {
            message: format!(
                "This caller is limited to certain models or by a budget, and `{}` can use \
                 models or money the gateway cannot check before forwarding. The operator can \
                 allow the `{}` routes for this caller.",
                route(),
                operation.family
            ),
        }),
        Governance::Model if form_unread => Err(GatewayError::PermissionDenied {
            message: format!(
                "This caller is limited to certain models or by a budget, and the model of a \
                 multipart upload to `{}` cannot be checked before forwarding.",
                route()
            ),
        }),
        // A model list needs a model to check; a budget needs one to price, when billed. A
        // batch's model is in its input file, checked by the batch stage.
        Governance::Model
            if request.model.is_none()
                && (!principal.models.is_empty() || operation.billed)
                && !super::batch::creates_batch(call) =>
        {
            Err(GatewayError::PermissionDenied {
                message: format!(
                    "This caller is limited to certain models or by a budget: `{}` must \
                     name its model in `model`.",
                    route()
                ),
            })
        }
        Governance::Model => Ok(()),
    }
}

/// Whether the caller has a model list or a budget that applies to this request.
pub fn is_restricted(state: &AppState, principal: &Principal) -> bool {
    let anonymous_budget = matches!(principal.caller, crate::pipeline::Caller::Anonymous)
        && state.config.anonymous.budget.is_some();
    !principal.models.is_empty()
        || anonymous_budget
        || !super::budget::lines_for(state, principal).is_empty()
}
