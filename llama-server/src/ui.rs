//! The page at `GET /`: the live matrix in the browser. Its HTML, script and
//! style are plain files under `assets/`, embedded in the binary at compile
//! time (no CDN, no build step); the script reads `/api/v1/groups`,
//! `/api/v1/matrix` and `/api/v1/path`.

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/matrix.js");
const STYLE: &str = include_str!("../assets/matrix.css");

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small, and must follow the binary: revalidate every time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/<asset>`: the page's script and style.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "matrix.js" => Ok(page("text/javascript; charset=utf-8", SCRIPT)),
        "matrix.css" => Ok(page("text/css; charset=utf-8", STYLE)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no asset '{name}'"),
        )),
    }
}
