//! The caller's path as data, and the one function that turns it into an upstream URL.
//!
//! A caller chooses the path after `/v1/`; the operator chooses the upstream's base URL. The
//! path must never be able to change which host gets the upstream key, or climb out of the
//! base path: `GET /v1/http://attacker/x` and `/v1/../admin` are data, not references to
//! resolve. So the path is never handed to a URL parser's `join`. [`ApiPath::parse`] splits it
//! into segments and refuses any that could mean something other than a name (empty, a dot
//! segment in any spelling, a scheme-like `:` first, `@`, `\`, control characters, an encoded
//! `/` or `\`, a malformed escape); [`upstream_url`] appends the survivors to the base path and
//! then checks the result, failing closed if scheme, host, port, credentials or path prefix
//! are not the base's.

use url::Url;

/// Why a caller's path was refused. Every reason is answered with a 404 (`Invalid URL`):
/// nothing about the path is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefused {
    Empty,
    EmptySegment,
    DotSegment,
    SchemeLike,
    ForbiddenCharacter,
    EncodedSeparator,
    BadEscape,
}

/// A path under the upstream's base URL (`files/file-abc/content`): segments that are names
/// and nothing else, still percent-encoded as the caller sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath(std::borrow::Cow<'static, str>);

impl ApiPath {
    /// Checks a caller's path (without the leading `/v1/`) segment by segment.
    ///
    /// The path kept is the canonical spelling: escapes of unreserved characters decoded
    /// (`%72uns` is `runs`), other escapes in upper case. So the allowlist and the limits see
    /// the path exactly as an upstream that decodes would, and what is forwarded is what was
    /// checked.
    pub fn parse(raw: &str) -> Result<Self, PathRefused> {
        if raw.is_empty() {
            return Err(PathRefused::Empty);
        }
        let mut canonical = String::with_capacity(raw.len());
        for (index, segment) in raw.split('/').enumerate() {
            check_segment(segment, index == 0)?;
            if index > 0 {
                canonical.push('/');
            }
            canonicalize(segment, &mut canonical);
        }
        Ok(Self(canonical.into()))
    }

    /// A path written in Tollgate's own code (`chat/completions`). The same rules hold; the
    /// unit tests check every constant, and [`upstream_url`] checks the result regardless.
    pub const fn fixed(path: &'static str) -> Self {
        Self(std::borrow::Cow::Borrowed(path))
    }

    /// One segment from a decoded value (a model id from a route parameter), percent-encoded
    /// and checked by the same rules.
    pub fn with_segment(prefix: &'static str, value: &str) -> Result<Self, PathRefused> {
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        // `byte_serialize` writes a space as `+`, which a path reads literally.
        let encoded = encoded.replace('+', "%20");
        Self::parse(&format!("{prefix}/{encoded}"))
    }

    /// The path, without a leading slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, still percent-encoded.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// Characters a segment may hold as they are: RFC 3986's unreserved and sub-delimiters, and
/// `:` outside the first segment (fine-tuned model ids contain colons). Everything else must be
/// percent-encoded, and some things may not appear even so.
fn allowed_raw(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
        )
}

fn check_segment(segment: &str, first: bool) -> Result<(), PathRefused> {
    if segment.is_empty() {
        return Err(PathRefused::EmptySegment);
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathRefused::BadEscape);
            };
            let value = high << 4 | low;
            if matches!(value, b'/' | b'\\') {
                return Err(PathRefused::EncodedSeparator);
            }
            decoded.push(value);
            index += 3;
        } else if allowed_raw(byte) {
            decoded.push(byte);
            index += 1;
        } else {
            return Err(PathRefused::ForbiddenCharacter);
        }
    }
    // Judged on the decoded bytes, so that no spelling (`%2e%2E`, `%40`, `%3A`) slips past.
    if decoded.iter().any(|b| b.is_ascii_control() || *b == b'@') {
        return Err(PathRefused::ForbiddenCharacter);
    }
    if decoded == b"." || decoded == b".." {
        return Err(PathRefused::DotSegment);
    }
    if first && decoded.contains(&b':') {
        return Err(PathRefused::SchemeLike);
    }
    Ok(())
}

/// Appends `segment` (already checked) with unreserved escapes decoded and the others in
/// upper case.
fn canonicalize(segment: &str, out: &mut String) {
    let bytes = segment.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(index + 1).and_then(|b| hex_value(*b)),
                bytes.get(index + 2).and_then(|b| hex_value(*b)),
            )
        {
            let value = high << 4 | low;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(value));
            } else {
                out.push_str(&format!("%{value:02X}"));
            }
            index += 3;
        } else {
            out.push(char::from(bytes[index]));
            index += 1;
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The upstream URL for `path` under `base`, with the caller's query. Fails closed: if the
/// built URL's scheme, host, port or credentials differ from the base's, or its path is not
/// exactly the base path followed by `path`, nothing is sent.
pub fn upstream_url(base: &Url, path: &ApiPath, query: Option<&str>) -> Result<Url, PathRefused> {
    let base_path = base.path().trim_end_matches('/');
    let wanted = format!("{base_path}/{}", path.as_str());
    let mut url = base.clone();
    url.set_path(&wanted);
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username() == base.username()
        && url.password() == base.password();
    if !same_origin || url.path() != wanted || !url.path().starts_with(&format!("{base_path}/")) {
        return Err(PathRefused::ForbiddenCharacter);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> Url {
        Url::parse(url).unwrap()
    }

    #[test]
    fn ordinary_paths_are_appended_to_the_base_path() {
        let base = base("https://api.openai.com/v1");
        for (raw, expected) in [
            ("files", "https://api.openai.com/v1/files"),
            (
                "files/file-abc/content",
                "https://api.openai.com/v1/files/file-abc/content",
            ),
            (
                "models/ft:gpt-4o-mini:org:custom:abc123",
                "https://api.openai.com/v1/models/ft:gpt-4o-mini:org:custom:abc123",
            ),
            ("files/a%20b", "https://api.openai.com/v1/files/a%20b"),
            ("threads/%72uns", "https://api.openai.com/v1/threads/runs"),
            (
                "files/%7efile%2a",
                "https://api.openai.com/v1/files/~file%2A",
            ),
        ] {
            let path = ApiPath::parse(raw).unwrap();
            assert_eq!(upstream_url(&base, &path, None).unwrap().as_str(), expected);
        }
        let with_slash = self::base("http://127.0.0.1:9000/openai/v1/");
        let url = upstream_url(
            &with_slash,
            &ApiPath::parse("files").unwrap(),
            Some("limit=2"),
        );
        assert_eq!(
            url.unwrap().as_str(),
            "http://127.0.0.1:9000/openai/v1/files?limit=2"
        );
        let bare = self::base("http://127.0.0.1:9000");
        let url = upstream_url(&bare, &ApiPath::parse("files").unwrap(), None);
        assert_eq!(url.unwrap().as_str(), "http://127.0.0.1:9000/files");
    }

    #[test]
    fn hostile_spellings_are_refused() {
        use PathRefused::*;
        for (raw, why) in [
            ("", Empty),
            ("http://evil/x", SchemeLike),
            ("HTTP:%2F%2Fevil", EncodedSeparator),
            ("http:", SchemeLike),
            ("x/", EmptySegment),
            ("/evil.com/x", EmptySegment),
            ("files//x", EmptySegment),
            ("..", DotSegment),
            ("files/../admin", DotSegment),
            ("files/%2e%2e/admin", DotSegment),
            ("files/%2E./admin", DotSegment),
            ("files/.%2E", DotSegment),
            ("./files", DotSegment),
            ("files/%2e", DotSegment),
            ("\\\\evil/x", ForbiddenCharacter),
            ("files\\..\\x", ForbiddenCharacter),
            ("files/%5c..", EncodedSeparator),
            ("files/%2F..%2Fx", EncodedSeparator),
            ("user@evil/x", ForbiddenCharacter),
            ("files/a%40b", ForbiddenCharacter),
            ("files/a%00", ForbiddenCharacter),
            ("files/a%0d%0aHost:%20evil", ForbiddenCharacter),
            ("files/a b", ForbiddenCharacter),
            ("files/%zz", BadEscape),
            ("files/%2", BadEscape),
            ("files/a?b", ForbiddenCharacter),
            ("files/a#b", ForbiddenCharacter),
            ("%68ttp:evil", SchemeLike),
        ] {
            assert_eq!(ApiPath::parse(raw), Err(why), "{raw:?}");
        }
    }

    #[test]
    fn a_route_parameter_is_one_segment() {
        assert_eq!(
            ApiPath::with_segment("models", "gpt-4o mini")
                .unwrap()
                .as_str(),
            "models/gpt-4o%20mini"
        );
        assert_eq!(
            ApiPath::with_segment("models", "ft:gpt-4o:org::x")
                .unwrap()
                .as_str(),
            "models/ft%3Agpt-4o%3Aorg%3A%3Ax"
        );
        for hostile in ["..", ".", "", "a/../b", "a\\b", "x@evil"] {
            assert!(
                ApiPath::with_segment("models", hostile).is_err(),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn the_builder_refuses_a_base_it_would_leave() {
        // A path that parse() never produces: the check after building still holds.
        let base = base("https://api.openai.com/v1");
        let sneaky = ApiPath(std::borrow::Cow::Borrowed("../admin"));
        assert!(upstream_url(&base, &sneaky, None).is_err());
        let sneaky = ApiPath(std::borrow::Cow::Borrowed("%2e%2e/admin"));
        assert!(upstream_url(&base, &sneaky, None).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Pieces attackers combine: schemes, separators in every spelling, dot segments,
        /// credentials, hosts and control characters.
        fn hostile_piece() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "http:",
                "HTTP:",
                "https:",
                "file:",
                "//",
                "/",
                "\\",
                "%5c",
                "%5C",
                "%2f",
                "%2F",
                "..",
                ".",
                "%2e",
                "%2E",
                "%2e%2e",
                ".%2e",
                "%2E.",
                "@",
                "%40",
                "evil.com",
                "127.0.0.1:1",
                "[::1]",
                "user:pass",
                "%00",
                "%0a",
                "\r\n",
                "\t",
                "?",
                "#",
                "%3f",
                "%23",
                ":",
                "%3a",
                "files",
                "x",
                "~",
                ";",
                "%",
                "%g0",
                " ",
                "é",
                "%c0%ae",
            ])
            .prop_map(str::to_owned)
        }

        fn bases() -> impl Strategy<Value = Url> {
            prop::sample::select(vec![
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/",
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/",
                "http://upstream.internal:9000/openai/deployments/v1",
            ])
            .prop_map(|b| Url::parse(b).unwrap())
        }

        fn assert_stays_under(base: &Url, raw: &str, query: Option<&str>) {
            let Ok(path) = ApiPath::parse(raw) else {
                return;
            };
            let Ok(url) = upstream_url(base, &path, query) else {
                return;
            };
            assert_eq!(url.scheme(), base.scheme(), "{raw:?}");
            assert_eq!(url.host_str(), base.host_str(), "{raw:?}");
            assert_eq!(url.port_or_known_default(), base.port_or_known_default());
            assert_eq!(url.username(), "", "{raw:?}");
            assert!(url.password().is_none(), "{raw:?}");
            let prefix = format!("{}/", base.path().trim_end_matches('/'));
            assert!(url.path().starts_with(&prefix), "{raw:?} -> {url}");
            for segment in url.path()[prefix.len()..].split('/') {
                let lower = segment.to_ascii_lowercase();
                assert!(
                    !matches!(
                        lower.as_str(),
                        "" | "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
                    ),
                    "{raw:?} -> {url}"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("TOLLGATE_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096)
            ))]

            #[test]
            fn arbitrary_paths_never_leave_the_base(base in bases(), raw in ".{0,64}", query in proptest::option::of("[ -~]{0,16}")) {
                assert_stays_under(&base, &raw, query.as_deref());
            }

            #[test]
            fn adversarial_paths_never_leave_the_base(base in bases(), pieces in prop::collection::vec(hostile_piece(), 1..8)) {
                let raw = pieces.concat();
                assert_stays_under(&base, &raw, None);
            }

            #[test]
            fn a_dot_segment_in_any_spelling_is_refused(prefix in "[a-z]{1,5}", dots in prop::sample::select(vec![".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.", ".%2E"]), suffix in "[a-z]{1,5}") {
                let raw = format!("{prefix}/{dots}/{suffix}");
                prop_assert_eq!(ApiPath::parse(&raw), Err(PathRefused::DotSegment));
            }
        }
    }
}
