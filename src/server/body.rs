//! Request bodies in and responses out: size limit, JSON/YAML/protobuf decoding, JSON responses,
//! `Status` errors and `Warning` headers.
use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::protobuf::{self, ProtobufError};
use super::status::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (as kube-apiserver: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Deepest nesting of mappings and sequences a YAML body may have. Checked on the raw text
/// before libyaml sees it: libyaml's scanner costs depth x tokens on nested flow collections, so
/// 400 KB of `[[[[` took minutes of CPU. JSON bodies (and patches) are held to serde_json's own
/// recursion limit of 128 while decoding; no Kubernetes object comes near either.
pub const MAX_YAML_DEPTH: usize = 100;

/// How long a client may take to send a request body (slow-body clients are cut off with 408).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A body at least this big leaves enough freed memory behind to be worth giving back.
const BIG_BODY: usize = 256 * 1024;

/// Big bodies read since [`take_big_bodies`] last looked.
static BIG_BODIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Notes that a big body was read or its request done with, so freed memory is worth giving
/// back.
pub fn note_big_body() {
    BIG_BODIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many big bodies were read since the last call (for the memory release task).
pub fn take_big_bodies() -> usize {
    BIG_BODIES.swap(0, std::sync::atomic::Ordering::Relaxed)
}

/// The body read timeout of a request, when the connection sets one (as a request extension).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn bytes_response(content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// `Warning: 299 - "..."` headers, one per warning.
pub fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - {:?}", w);
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// The whole body, refused with 413 past [`MAX_BODY`] and with 408 when it has not arrived
/// within `timeout`.
pub async fn read_body(
    body: Incoming,
    content_length: Option<u64>,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| ApiError::body_timeout(timeout))?;
    match collected {
        Ok(c) => {
            let bytes = c.to_bytes();
            if bytes.len() >= BIG_BODY {
                note_big_body();
            }
            Ok(bytes)
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            note_big_body();
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

/// An object body in JSON, YAML or (for the one message kubectl sends so) protobuf.
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if content_type.contains("application/vnd.kubernetes.protobuf") {
        return protobuf::decode(body).map_err(|e| match e {
            ProtobufError::Malformed => ApiError::bad_request(e.to_string()),
            ProtobufError::Unsupported(_) => ApiError::unsupported_media(e.to_string()),
        });
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unsupported format {content_type:?}: this server accepts application/json and application/yaml"
        )));
    }
    let v: Value = if content_type.contains("yaml") {
        if let Err(depth) = yaml_depth_within(body, MAX_YAML_DEPTH) {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML: nesting deeper than {MAX_YAML_DEPTH} levels (at least {depth})"
            )));
        }
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks, without parsing, that the flow collections (`[`, `{`) of a YAML text nest at most
/// `max` deep; `Err(depth)` with the depth reached otherwise. Comments, block scalars (`|`, `>`)
/// and quoted scalars that close on their line are skipped, so brackets in strings do not count.
/// The scan errs towards counting: a quote only opens a string where YAML lets a scalar start (at
/// a line start or after `- `, `? `, `: ` outside a flow; after `[`, `{`, `,`, `: ` inside one)
/// and only when it closes on the same line, so text that libyaml reads as a flow collection
/// never hides inside what this scan takes for a string or a comment.
pub fn yaml_depth_within(text: &[u8], max: usize) -> Result<(), usize> {
    let mut depth = 0usize;
    // where a scalar (so a quote) may start
    let mut token_start = true;
    let mut line_indent = 0usize;
    let mut at_line_start = true;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        // found only where needed: a scan per byte would be quadratic on a one-line bomb
        let line_end = |i: usize| {
            text[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |p| i + p)
        };
        if at_line_start {
            at_line_start = false;
            line_indent = text[i..].iter().take_while(|&&b| b == b' ').count();
            if depth == 0 {
                token_start = true;
            }
            i += line_indent;
            continue;
        }
        let next = text.get(i + 1).copied();
        let blank_after = next.is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        let blank_before = i == 0 || matches!(text[i - 1], b' ' | b'\t' | b'\n');
        match c {
            b'\n' => at_line_start = true,
            b' ' | b'\t' | b'\r' => {}
            b'#' if blank_before => {
                i = line_end(i);
                continue;
            }
            b'\'' | b'"' if token_start => match quoted_end(&text[i..line_end(i)], c) {
                Some(len) => {
                    i += len;
                    token_start = false;
                    continue;
                }
                // a string that goes on past its line is counted through, as if plain
                None => token_start = false,
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(depth);
                }
                token_start = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                token_start = false;
            }
            b',' => token_start = depth > 0,
            b':' if blank_after => token_start = true,
            b'-' | b'?' if blank_after => token_start = token_start && (depth == 0 || c == b'?'),
            b'|' | b'>'
                if token_start && depth == 0 && block_scalar_header(&text[i + 1..line_end(i)]) =>
            {
                // the block scalar's lines: blank or indented deeper than the line opening it
                i = line_end(i);
                while i < text.len() {
                    let line = &text[i + 1..];
                    let indent = line.iter().take_while(|&&b| b == b' ').count();
                    let blank = line.get(indent).is_none_or(|&b| b == b'\n' || b == b'\r');
                    if !(blank || indent > line_indent) || line.is_empty() {
                        break;
                    }
                    i += 1 + line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
                }
                continue;
            }
            _ => token_start = false,
        }
        i += 1;
    }
    Ok(())
}

/// The length of the quoted scalar at the start of `line` (opened by `quote`), closing quote
/// included; None when it does not close on this line.
fn quoted_end(line: &[u8], quote: u8) -> Option<usize> {
    let mut j = 1;
    while j < line.len() {
        match line[j] {
            b'\\' if quote == b'"' => j += 2,
            b'\'' if quote == b'\'' && line.get(j + 1) == Some(&b'\'') => j += 2,
            b if b == quote => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Whether what follows `|` or `>` on its line makes it a block scalar header: indentation and
/// chomping indicators, then nothing but blanks or a comment.
fn block_scalar_header(rest: &[u8]) -> bool {
    let indicators = rest
        .iter()
        .take_while(|b| matches!(b, b'+' | b'-' | b'0'..=b'9'))
        .count();
    let tail = &rest[indicators..];
    let body = tail
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map(|p| &tail[p..]);
    match body {
        None => true,
        Some(b) => b[0] == b'#' && tail.len() > b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str) -> bool {
        yaml_depth_within(text.as_bytes(), 3).is_ok()
    }

    #[test]
    fn yaml_nesting_is_counted_outside_strings_comments_and_block_scalars() {
        let cases = [
            ("a: [[[1]]]\n", true),
            ("a: [[[[1]]]]\n", false),
            ("a: {b: {c: [d]}}\n", true),
            ("a: {b: {c: [[d]]}}\n", false),
            // brackets in strings, comments and block scalars
            ("a: \"[[[[\"\n", true),
            ("a: '[[[[ it''s'\n", true),
            ("a: [\"[[[[\", '{{{{']\n", true),
            ("a: 1 # [[[[\n", true),
            ("a: |\n  [[[[\n  \"\nb: [1]\n", true),
            ("- >-\n    {{{{\n- x\n", true),
            // a quote that does not close on its line hides nothing
            ("a: \"x\n  [[[[\"\n", false),
            // mid-scalar quotes are not strings: what follows them counts
            ("a: b - \"c\nd: [[[[1]]]]\n", false),
            ("[a\n\"[[[[\"]\n", false),
            ("a: it's [[[[\n", false),
            // a block scalar ends at a line indented no deeper than its own
            ("a: |\n  x\nb: [[[[1]]]]\n", false),
        ];
        for (text, ok) in cases {
            assert_eq!(depth_ok(text), ok, "{text:?}");
        }
    }

    #[test]
    fn hostile_yaml_is_refused_quickly() {
        let start = std::time::Instant::now();
        let flow = format!("a: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
        let maps = format!("{}1{}\n", "{\"a\":".repeat(80_000), "}".repeat(80_000));
        for bomb in [flow, maps] {
            let e = parse_body("application/yaml", bomb.as_bytes()).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains("nesting deeper than"), "{}", e.message);
        }
        // a billion laughs: serde_yaml bounds the repetition of aliases
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = parse_body("application/yaml", laughs.as_bytes()).unwrap_err();
        assert_eq!(e.code, 400);
        // block nesting on one line and deep JSON: the decoders' recursion limits
        let dashes = format!("{}x\n", "- ".repeat(150_000));
        assert_eq!(
            parse_body("application/yaml", dashes.as_bytes())
                .unwrap_err()
                .code,
            400
        );
        let json = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(
            parse_body("application/json", json.as_bytes())
                .unwrap_err()
                .code,
            400
        );
        // unoptimised build on a shared machine: minutes before, well under a second now
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}
