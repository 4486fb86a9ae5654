//! How data-plane failures become HTTP answers, in one place: every refusal is a JSON body
//! `{"error": "...", "reason": "..."}` with a status that tells the caller whether to retry.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};

use crate::activator::ActivationError;
use crate::queue_proxy::breaker::Overflow;
use crate::queue_proxy::drain::Draining;

/// The header that carries a refusal's reason code, so that a proxy in front (the activator) can
/// tell a refusal of kinetic's from the function's own answer without reading the body.
pub const REASON_HEADER: &str = "kinetic-refusal";

/// A refusal with its status, a stable reason code and a message for people.
pub fn refusal(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "reason": reason }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(reason) {
        response.headers_mut().insert(REASON_HEADER, value);
    }
    response
}

/// Maps an error from the data-plane stack to its answer.
pub fn error_response(error: &tower::BoxError) -> Response<Body> {
    if let Some(overflow) = error.downcast_ref::<Overflow>() {
        let mut response = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!("{overflow}; retry later"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        return refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the function did not answer within the revision's timeoutSeconds",
        );
    }
    if let Some(draining) = error.downcast_ref::<Draining>() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            &draining.to_string(),
        );
    }
    if let Some(activation) = error.downcast_ref::<ActivationError>() {
        let status = match activation {
            ActivationError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ActivationError::QueueFull { .. }
            | ActivationError::Gone { .. }
            | ActivationError::CannotStart { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = refusal(status, activation.reason(), &activation.to_string());
        if matches!(activation, ActivationError::QueueFull { .. }) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return response;
    }
    if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        tracing::debug!(%error, "Forwarding to an instance failed.");
        return refusal(
            StatusCode::BAD_GATEWAY,
            "upstream",
            "the function's instance could not be reached or closed the connection",
        );
    }
    tracing::warn!(%error, "Unexpected data-plane error.");
    refusal(
        StatusCode::BAD_GATEWAY,
        "internal",
        "the request could not be forwarded",
    )
}
