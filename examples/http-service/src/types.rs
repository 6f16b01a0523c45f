//! What the HTTP layer and the plugin backends exchange, independent of
//! either side's generated bindings.

/// A request on its way to a plugin (the WIT `request` record).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A plugin's answer (the WIT `response` record), not yet validated as HTTP.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a call that reached a plugin did not produce an answer: the
/// response's status and its `x-plugin-error` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin returned an error (`result::err`): 500.
    Guest,
    /// The plugin trapped, ran past its deadline or hit its memory cap: 500.
    Trap,
    /// The version keeps crashing and is backing off, or no instance could
    /// be created: 503.
    Unavailable,
    /// Every worker busy and the queue full: 503.
    Overloaded,
    /// The plugin answered something that is not valid HTTP: 500.
    BadResponse,
    /// Anything else (a bug in the host): 500.
    Internal,
}

impl ErrorKind {
    /// The label value, and the `x-plugin-error` header of the response.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Guest => "guest",
            ErrorKind::Trap => "trap",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status the client gets.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Unavailable | ErrorKind::Overloaded => 503,
            _ => 500,
        }
    }
}

/// What a call came to.
#[derive(Debug)]
pub enum Outcome {
    /// The plugin answered (any status it chose).
    Answered(HttpResponse),
    /// No plugin of that name is loaded: 404, and no metrics series.
    NotLoaded,
    /// The call reached the plugin and failed.
    Failed { kind: ErrorKind, message: String },
}

/// One loaded version, as `/healthz` shows it.
#[derive(Debug, Clone)]
pub struct VersionGauge {
    pub name: String,
    pub version: String,
    pub current: bool,
}
