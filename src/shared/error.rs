//! Errors of the shared tier. None of them ever fails a pull: `core` falls back to the
//! upstream and counts them.

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("shared tier: {op} {key}: {message}")]
    Request { op: &'static str, key: String, message: String },
    #[error("shared tier: {key}: no data within {after:?}")]
    Timeout { key: String, after: Duration },
    #[error("shared tier: reading {key}")]
    Body {
        key: String,
        #[source]
        source: aws_sdk_s3::primitives::ByteStreamError,
    },
    #[error("shared tier: {key} is larger than {limit} bytes")]
    TooLarge { key: String, limit: usize },
    #[error("shared tier: {key} is not a valid record: {message}")]
    BadRecord { key: String, message: String },
    #[error("shared tier: {key} vanished right after it was written")]
    Missing { key: String },
    #[error("shared tier: {key} read back different bytes than were written")]
    Mismatch { key: String },
    #[error("shared tier: cannot read {path} for upload")]
    Source {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SharedError {
    /// An SDK failure, with its whole cause chain as text (the SDK's own top-level message
    /// is only "service error" or "dispatch failure").
    pub fn sdk<E, R>(op: &'static str, key: &str, e: SdkError<E, R>) -> SharedError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        SharedError::Request { op, key: key.to_string(), message: DisplayErrorContext(&e).to_string() }
    }
}

/// A 404 that the SDK could not model as `NoSuchKey` (HEAD answers carry no error body).
pub fn is_not_found<E, R>(e: &SdkError<E, R>) -> bool
where
    R: HttpStatus,
{
    e.raw_response().is_some_and(|r| r.status_code() == 404)
}

/// The status of a raw SDK response.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
