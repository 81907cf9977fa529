//! The one error type of the history store: an I/O failure, or a file that is not what it
//! claims to be (never served).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a store operation failed.
#[derive(Debug)]
pub enum LsmError {
    /// The operating system refused: `what` names the step and the file.
    Io { what: String, source: io::Error },
    /// A file failed validation (truncated, bit-flipped, half-written, wrong format, missing).
    Corrupt { file: PathBuf, reason: String },
}

impl LsmError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        LsmError::Io { what: what.into(), source }
    }

    pub fn corrupt(file: &Path, reason: impl Into<String>) -> Self {
        LsmError::Corrupt { file: file.to_path_buf(), reason: reason.into() }
    }

    /// True for validation failures (as opposed to I/O errors).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, LsmError::Corrupt { .. })
    }
}

impl fmt::Display for LsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LsmError::Io { what, source } => write!(f, "{what}: {source}"),
            LsmError::Corrupt { file, reason } => {
                write!(f, "corrupt store file {}: {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for LsmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LsmError::Io { source, .. } => Some(source),
            LsmError::Corrupt { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, LsmError>;
