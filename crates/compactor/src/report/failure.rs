//! A cleanup's error as the report keeps it: its text and its causes.

use std::any::Any;
use std::error::Error;
use std::fmt::{self, Display};
use std::sync::Arc;

/// The error a cleanup failed with, kept with its causes: the payload of
/// [`Outcome::Failed`](super::Outcome::Failed).
///
/// `Display` shows the whole chain, outermost first (`"flushing the WAL:
/// disk full (ENOSPC)"`); [`chain`](Self::chain) gives each message and
/// [`error`](Self::error) the error itself, for errors that carry their
/// sources: `std::io::Error` and boxed errors (`Box<dyn Error + Send +
/// Sync>`) are walked through `source()`; anyhow's and eyre's errors show
/// their chain in the text, as their alternate format (`{:#}`) writes it.
/// It reads as a string: it derefs to `str` and compares with one.
#[derive(Clone)]
pub struct CleanupError {
    text: Arc<str>,
    chain: Arc<[String]>,
    error: Option<Arc<dyn Error + Send + Sync>>,
    /// For a scope's task: the scope's report.
    scope: Option<super::ShutdownReport>,
}

// Read-only once made: a panic cannot leave it half changed.
impl std::panic::UnwindSafe for CleanupError {}
impl std::panic::RefUnwindSafe for CleanupError {}

impl CleanupError {
    /// The error a cleanup returned.
    pub(crate) fn new<E: Display + Send + 'static>(error: E) -> CleanupError {
        let any: Box<dyn Any + Send> = Box::new(error);
        let any = match any.downcast::<CleanupError>() {
            Ok(kept) => return *kept,
            Err(any) => any,
        };
        let any = match any.downcast::<Box<dyn Error + Send + Sync>>() {
            Ok(boxed) => return CleanupError::of_error(Arc::from(*boxed)),
            Err(any) => any,
        };
        let any = match any.downcast::<std::io::Error>() {
            Ok(io) => return CleanupError::of_error(Arc::new(*io)),
            Err(any) => any,
        };
        match any.downcast::<E>() {
            Ok(error) => CleanupError::from(format!("{:#}", *error)),
            Err(_) => unreachable!("the value is an E"),
        }
    }

    fn of_error(error: Arc<dyn Error + Send + Sync>) -> CleanupError {
        let mut chain = vec![error.to_string()];
        let mut cause = error.source();
        while let Some(e) = cause {
            chain.push(e.to_string());
            cause = e.source();
        }
        CleanupError {
            text: Arc::from(chain.join(": ")),
            chain: Arc::from(chain),
            error: Some(error),
            scope: None,
        }
    }

    /// The whole text, causes included.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Each message of the chain, outermost first: one for an error
    /// without sources.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        self.chain.iter().map(String::as_str)
    }

    /// For the task of a scope that did not end clean: the scope's own
    /// report, which the task's record takes.
    pub(crate) fn scope(&self) -> Option<&super::ShutdownReport> {
        self.scope.as_ref()
    }

    pub(crate) fn with_scope(mut self, report: super::ShutdownReport) -> CleanupError {
        self.scope = Some(report);
        self
    }

    /// This error as the cause of `outer`: the chain gains `outer` first.
    pub(crate) fn within(self, outer: String) -> CleanupError {
        let mut chain = vec![outer];
        chain.extend(self.chain.iter().cloned());
        CleanupError {
            text: Arc::from(chain.join(": ")),
            chain: Arc::from(chain),
            ..self
        }
    }

    /// The error itself, where it was one that carries its sources (an
    /// `std::io::Error`, a boxed error); `None` for text-only errors.
    pub fn error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.error.as_deref()
    }
}

impl From<String> for CleanupError {
    fn from(text: String) -> CleanupError {
        CleanupError {
            chain: Arc::from([text.clone()]),
            text: Arc::from(text),
            error: None,
            scope: None,
        }
    }
}

impl From<&str> for CleanupError {
    fn from(text: &str) -> CleanupError {
        CleanupError::from(text.to_owned())
    }
}

impl std::ops::Deref for CleanupError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl PartialEq for CleanupError {
    fn eq(&self, other: &CleanupError) -> bool {
        self.text == other.text
    }
}

impl Eq for CleanupError {}

impl PartialEq<str> for CleanupError {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for CleanupError {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl Error for CleanupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.as_deref().and_then(|e| e.source())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for CleanupError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
