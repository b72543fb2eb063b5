//! Tests of `openai::multipart`.
use super::*;

fn form(parts: &[(&str, &str)], boundary: &str) -> Vec<u8> {
    let mut body = String::new();
    for (headers, value) in parts {
        body.push_str(&format!("--{boundary}\r\n{headers}\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body.into_bytes()
}

fn scan(body: &[u8], boundary: &str, chunk: usize) -> Result<BTreeMap<String, String>, FormError> {
    let mut scanner = FormScanner::new(boundary);
    for piece in body.chunks(chunk) {
        scanner.feed(piece)?;
    }
    scanner.finish()
}

#[test]
fn fields_are_read_whatever_the_chunking_and_the_file_is_skipped() {
    let file = "x".repeat(100_000) + "\r\n--almost-the-boundary";
    let body = form(
        &[
            (
                r#"Content-Disposition: form-data; name="file"; filename="a.wav""#,
                &file,
            ),
            (
                r#"Content-Disposition: form-data; name="model""#,
                "whisper-1",
            ),
            (r#"content-disposition: form-data; name=n"#, "2"),
            (
                r#"Content-Disposition: form-data; name="prompt""#,
                "not read",
            ),
        ],
        "b0undary",
    );
    for chunk in [1, 2, 7, 13, 64, 1000, 65536, body.len()] {
        let fields = scan(&body, "b0undary", chunk).unwrap();
        assert_eq!(
            fields.get("model").map(String::as_str),
            Some("whisper-1"),
            "{chunk}"
        );
        assert_eq!(fields.get("n").map(String::as_str), Some("2"));
        assert!(!fields.contains_key("prompt"));
    }
}

#[test]
fn ambiguous_forms_are_errors() {
    let b = "bnd";
    let cases: Vec<(Vec<u8>, FormError)> = vec![
        (
            form(
                &[
                    (
                        r#"Content-Disposition: form-data; name="model""#,
                        "gpt-4o-mini",
                    ),
                    (r#"Content-Disposition: form-data; name="model""#, "o1"),
                ],
                b,
            ),
            FormError::Ambiguous,
        ),
        (
            form(
                &[(r#"Content-Disposition: form-data; name="Model""#, "o1")],
                b,
            ),
            FormError::Ambiguous,
        ),
        (
            form(
                &[(r#"Content-Disposition: form-data; name="model ""#, "o1")],
                b,
            ),
            FormError::Ambiguous,
        ),
        (
            form(
                &[(
                    r#"Content-Disposition: form-data; name*=utf-8''model"#,
                    "o1",
                )],
                b,
            ),
            FormError::Ambiguous,
        ),
        (
            form(
                &[(
                    "Content-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: base64",
                    "bzE=",
                )],
                b,
            ),
            FormError::Ambiguous,
        ),
        (
            form(
                &[(
                    r#"Content-Disposition: form-data; name="model""#,
                    &"m".repeat(300),
                )],
                b,
            ),
            FormError::Value,
        ),
    ];
    for (body, error) in cases {
        assert_eq!(
            scan(&body, b, 5),
            Err(error),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut cut = form(
        &[(r#"Content-Disposition: form-data; name="model""#, "o1")],
        b,
    );
    cut.truncate(cut.len() - 8);
    assert_eq!(scan(&cut, b, 5), Err(FormError::Truncated));
}

fn scan_in_pieces(
    body: &[u8],
    boundary: &str,
    cuts: &[usize],
) -> Result<BTreeMap<String, String>, FormError> {
    let mut scanner = FormScanner::new(boundary);
    let mut rest = body;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        scanner.feed(&rest[..size])?;
        rest = &rest[size..];
    }
    scanner.finish()
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("TOLLGATE_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2048)
        ))]

        /// The request reader never panics, and how a body is cut into chunks never
        /// changes what it reads.
        #[test]
        fn any_bytes_in_any_chunks_read_the_same(
            body in prop::collection::vec(any::<u8>(), 0..1024),
            cuts in prop::collection::vec(1usize..48, 1..12),
        ) {
            let whole = scan_in_pieces(&body, "b", &[body.len().max(1)]);
            prop_assert_eq!(whole, scan_in_pieces(&body, "b", &cuts));
        }

        /// Well-formed forms give back exactly the read fields they hold, in any chunking.
        #[test]
        fn well_formed_forms_give_back_their_fields(
            fields in prop::collection::btree_map(
                prop::sample::select(vec!["model", "n", "size", "quality", "stream", "prompt", "file_name", "modelx"]),
                "[a-zA-Z0-9 ._:-]{0,40}",
                0..6,
            ),
            file in prop::collection::vec(any::<u8>(), 0..512),
            file_first in any::<bool>(),
            cuts in prop::collection::vec(1usize..64, 1..8),
        ) {
            let boundary = "----proptest-boundary";
            let mut body = Vec::new();
            let file_part = |body: &mut Vec<u8>| {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n").as_bytes());
                body.extend_from_slice(&file);
                body.extend_from_slice(b"\r\n");
            };
            if file_first {
                file_part(&mut body);
            }
            for (name, value) in &fields {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
            }
            if !file_first {
                file_part(&mut body);
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            // A file holding the delimiter is not a well-formed form: skip those.
            prop_assume!(!file.windows(boundary.len() + 2).any(|w| w == format!("--{boundary}").as_bytes()));
            let read = scan_in_pieces(&body, boundary, &cuts).unwrap();
            let expected: BTreeMap<String, String> = fields
                .iter()
                .filter(|(name, _)| READ_FIELDS.contains(name))
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect();
            prop_assert_eq!(read, expected);
        }
    }
}

#[test]
fn the_boundary_is_one_parameter_every_parser_reads_alike() {
    assert_eq!(
        boundary("multipart/form-data; boundary=abc").unwrap(),
        "abc"
    );
    assert_eq!(
        boundary("multipart/form-data; BOUNDARY=\"a b\"").unwrap(),
        "a b"
    );
    assert_eq!(
        boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxk").unwrap(),
        "----WebKitFormBoundary7MA4YWxk"
    );
    for ambiguous in [
        "multipart/form-data",
        "multipart/form-data; boundary=a; boundary=b",
        "multipart/form-data; boundary=gw; boundary*=utf-8''up",
        "multipart/form-data; boundary=gw; boundary*0=up",
        "multipart/form-data; boundary=gw; BOUNDARY*=utf-8''up",
        "multipart/form-data; boundary=\"a\\\"b\"",
        "multipart/form-data; boundary=\"G;x\"",
        "multipart/form-data; boundary=\"unterminated",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=\"trailing \"",
    ] {
        assert_eq!(boundary(ambiguous), Err(FormError::Boundary), "{ambiguous}");
    }
}

#[test]
fn nothing_may_follow_the_closing_delimiter_but_a_line_break() {
    let b = "bnd";
    let mut body = form(
        &[(r#"Content-Disposition: form-data; name="model""#, "o1")],
        b,
    );
    assert!(scan(&body, b, 3).is_ok());
    body.extend_from_slice(b"padding after the end");
    assert_eq!(scan(&body, b, 3), Err(FormError::Epilogue));
    let mut spaces = form(
        &[(r#"Content-Disposition: form-data; name="model""#, "o1")],
        b,
    );
    spaces.extend_from_slice(&[b' '; 512]);
    assert_eq!(scan(&spaces, b, 64), Err(FormError::Epilogue));
}

#[test]
fn part_headers_end_lines_in_crlf_only() {
    let b = "a:b";
    let bare_lf = form(
        &[(
            "Content-Disposition: form-data; name=\"file\"\n\nsmuggled\r\nX: y",
            "v",
        )],
        b,
    );
    assert_eq!(scan(&bare_lf, b, 4), Err(FormError::PartHeaders));
    let folded = form(
        &[("Content-Disposition: form-data;\r\n name=\"model\"", "o1")],
        b,
    );
    assert_eq!(scan(&folded, b, 4), Err(FormError::PartHeaders));
}
