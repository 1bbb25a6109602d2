//! An owned descriptor registered with the current tokio runtime: the
//! crate's one call of `AsyncFd::register_with_interest` (unsafe since
//! tokio 1.54, which deprecated `AsyncFd::new` for lacking I/O safety).
//! Used for a session's PTY master and for child processes' pidfds.

use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the current runtime for `interest`; it must be in
/// non-blocking mode for reads and writes through it.
///
/// # Errors
/// The runtime's reactor refused it (epoll_ctl(2): out of memory, or a
/// descriptor epoll cannot watch, such as a regular file).
///
/// # Panics
/// Outside a tokio runtime with I/O enabled.
#[expect(
    unsafe_code,
    reason = "AsyncFd::register_with_interest: `fd` is an OwnedFd moved in, so it stays open and the same descriptor for the AsyncFd's whole life, as required"
)]
pub fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd` and drops it last.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}
