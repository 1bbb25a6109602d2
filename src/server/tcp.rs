//! A TCP stream tuned for SSH's small, latency-bound packets.
//!
//! TCP_NODELAY stops our own small writes (replies, keystroke echo) from
//! waiting behind Nagle's algorithm. The other half is the client's Nagle:
//! OpenSSH sets TCP_NODELAY only once an interactive session starts, so
//! during the handshake a client's second small packet in a row waits until
//! its first is acknowledged. Linux delays that ACK by up to 40 ms when the
//! server has nothing to send back, which is the case after the client's
//! KEXINIT (the server sent its own already): measured, the client's
//! KEX_ECDH_INIT then arrives ~35 ms late on about a third of logins. So
//! for the first [`QUICKACK_READS`] reads the stream acknowledges at once
//! (TCP_QUICKACK, tcp(7)); after that the kernel's normal policy (ACKs
//! ride on replies) saves packets on slow links. It also notes the
//! client's identification line for the log (`identification`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::identification::Recorder;

/// Reads after accept that are acknowledged at once: the handshake,
/// authentication and the channel's requests fit in this many.
pub const QUICKACK_READS: u32 = 32;

/// An accepted connection with TCP_NODELAY set and quick ACKs for its
/// first [`QUICKACK_READS`] reads.
pub struct Tuned {
    stream: TcpStream,
    quickack_reads: u32,
    identification: Recorder,
}

impl Tuned {
    /// Wraps `stream`, setting TCP_NODELAY and, when given, TCP_USER_TIMEOUT
    /// (tcp(7)): data that stays unacknowledged, or unsent behind a zero
    /// window, for `user_timeout` ends the connection. That is how a
    /// vanished client is noticed while output flows: russh's keepalive
    /// timer cannot fire while a write to a full send queue waits. A
    /// socket option that cannot be set is logged at debug level and
    /// otherwise ignored.
    pub fn new(stream: TcpStream, user_timeout: Option<Duration>) -> Tuned {
        // russh applies `Config::nodelay` only in its own accept loop.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "setting TCP_NODELAY failed");
        }
        if let Some(timeout) = user_timeout
            && let Err(error) = SockRef::from(&stream).set_tcp_user_timeout(Some(timeout))
        {
            tracing::debug!(%error, "setting TCP_USER_TIMEOUT failed");
        }
        Tuned {
            stream,
            quickack_reads: QUICKACK_READS,
            identification: Recorder::default(),
        }
    }

    /// The client's identification string, once it has been read.
    pub fn identification(&self) -> Arc<OnceLock<String>> {
        self.identification.seen()
    }

    /// A second handle on the same socket that can shut it down while
    /// russh owns the stream (see [`Closer`]); `None` if the fd cannot be
    /// duplicated (EMFILE), logged at debug level.
    pub fn closer(&self) -> Option<Closer> {
        use std::os::fd::AsFd;
        match self.stream.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(Closer(socket2::Socket::from(fd))),
            Err(error) => {
                tracing::debug!(%error, "duplicating the socket failed");
                None
            }
        }
    }
}

/// Shuts a connection's socket down from outside: russh runs a connection
/// on a task of its own that cannot be cancelled, and a DISCONNECT it is
/// asked to send waits behind an unfinished key exchange. After
/// `shutdown(2)` its reads see EOF and its writes fail, so it ends and
/// closes its side. Holds one fd until dropped.
pub struct Closer(socket2::Socket);

impl Closer {
    /// Shuts both directions down and lets go of the duplicate fd.
    pub fn shut(self) {
        if let Err(error) = self.0.shutdown(std::net::Shutdown::Both) {
            tracing::debug!(%error, "shutting the socket down failed");
        }
    }
}

impl AsyncRead for Tuned {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if !this.identification.done() {
            this.identification.observe(&buf.filled()[before..]);
        }
        if this.quickack_reads > 0 && buf.filled().len() > before {
            this.quickack_reads -= 1;
            // Not sticky: the kernel may leave quickack mode after any
            // segment, so it is asked again after every read.
            if let Err(error) = SockRef::from(&this.stream).set_tcp_quickack(true) {
                tracing::debug!(%error, "setting TCP_QUICKACK failed");
                this.quickack_reads = 0;
            }
        }
        read
    }
}

impl AsyncWrite for Tuned {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn data_passes_both_ways_with_nodelay_and_a_bounded_quickack_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let timeout = Duration::from_secs(24);
        let mut server = Tuned::new(listener.accept().await.unwrap().0, Some(timeout));
        assert!(server.stream.nodelay().unwrap());
        let user_timeout = SockRef::from(&server.stream).tcp_user_timeout();
        assert_eq!(user_timeout.unwrap(), Some(timeout));

        let mut buf = [0u8; 5];
        for _ in 0..QUICKACK_READS + 3 {
            client.write_all(b"hello").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
        }
        assert_eq!(server.quickack_reads, 0, "quick ACKs stop after the budget");

        server.write_all(b"world").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
    }
}
