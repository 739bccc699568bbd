//! Async invocation (beyond Fission): a request to a function route with
//! `X-Fission-Async: true` is recorded in the durable queue and answered at once with
//! `202 Accepted` and the job id; the queue's worker calls the function later, through this
//! router, without the header.

use std::sync::Arc;

use fission_core::async_calls::{ASYNC_HEADER, ASYNC_ID_HEADER, CALLBACK_HEADER};
use fission_core::{AsyncCalls, AsyncRequest};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{CollectError, RouterBody, collect_limited};
use crate::respond;

/// Whether the caller asked for a background call.
pub(crate) fn wants_async<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(ASYNC_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Queue `req` and answer 202 with the job id (or why it could not be queued).
pub(crate) async fn enqueue(
    queue: Arc<dyn AsyncCalls>,
    req: Request<Incoming>,
    max_body_bytes: usize,
) -> Response<RouterBody> {
    let (parts, body) = req.into_parts();
    let body = match collect_limited(body, max_body_bytes).await {
        Ok(b) => b,
        Err(CollectError::TooLarge) => {
            return respond::payload_too_large(max_body_bytes, None);
        }
        Err(CollectError::Client(e)) => {
            return respond::internal(&format!("cannot read the request body: {e}"));
        }
    };
    let callback = parts
        .headers
        .get(CALLBACK_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k != ASYNC_HEADER && k != CALLBACK_HEADER && k != "host" && k != "content-length"
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let job = AsyncRequest {
        method: parts.method.as_str().to_owned(),
        uri,
        headers,
        body: body.to_vec(),
        callback,
    };
    match queue.enqueue(job).await {
        Ok(id) => {
            let mut resp = Response::new(RouterBody::full(
                serde_json::json!({ "id": id }).to_string(),
            ));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert(ASYNC_ID_HEADER, v);
            }
            resp
        }
        Err(e) => respond::internal(&e.to_string()),
    }
}
