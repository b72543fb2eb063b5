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
mod tests;
