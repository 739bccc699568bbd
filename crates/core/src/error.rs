use serde::{Deserialize, Serialize};

/// Fission's error classes (`pkg/error` codes). Every server error maps to one, and the one
/// place per server that renders errors turns it into the HTTP status of Fission's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Anything unexpected (500).
    Internal,
    /// Not allowed (403).
    NotAuthorized,
    /// The object or route does not exist (404).
    NotFound,
    /// Name taken, or a conflicting write (409).
    NameExists,
    /// Bad input (400).
    InvalidArgument,
    /// Body too large (413).
    SizeLimitExceeded,
    /// Back off and retry (429).
    TooManyRequests,
    /// Checksum mismatch (400).
    ChecksumFailed,
    /// Timed out (504).
    RequestTimeout,
}

impl ErrorCode {
    /// The numeric code Fission puts in `{"code": …}`.
    pub fn wire_code(self) -> u16 {
        match self {
            Self::Internal => 0,
            Self::NotAuthorized => 1,
            Self::NotFound => 2,
            Self::NameExists => 3,
            Self::InvalidArgument => 4,
            Self::ChecksumFailed => 7,
            Self::SizeLimitExceeded => 8,
            Self::RequestTimeout => 9,
            Self::TooManyRequests => 10,
        }
    }

    /// The HTTP status this class is served with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Internal => 500,
            Self::NotAuthorized => 403,
            Self::NotFound => 404,
            Self::NameExists => 409,
            Self::InvalidArgument | Self::ChecksumFailed => 400,
            Self::SizeLimitExceeded => 413,
            Self::TooManyRequests => 429,
            Self::RequestTimeout => 504,
        }
    }

    /// The class a received HTTP status stands for (what Fission's clients do).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => Self::InvalidArgument,
            401 | 403 => Self::NotAuthorized,
            404 => Self::NotFound,
            409 => Self::NameExists,
            413 => Self::SizeLimitExceeded,
            429 => Self::TooManyRequests,
            408 | 504 => Self::RequestTimeout,
            _ => Self::Internal,
        }
    }
}

/// The JSON error body of the controller API: `{"code": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Fission error code (see [`ErrorCode::wire_code`]).
    pub code: u16,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
}
