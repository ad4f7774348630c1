//! Errors of the stores and the queue, classified once so that the API can answer 503 and the worker
//! can decide between "retry later" and "give up".

use mongodb::error::{ErrorKind, WriteFailure};

/// An error from MongoDB or Redis, sorted by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (down, unreachable, timed out). Transient: retry later, answer 503.
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The queue (Redis) did not answer. Transient.
    #[error("the queue is unavailable: {0}")]
    QueueUnavailable(String),
    /// A unique index refused the write.
    #[error("duplicate key")]
    Duplicate,
    /// A stored document does not have the expected shape (a bug or a hand-edited document).
    #[error("corrupt document: {0}")]
    Corrupt(String),
    /// Anything else from the database.
    #[error("database error: {0}")]
    Database(String),
    /// Anything else from the queue.
    #[error("queue error: {0}")]
    Queue(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::DatabaseUnavailable(_) | StoreError::QueueUnavailable(_))
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        if is_duplicate_key(&e) {
            return StoreError::Duplicate;
        }
        match e.kind.as_ref() {
            ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
                StoreError::DatabaseUnavailable(short(&e.to_string()))
            }
            ErrorKind::BsonDeserialization(_) => StoreError::Corrupt(short(&e.to_string())),
            _ if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") => {
                StoreError::DatabaseUnavailable(short(&e.to_string()))
            }
            _ => StoreError::Database(short(&e.to_string())),
        }
    }
}

impl From<bson::error::Error> for StoreError {
    fn from(e: bson::error::Error) -> Self {
        StoreError::Corrupt(short(&e.to_string()))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            StoreError::QueueUnavailable(short(&e.to_string()))
        } else {
            StoreError::Queue(short(&e.to_string()))
        }
    }
}

impl From<apalis_redis::Error> for StoreError {
    fn from(e: apalis_redis::Error) -> Self {
        match e {
            apalis_redis::Error::Database(r) => r.into(),
            other => StoreError::Queue(short(&other.to_string())),
        }
    }
}

/// Whether a MongoDB error is a unique-index violation (code 11000), whatever operation raised it.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::Command(ce) => ce.code == 11000,
        ErrorKind::InsertMany(im) => {
            im.write_errors.as_ref().is_some_and(|errs| errs.iter().any(|we| we.code == 11000))
        }
        _ => false,
    }
}

/// Error texts from drivers can be long (topology dumps); keep what a person needs.
fn short(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
