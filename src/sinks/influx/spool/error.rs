//! The spool's error: an I/O failure on one of its files, naming the file.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("spool {}: {source}", path.display())]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl SpoolError {
    /// Another process holds the spool.
    pub fn is_locked(&self) -> bool {
        self.source.kind() == io::ErrorKind::WouldBlock
    }
}

/// Turns an I/O error on `path` into a [`SpoolError`] naming it.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}
