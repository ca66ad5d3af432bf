//! Errors: one [`Error`] enum for the whole crate, with OSE failure codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `Result` with netsvc's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// OSE netsvc failure codes, as carried by [`ServiceFailure::code`] and
/// returned by [`Error::code`].
///
/// The numbers are OSE's, so users of OSE find the codes they know.
/// [`SERVICE_BUSY`](codes::SERVICE_BUSY) and
/// [`PERMISSION_DENIED`](codes::PERMISSION_DENIED) are netsvc's own.
pub mod codes {
    /// The service is busy: its event queue was full when the request
    /// arrived, and the request was refused rather than queued (netsvc's own).
    pub const SERVICE_BUSY: i32 = 50;
    /// The service does not exist, was withdrawn, or its connection was lost.
    pub const SERVICE_UNAVAILABLE: i32 = 46;
    /// No reply arrived within the timeout.
    pub const REQUEST_TIMEOUT: i32 = 47;
    /// The request (or its reply) could not be decoded.
    pub const REQUEST_DECODING_ERROR: i32 = 54;
    /// The service has no such method.
    pub const METHOD_UNAVAILABLE: i32 = 55;
    /// The parameters of the request are not what the method takes.
    pub const PARAMETERS_INCORRECT: i32 = 56;
    /// The method failed: it returned an error or panicked.
    pub const APPLICATION_ERROR: i32 = 57;
    /// The request was dropped without an answer.
    pub const RESPONSE_ABORTED: i32 = 58;
    /// The caller's exchange link may not call that service: the
    /// credential the caller's process connected with does not allow it
    /// (see [`Credential::call`](crate::Credential::call)). The failure's
    /// origin is the service's name. netsvc's own.
    pub const PERMISSION_DENIED: i32 = 59;
}

/// Every error netsvc returns.
///
/// Each variant maps onto an OSE failure code through [`Error::code`]; see
/// [`codes`] for the numbers.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No reply arrived within the timeout (code 47).
    Timeout,
    /// The destination does not exist, was withdrawn, or its connection was
    /// lost while the call was pending (code 46).
    ServiceUnavailable(String),
    /// RPC: no server could be reached and the retries are exhausted (code 46).
    DeliveryFailure(String),
    /// RPC: the target cannot be used for this operation, for instance `call`
    /// on a fanout target (code 56).
    InvalidTarget(String),
    /// The service that handled the request failed it (the code it gave,
    /// one of [`codes`]).
    Service(ServiceFailure),
    /// RPC: the remote method returned an error (code 57).
    Remote(RemoteError),
    /// RPC: an endpoint accepted the namespace and version but has no such
    /// method, or the method is private (code 55).
    NoSuchMethod(String),
    /// RPC: no endpoint accepts the namespace and version (code 55).
    UnsupportedVersion(String),
    /// RPC: the requested version is above the client's version cap (code 56).
    VersionCap(String),
    /// A payload did not decode as the expected type (code 54).
    Decode(String),
    /// A value could not be encoded (code 56).
    Encode(String),
    /// An operating-system I/O error, for instance binding a socket (code 46).
    Io(std::io::Error),
    /// The dispatcher or the service has shut down (code 46).
    Closed,
    /// A setting or argument that cannot work, for instance a queue of
    /// capacity 0; the message names the setting and says why (code 56).
    InvalidArgument(String),
    /// A report could not be published within the publish timeout: as many
    /// of the publisher's reports as its queue holds were waiting for a
    /// subscriber to take them (code 50). The report was not published.
    Backpressure(String),
    /// The dispatcher thread failed (it panicked, or its poll failed): the
    /// message says how. Every call it held failed with [`Error::Closed`]
    /// (code 46).
    DispatcherFailed(String),
}

impl Error {
    /// The OSE failure code for this error (see [`codes`]).
    pub fn code(&self) -> i32 {
        match self {
            Error::Timeout => codes::REQUEST_TIMEOUT,
            Error::ServiceUnavailable(_)
            | Error::DeliveryFailure(_)
            | Error::Io(_)
            | Error::Closed
            | Error::DispatcherFailed(_) => codes::SERVICE_UNAVAILABLE,
            Error::InvalidTarget(_)
            | Error::VersionCap(_)
            | Error::Encode(_)
            | Error::InvalidArgument(_) => codes::PARAMETERS_INCORRECT,
            Error::Service(f) => f.code,
            Error::Remote(_) => codes::APPLICATION_ERROR,
            Error::NoSuchMethod(_) | Error::UnsupportedVersion(_) => codes::METHOD_UNAVAILABLE,
            Error::Decode(_) => codes::REQUEST_DECODING_ERROR,
            Error::Backpressure(_) => codes::SERVICE_BUSY,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("request timed out"),
            Error::ServiceUnavailable(s) => write!(f, "service unavailable: {s}"),
            Error::DeliveryFailure(s) => write!(f, "delivery failure: {s}"),
            Error::InvalidTarget(s) => write!(f, "invalid target: {s}"),
            Error::Service(s) => write!(f, "service failure: {s}"),
            Error::Remote(r) => write!(f, "remote error: {r}"),
            Error::NoSuchMethod(s) => write!(f, "no such method: {s}"),
            Error::UnsupportedVersion(s) => write!(f, "unsupported version: {s}"),
            Error::VersionCap(s) => write!(f, "version cap exceeded: {s}"),
            Error::Decode(s) => write!(f, "decode error: {s}"),
            Error::Backpressure(s) => write!(f, "backpressure: {s}"),
            Error::Encode(s) => write!(f, "encode error: {s}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Closed => f.write_str("dispatcher or service closed"),
            Error::InvalidArgument(s) => write!(f, "invalid argument: {s}"),
            Error::DispatcherFailed(s) => write!(f, "dispatcher failed: {s}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Service(s) => Some(s),
            Error::Remote(r) => Some(r),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ServiceFailure> for Error {
    fn from(f: ServiceFailure) -> Self {
        Error::Service(f)
    }
}

/// A request failed by the service that handled it (OSE's failure response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFailure {
    /// The failure code, one of [`codes`] or an application's own.
    pub code: i32,
    /// A short human-readable description.
    pub description: String,
    /// Where the failure arose: the name of the service that failed or
    /// refused the request (also for the library's own failures on its
    /// behalf, such as busy or a request dropped unanswered).
    pub origin: String,
    /// Further details, for instance a panic message.
    pub details: String,
}

/// The failure of a request refused because its service's queue is full.
pub(crate) fn busy(service: &str) -> ServiceFailure {
    ServiceFailure::new(codes::SERVICE_BUSY, "service busy")
        .with_origin(service)
        .with_details("the service's queue is full")
}

impl ServiceFailure {
    /// A failure with the given code and description, no origin or details.
    pub fn new(code: i32, description: impl Into<String>) -> Self {
        ServiceFailure {
            code,
            description: description.into(),
            origin: String::new(),
            details: String::new(),
        }
    }

    /// An application error (code 57) with the given description.
    pub fn application(description: impl Into<String>) -> Self {
        Self::new(codes::APPLICATION_ERROR, description)
    }

    /// Incorrect parameters (code 56) with the given description.
    pub fn parameters_incorrect(description: impl Into<String>) -> Self {
        Self::new(codes::PARAMETERS_INCORRECT, description)
    }

    /// The same failure with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The same failure with `origin` set.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.description)?;
        if !self.origin.is_empty() {
            write!(f, " (from {})", self.origin)?;
        }
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceFailure {}

/// RPC: an error raised by a remote method (oslo.messaging's `RemoteError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The type of the error, for instance `"ValueError"`.
    pub exc_type: String,
    /// The error's message.
    pub value: String,
    /// Lines describing where the error arose, innermost last.
    pub traceback: Vec<String>,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.value)
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_ose() {
        assert_eq!(Error::Timeout.code(), 47);
        assert_eq!(Error::ServiceUnavailable("x".into()).code(), 46);
        assert_eq!(Error::Closed.code(), 46);
        assert_eq!(Error::Decode("x".into()).code(), 54);
        assert_eq!(Error::NoSuchMethod("x".into()).code(), 55);
        assert_eq!(Error::InvalidArgument("x".into()).code(), 56);
        assert_eq!(Error::DispatcherFailed("x".into()).code(), 46);
        assert_eq!(
            Error::Service(ServiceFailure::new(58, "aborted")).code(),
            58
        );
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + std::error::Error + 'static>() {}
        check::<Error>();
    }
}
