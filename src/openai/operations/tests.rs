//! Tests of `openai::operations`.
use super::*;

fn path(raw: &str) -> ApiPath {
    ApiPath::parse(raw).unwrap()
}

#[test]
fn the_list_is_openais_without_the_admin_routes() {
    let operations = Operations::new(&[]);
    let spec: Vec<_> = spec_operations().collect();
    assert!(spec.len() > 250, "{}", spec.len());
    let forwarded = operations.all().count();
    let admin = spec
        .iter()
        .filter(|(_, t, _)| t.starts_with("/organization/") || t.starts_with("/projects/"))
        .count();
    assert!(admin > 100);
    assert_eq!(forwarded, spec.len() - admin);
    for (method, template, _) in &spec {
        let concrete = template
            .trim_start_matches('/')
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let found = operations.find(method, &path(&concrete));
        if template.starts_with("/organization/") || template.starts_with("/projects/") {
            assert!(found.is_err(), "{method} {template} must not be forwarded");
        } else {
            assert_eq!(found.unwrap().template, *template, "{method} {concrete}");
        }
    }
}

#[test]
fn every_listed_template_exists_in_the_specification() {
    let spec: Vec<_> = spec_operations().map(|(_, t, _)| t).collect();
    for template in MODEL_OPERATIONS
        .iter()
        .chain(FREE_WRITES.iter())
        .chain(UNBILLED.iter())
    {
        assert!(
            spec.contains(template),
            "{template} is not in operations.tsv"
        );
    }
}

#[test]
fn unknown_paths_and_methods_are_not_forwarded() {
    let operations = Operations::new(&[]);
    for unknown in [
        "organization/admin_api_keys",
        "organization/projects/p1/api_keys",
        "projects/p1/roles",
        "admin/keys",
        "files/f1/content/extra",
        "dashboard",
        "threads/RUNS",
        "threads/Runs/r1",
    ] {
        assert_eq!(
            operations.find(&Method::GET, &path(unknown)).err(),
            Some(NotForwarded::UnknownPath),
            "{unknown}"
        );
    }
    assert_eq!(
        operations.find(&Method::PUT, &path("files")).err(),
        Some(NotForwarded::Method(vec![Method::GET, Method::POST]))
    );
    let trace = Method::from_bytes(b"TRACE").unwrap();
    assert!(matches!(
        operations.find(&trace, &path("files")),
        Err(NotForwarded::Method(_))
    ));
}

#[test]
fn literals_win_over_parameters_and_governance_is_as_designed() {
    let operations = Operations::new(&[]);
    let find = |method: Method, raw: &str| operations.find(&method, &path(raw)).unwrap();
    assert_eq!(
        find(Method::POST, "responses/input_tokens").template,
        "/responses/input_tokens"
    );
    assert_eq!(
        find(Method::GET, "responses/resp_1").template,
        "/responses/{response_id}"
    );
    for (method, raw, governance, family) in [
        (
            Method::POST,
            "audio/transcriptions",
            Governance::Model,
            "audio",
        ),
        (Method::POST, "images/edits", Governance::Model, "images"),
        (
            Method::POST,
            "moderations",
            Governance::Model,
            "moderations",
        ),
        (
            Method::POST,
            "completions",
            Governance::Model,
            "completions",
        ),
        // A batch's model and cost are read from its input file (`pipeline::batch`).
        (Method::POST, "batches", Governance::Model, "batches"),
        (
            Method::POST,
            "fine_tuning/jobs",
            Governance::Opaque,
            "fine_tuning",
        ),
        (
            Method::POST,
            "threads/t1/runs",
            Governance::Opaque,
            "assistants",
        ),
        (
            Method::POST,
            "threads/runs",
            Governance::Opaque,
            "assistants",
        ),
        (
            Method::POST,
            "realtime/client_secrets",
            Governance::Opaque,
            "realtime",
        ),
        (
            Method::POST,
            "vector_stores",
            Governance::Opaque,
            "vector_stores",
        ),
        (Method::DELETE, "models/ft:x", Governance::Opaque, "models"),
        (Method::POST, "files", Governance::Free, "files"),
        (Method::GET, "batches/b1", Governance::Free, "batches"),
        (
            Method::POST,
            "batches/b1/cancel",
            Governance::Free,
            "batches",
        ),
    ] {
        let operation = find(method.clone(), raw);
        assert_eq!(operation.governance, governance, "{method} {raw}");
        assert_eq!(operation.family, family, "{method} {raw}");
    }
}

#[test]
fn the_operator_can_open_more() {
    let extra = parse_extra("POST /custom/{id}/run").unwrap();
    let operations = Operations::new(&[extra]);
    let found = operations
        .find(&Method::POST, &path("custom/c1/run"))
        .unwrap();
    assert_eq!(found.governance, Governance::Opaque);
    assert_eq!(found.family, "custom");
    for bad in [
        "/custom",
        "FOO /custom",
        "POST custom",
        "POST /a/../b",
        "POST /http://evil/x",
        "GET /a//b",
        "GET /a/{}",
    ] {
        assert!(parse_extra(bad).is_err(), "{bad}");
    }
}
