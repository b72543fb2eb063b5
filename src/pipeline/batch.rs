//! The batch stage: a batch about to be created (`POST /v1/batches`) is checked against its
//! input file before anything is forwarded (`batches::plan`): its one model must be one the
//! caller may use, and its worst case is what the budgets stage holds. It runs after the rate
//! limits, so reading input files is paced like any call. A batch goes to the default upstream,
//! where its file is: a model routed elsewhere is refused. Once created, the respond stage
//! remembers it, for its output to be recorded when it ends.

use super::Call;
use crate::error::GatewayError;
use crate::state::AppState;

/// Whether `call` creates a batch.
pub fn creates_batch(call: &Call) -> bool {
    call.operation
        .as_deref()
        .is_some_and(|op| op.template == "/batches" && op.method == axum::http::Method::POST)
}

/// The stage: plans a batch creation; nothing for any other call.
pub async fn check(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    if !creates_batch(call) {
        return Ok(());
    }
    let Some(json) = &call.json else {
        return Err(GatewayError::invalid(
            "A batch is created from a JSON body naming its 'input_file_id' and 'endpoint'.",
            None,
        ));
    };
    let principal = &call.principal;
    let plan =
        crate::batches::plan(state, &json.raw, |model| principal.authorize_model(model)).await?;
    let default = state.upstream.targets(None);
    if *state.upstream.targets(Some(&plan.model)) != *default {
        return Err(GatewayError::invalid(
            format!(
                "The model `{}` is served through an alias or another upstream, which batches \
                 cannot use.",
                plan.model
            ),
            Some("input_file_id".to_owned()),
        ));
    }
    call.targets = default;
    // A batch runs on the default upstream: no pool's members or limits apply.
    call.pool = None;
    call.request.model = Some(plan.model.clone());
    call.facts.model_requested = Some(plan.model.clone());
    call.batch = Some(plan);
    Ok(())
}
