//! Extractors of the HTTP edge whose every rejection is an [`ApiError`]
//! (the documented `{"error":{"code","message"}}` body) with a precise
//! status and a message naming the parameter or field and the fix — never
//! axum's plain-text rejections.
//!
//! | rejection | status | code |
//! |---|---|---|
//! | body without `Content-Type: application/json` (or form type) | 415 | `unsupported_media_type` |
//! | body over `http.max_body_bytes` | 413 | `body_too_large` |
//! | body that is not JSON (syntax, cut short, empty) | 400 | `malformed_json` |
//! | JSON of the wrong shape (type, unknown or missing field) | 422 | `invalid_body` |
//! | form body that does not decode | 400 | `malformed_form` |
//! | query parameter that does not decode | 400 | `malformed_query` |
//! | path segment that does not decode | 400 | `malformed_path` |

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{read_body, require_json, ApiError, AppState};

/// A JSON body (`Content-Type: application/json`, at most `http.max_body_bytes`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, limit).await?;
        require_json(&parts.headers)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Decodes a JSON body: 400 when it is not JSON, 422 when its shape is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize(&mut *de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            return Err(json_error(bytes, &path, e.into_inner()));
        }
    };
    // Bytes after the document are a syntax error too.
    de.end().map_err(|e| json_error(bytes, ".", e))?;
    Ok(value)
}

fn json_error(bytes: &[u8], path: &str, e: serde_json::Error) -> ApiError {
    match e.classify() {
        serde_json::error::Category::Data if path == "." => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body: {e}; send an object of the documented shape"),
        ),
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("`{path}`: {e}; fix this field (see the API document) and resend"),
        ),
        serde_json::error::Category::Eof if bytes.iter().all(u8::is_ascii_whitespace) => {
            ApiError::bad_request("malformed_json", "the body is empty; send a JSON object")
        }
        _ => ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")),
    }
}

/// A query string decoded into `T`; 400 naming the parameter when it does not decode.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        decode_urlencoded(query.as_bytes()).map(ApiQuery).map_err(|(path, e)| {
            ApiError::bad_request("malformed_query", urlencoded_message("query parameter", path, e))
        })
    }
}

/// Path parameters decoded into `T`; 400 naming the segment when it does not decode.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::bad_request(
                "malformed_path",
                format!("{}; percent-encode the segment's UTF-8 text", e.kind()),
            )),
            Err(e) => Err(ApiError::internal(&e)),
        }
    }
}

/// An `application/x-www-form-urlencoded` body (at most `http.max_body_bytes`).
#[derive(Debug)]
pub struct ApiForm<T>(pub T);

impl<T, S> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, limit).await?;
        if !has_media_type(&parts.headers, "application/x-www-form-urlencoded") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the form as Content-Type: application/x-www-form-urlencoded",
            ));
        }
        decode_urlencoded(&bytes)
            .map(ApiForm)
            .map_err(|(path, e)| ApiError::bad_request("malformed_form", urlencoded_message("form field", path, e)))
    }
}

fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn decode_urlencoded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, (String, serde_urlencoded::de::Error)> {
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|e| (e.path().to_string(), e.into_inner()))
}

fn urlencoded_message(what: &str, path: String, e: serde_urlencoded::de::Error) -> String {
    if path == "." {
        // serde names the parameter itself for missing, duplicate and unknown ones.
        format!("{e}; fix the {what}s (see the API document) and resend")
    } else {
        format!("{what} `{path}`: {e}; fix its value (see the API document) and resend")
    }
}
