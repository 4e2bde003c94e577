//! Errors of the web UI and API: each maps to a status and a clear message, shown as an
//! HTML page, or as `{"error": ...}` under `/api/` (see [`jsonify_api_errors`]). Only a
//! real server fault is a 500; bad input never is.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use askama::Template;

use crate::archive::ArchiveError;
use crate::catalog::CatalogError;
use logarchive_common::paths::PathError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    BadRequest(String),
    /// A page needs a login: the browser is sent to the login form.
    #[error("please log in")]
    LoginRequired { next: String },
    /// An API call without valid credentials.
    #[error("authentication required (session cookie or HTTP Basic)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("range not satisfiable: the file has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Marks an error response so the API layer can re-render it as JSON.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            WebError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::LoginRequired { next } = &self {
            let target = format!("/login?next={}", super::url_encode(next));
            return Redirect::to(&target).into_response();
        }
        if let WebError::Internal(message) = &self {
            tracing::error!("web request failed: {message}");
        }
        let status = self.status();
        let message = self.to_string();
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("error"),
            message: &message,
        };
        let body = page.render().unwrap_or_else(|_| "error".to_owned());
        let mut response = (status, Html(body)).into_response();
        if let WebError::Unauthorized = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"logarchive\", charset=\"UTF-8\""),
            );
        }
        if let WebError::RangeNotSatisfiable { size } = self
            && let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response.extensions_mut().insert(ErrorMessage(message));
        response
    }
}

/// Under `/api/`, error pages become `{"error": "..."}` with the same status and headers.
pub async fn jsonify_api_errors(response: Response) -> Response {
    let Some(ErrorMessage(message)) = response.extensions().get::<ErrorMessage>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Json(serde_json::json!({ "error": message })).into_response();
    let (json_parts, body) = body.into_parts();
    for (name, value) in &json_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

impl From<PathError> for WebError {
    fn from(err: PathError) -> Self {
        WebError::BadRequest(err.to_string())
    }
}

impl From<ArchiveError> for WebError {
    fn from(err: ArchiveError) -> Self {
        match err {
            ArchiveError::NotFound(path) => {
                WebError::NotFound(format!("{path}: no such file or folder"))
            }
            ArchiveError::NotADir(_) | ArchiveError::IsADir(_) => {
                WebError::BadRequest(err.to_string())
            }
            ArchiveError::Refused { .. } => WebError::Forbidden(err.to_string()),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl From<CatalogError> for WebError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Cursor => WebError::BadRequest(err.to_string()),
            CatalogError::Archive(archive) => archive.into(),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(err: askama::Error) -> Self {
        WebError::Internal(format!("template: {err}"))
    }
}
