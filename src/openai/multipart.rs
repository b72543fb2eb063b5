//! The few text fields of a multipart upload that decide what it may do (`model`, `n`, `size`,
//! `quality`, `stream`), read as the upload streams past, without keeping the file.
//!
//! The reading is strict where a lenient upstream could disagree with it: a field we read
//! that appears twice, is named in another spelling (`name*=`, other case, spaces), carries a
//! transfer encoding, or is longer than a short value makes the form ambiguous, and an
//! ambiguous form is an error, never a guess. So is a form that does not end with its closing
//! delimiter.

use std::collections::BTreeMap;

/// The fields read, by name.
pub const READ_FIELDS: [&str; 5] = ["model", "n", "size", "quality", "stream"];

/// The longest value of a read field.
const MAX_VALUE_BYTES: usize = 256;

/// The longest header block of one part.
const MAX_PART_HEADER_BYTES: usize = 8 * 1024;

/// Why a form could not be read unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the multipart boundary is missing or ambiguous")]
    Boundary,
    #[error("a part's headers are malformed or too long")]
    PartHeaders,
    #[error("a field the gateway checks appears more than once or in another spelling")]
    Ambiguous,
    #[error("a field the gateway checks is too long or not plain text")]
    Value,
    #[error("the form ends before its closing delimiter")]
    Truncated,
    #[error("the form carries bytes after its closing delimiter")]
    Epilogue,
}

/// The boundary of a `multipart/form-data` content type, when there is exactly one and every
/// parser must read it the same way: RFC 2046 characters only, quoted only as a whole, and no
/// RFC 2231 spelling (`boundary*=`, `boundary*0=`), which some parsers prefer to the plain one.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    let mut found = None;
    for parameter in content_type.split(';').skip(1) {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let name = name.trim().to_ascii_lowercase();
        if !name.starts_with("boundary") {
            continue;
        }
        if name != "boundary" || found.is_some() {
            return Err(FormError::Boundary);
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"').ok_or(FormError::Boundary)?,
            None => value,
        };
        let plain = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b));
        if value.is_empty() || value.len() > 70 || !plain || value.ends_with(' ') {
            return Err(FormError::Boundary);
        }
        found = Some(value.to_owned());
    }
    found.ok_or(FormError::Boundary)
}

enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` ends the form, CRLF starts a part.
    AfterDelimiter,
    /// Reading a part's headers.
    Headers,
    /// Inside a part's body; `Some` when its value is kept.
    Body(Option<(String, Vec<u8>)>),
    /// After the closing delimiter.
    Done,
}

/// Reads a form chunk by chunk.
pub struct FormScanner {
    delimiter: Vec<u8>,
    pending: Vec<u8>,
    state: State,
    fields: BTreeMap<String, String>,
}

impl FormScanner {
    /// A scanner for a form with this boundary.
    pub fn new(boundary: &str) -> Self {
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            // The first delimiter need not follow a line break: pretend one came before.
            pending: b"\r\n".to_vec(),
            state: State::Preamble,
            fields: BTreeMap::new(),
        }
    }

    /// Reads the next bytes of the form.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormError> {
        self.pending.extend_from_slice(chunk);
        loop {
            let progressed = match &mut self.state {
                State::Preamble => match find(&self.pending, &self.delimiter) {
                    Some(at) => {
                        self.pending.drain(..at + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                        true
                    }
                    None => {
                        keep_tail(&mut self.pending, self.delimiter.len());
                        false
                    }
                },
                State::AfterDelimiter => {
                    if self.pending.len() < 2 {
                        false
                    } else if self.pending.starts_with(b"--") {
                        self.pending.drain(..2);
                        self.state = State::Done;
                        true
                    } else if self.pending.starts_with(b"\r\n") {
                        self.pending.drain(..2);
                        self.state = State::Headers;
                        true
                    } else {
                        return Err(FormError::PartHeaders);
                    }
                }
                State::Headers => {
                    // An empty header block is a bare CRLF.
                    let end = if self.pending.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else {
                        find(&self.pending, b"\r\n\r\n").map(|at| (at, at + 4))
                    };
                    match end {
                        Some((at, _)) if at > MAX_PART_HEADER_BYTES => {
                            return Err(FormError::PartHeaders);
                        }
                        Some((at, consumed)) => {
                            let kept = self.read_headers(&self.pending[..at])?;
                            self.pending.drain(..consumed);
                            self.state = State::Body(kept.map(|name| (name, Vec::new())));
                            true
                        }
                        None if self.pending.len() > MAX_PART_HEADER_BYTES => {
                            return Err(FormError::PartHeaders);
                        }
                        None => false,
                    }
                }
                State::Body(kept) => match find(&self.pending, &self.delimiter) {
                    Some(at) => {
                        if let Some((name, mut value)) = kept.take() {
                            value.extend_from_slice(&self.pending[..at]);
                            let text = String::from_utf8(value)
                                .ok()
                                .filter(|v| v.len() <= MAX_VALUE_BYTES)
                                .ok_or(FormError::Value)?;
                            self.fields.insert(name, text);
                        }
                        self.pending.drain(..at + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                        true
                    }
                    None => {
                        let safe = self.pending.len().saturating_sub(self.delimiter.len());
                        if let Some((_, value)) = kept {
                            value.extend_from_slice(&self.pending[..safe]);
                            if value.len() > MAX_VALUE_BYTES {
                                return Err(FormError::Value);
                            }
                        }
                        self.pending.drain(..safe);
                        false
                    }
                },
                // After the closing delimiter only a line break may follow: an epilogue
                // would let the delimiter go upstream before the held end.
                State::Done => {
                    if !b"\r\n".starts_with(&self.pending) {
                        return Err(FormError::Epilogue);
                    }
                    false
                }
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The fields read, once the whole form has been fed.
    pub fn finish(self) -> Result<BTreeMap<String, String>, FormError> {
        match self.state {
            State::Done => Ok(self.fields),
            _ => Err(FormError::Truncated),
        }
    }

    /// A part's headers: the name to keep its value under, when it is a field we read.
    fn read_headers(&self, block: &[u8]) -> Result<Option<String>, FormError> {
        let block = std::str::from_utf8(block).map_err(|_| FormError::PartHeaders)?;
        // Lines end in CRLF only, and are never folded: parsers that also end a line at a bare
        // LF (or CR), or unfold, would see other headers than these.
        let bare_break = block.replace("\r\n", "").contains(['\r', '\n']);
        if bare_break
            || block
                .split("\r\n")
                .any(|line| line.starts_with([' ', '\t']))
        {
            return Err(FormError::PartHeaders);
        }
        let mut name = None;
        let mut file = false;
        let mut encoded = false;
        for line in block.split("\r\n") {
            let (header, value) = line.split_once(':').ok_or(FormError::PartHeaders)?;
            let header = header.trim();
            if header.eq_ignore_ascii_case("content-disposition") {
                if name.is_some() {
                    return Err(FormError::Ambiguous);
                }
                let (field, has_file) = disposition(value)?;
                name = Some(field);
                file = has_file;
            } else if header.eq_ignore_ascii_case("content-transfer-encoding") {
                encoded = !matches!(
                    value.trim().to_ascii_lowercase().as_str(),
                    "7bit" | "8bit" | "binary"
                );
            }
        }
        let Some(name) = name else {
            return Ok(None);
        };
        let loose = name.trim().to_ascii_lowercase();
        let read = READ_FIELDS.contains(&loose.as_str());
        if !read {
            return Ok(None);
        }
        // A read field in another spelling, as a file, or encoded: an upstream might read it
        // differently from us.
        if name != loose || file || encoded || self.fields.contains_key(&name) {
            return Err(FormError::Ambiguous);
        }
        Ok(Some(name))
    }
}

/// `form-data; name="model"; filename="a.wav"` → (`model`, whether it is a file).
fn disposition(value: &str) -> Result<(String, bool), FormError> {
    let mut parts = value.split(';');
    if !parts
        .next()
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err(FormError::PartHeaders);
    }
    let mut name = None;
    let mut file = false;
    for parameter in parts {
        let (key, raw) = parameter.split_once('=').ok_or(FormError::PartHeaders)?;
        let key = key.trim().to_ascii_lowercase();
        let raw = raw.trim();
        match key.as_str() {
            "name" => {
                let unquoted = raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or(raw);
                if name.is_some() || unquoted.contains(['"', '\\']) {
                    return Err(FormError::Ambiguous);
                }
                name = Some(unquoted.to_owned());
            }
            // RFC 5987 names could spell a read field in a way we do not decode.
            "name*" => return Err(FormError::Ambiguous),
            "filename" | "filename*" => file = true,
            _ => {}
        }
    }
    name.map(|name| (name, file)).ok_or(FormError::PartHeaders)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Drops all but the last `len - 1` bytes, which may begin a delimiter.
fn keep_tail(buffer: &mut Vec<u8>, len: usize) {
    let keep = len.saturating_sub(1);
    if buffer.len() > keep {
        buffer.drain(..buffer.len() - keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &str)], boundary: &str) -> Vec<u8> {
        let mut body = String::new();
        for (headers, value) in parts {
            body.push_str(&format!("--{boundary}\r\n{headers}\r\n\r\n{value}\r\n"));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        body.into_bytes()
    }

    fn scan(
        body: &[u8],
        boundary: &str,
        chunk: usize,
    ) -> Result<BTreeMap<String, String>, FormError> {
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
}
