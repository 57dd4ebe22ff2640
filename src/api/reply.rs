//! The API's responses: JSON bodies, and errors that say what is wrong and how to fix it,
//! with the same issues (file, field, message) `tidegate check` prints.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::config::ConfigErrors;

/// A refused request's response, boxed: it travels through `?` in every handler.
pub type Refusal = Box<Response<Full<Bytes>>>;

/// A response either way: handlers return their error responses through `?`.
pub type ApiResult = Result<Response<Full<Bytes>>, Refusal>;

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).expect("JSON values serialize");
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response carrying a version as its `ETag`.
pub fn versioned(
    status: StatusCode,
    value: &serde_json::Value,
    version: &str,
) -> Response<Full<Bytes>> {
    let mut response = json(status, value);
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Box::new(json(status, &json!({ "error": message.into() })))
}

/// `422` with every issue of a refused file.
pub fn invalid(errors: &ConfigErrors) -> Refusal {
    let issues: Vec<_> = errors
        .0
        .iter()
        .map(|issue| {
            json!({
                "file": issue.file.display().to_string(),
                "field": issue.field,
                "message": issue.message,
            })
        })
        .collect();
    let summary: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    Box::new(json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "error": format!("refused, nothing was written: {}", summary.join("; ")),
            "issues": issues,
        }),
    ))
}
