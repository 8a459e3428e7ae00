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

/// The whole body, refused with 413 past [`MAX_BODY`].
pub async fn read_body(body: Incoming, content_length: Option<u64>) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
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
