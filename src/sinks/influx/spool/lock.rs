//! The spool folder's exclusive lock: two processes appending to one spool would interleave records.

use super::error::{SpoolError, io_err};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::Duration;

/// Takes the lock on `<dir>/lock`; held for as long as the returned file stays open.
/// `flock` is released by the kernel when the holder dies, even by SIGKILL, so a crash never leaves it stale.
pub(super) fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // A spool closed a moment ago in this process may still be releasing it (its fsync thread): retry briefly.
    for attempt in 0..20 {
        // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_err(&path)(e));
        }
        if attempt < 19 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(SpoolError {
        path,
        source: io::Error::new(
            io::ErrorKind::WouldBlock,
            "another caretaker process is using this spool; two daemons must not share a [state] dir",
        ),
    })
}
