use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fission_core::{ErrorBody, ErrorCode, StoreError, ValidationError};

/// Every failure of the API, classified; rendered once, in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Class, which decides the HTTP status.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// A 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::NotFound,
            message: message.into(),
        }
    }

    /// A 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::NameExists,
            message: message.into(),
        }
    }

    /// A 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::SizeLimitExceeded,
            message: message.into(),
        }
    }

    /// A 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(message = %self.message, "request failed");
        }
        let body = ErrorBody {
            code: self.code.wire_code(),
            message: self.message,
        };
        (status, axum::Json(body)).into_response()
    }
}
