//! How [`super`]'s messages travel on a session's Unix socket.
//!
//! A connection opens with a *preamble* from each side, in a format that never
//! changes: the 6 bytes `KEEPSH`, the protocol version (`u16`, big-endian),
//! then a `u32` length (big-endian) and that many bytes of JSON [`Hello`]
//! (the session says who it is; the front sends length 0). Because the
//! preamble is version-independent, a front that meets a session of another
//! version can still say which session it is and what it speaks.
//!
//! After the preambles come *frames*: a `u32` length (big-endian, at most
//! [`MAX_FRAME`] bytes) and one postcard-encoded message. The front's first
//! frame is an [`Open`](super::Open), which decides the connection's role
//! and so the type of every frame after it, each way:
//!
//! | role | front → session | session → front |
//! | --- | --- | --- |
//! | `Control` | [`ControlRequest`](super::ControlRequest) | [`SessionInfo`](super::SessionInfo), now and on every change |
//! | `Attach` | [`AttachInput`](super::AttachInput) | one [`AttachReply`](super::AttachReply), then [`Event`](super::Event)s |
//! | `History` | nothing | [`Bytes`](bytes::Bytes) of the answer, then close |
//! | `Signal` | nothing | nothing |
//!
//! Closing an attachment's connection, from either side, detaches it.
//! Bump [`VERSION`] whenever the encoding of any message changes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{SessionId, SessionName};

/// The first bytes of every preamble.
pub const MAGIC: &[u8; 6] = b"KEEPSH";
/// The version of the frames' encoding this build speaks.
pub const VERSION: u16 = 5;
/// The largest frame, in bytes: an output chunk (≤ 32 KiB) or a
/// [`SessionInfo`](super::SessionInfo) is far smaller; anything bigger is corruption.
pub const MAX_FRAME: usize = 1024 * 1024;
/// The largest [`Hello`], in bytes.
const MAX_HELLO: usize = 64 * 1024;

/// Who a session is, as its preamble says (JSON, version-independent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The session's id.
    pub id: SessionId,
    /// The SSH login name that owns it.
    pub owner: String,
    /// Its name when the connection opened.
    pub name: SessionName,
}

/// What went wrong on a session socket.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer's first bytes are not a keepsh preamble.
    #[error("not a keepsh session protocol peer (bad preamble)")]
    BadPreamble,
    /// The peer speaks another version of the frames.
    #[error("the peer speaks session protocol v{theirs}; this keepsh speaks v{VERSION}")]
    Version {
        /// The peer's version.
        theirs: u16,
        /// The peer's [`Hello`], if it sent one.
        hello: Option<Box<Hello>>,
    },
    /// A length prefix above [`MAX_FRAME`] (or a hello above 64 KiB).
    #[error("a frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The connection ended inside a preamble or a frame.
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    /// A frame that does not decode as a message of this version.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes this side's preamble; the session passes its [`Hello`].
///
/// # Errors
/// [`WireError::Io`].
pub async fn write_preamble<W: AsyncWrite + Unpin>(
    writer: &mut W,
    hello: Option<&Hello>,
) -> Result<(), WireError> {
    let json = match hello {
        Some(hello) => serde_json::to_vec(hello).map_err(|e| WireError::Decode(e.to_string()))?,
        None => Vec::new(),
    };
    let mut buf = Vec::with_capacity(12 + json.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_be_bytes());
    buf.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(&json);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads the peer's preamble; returns its [`Hello`] (`None` from a front).
///
/// # Errors
/// [`WireError::BadPreamble`] for anything but a keepsh preamble,
/// [`WireError::Version`] for another version (with the peer's hello),
/// [`WireError::Truncated`] or [`WireError::Io`].
pub async fn read_preamble<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Hello>, WireError> {
    let mut head = [0u8; 12];
    read_exact(reader, &mut head).await?;
    if &head[..6] != MAGIC {
        return Err(WireError::BadPreamble);
    }
    let version = u16::from_be_bytes([head[6], head[7]]);
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > MAX_HELLO {
        return Err(WireError::TooLarge(len));
    }
    let mut json = vec![0u8; len];
    read_exact(reader, &mut json).await?;
    let hello = if json.is_empty() {
        None
    } else {
        Some(serde_json::from_slice::<Hello>(&json).map_err(|_| WireError::BadPreamble)?)
    };
    if version != VERSION {
        return Err(WireError::Version {
            theirs: version,
            hello: hello.map(Box::new),
        });
    }
    Ok(hello)
}

/// Writes one message as a frame.
///
/// # Errors
/// [`WireError::Io`]; [`WireError::TooLarge`] if the message encodes to
/// more than [`MAX_FRAME`] bytes.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), WireError> {
    let buf =
        postcard::to_extend(message, vec![0u8; 4]).map_err(|e| WireError::Decode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = buf;
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    writer.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer closed between frames.
///
/// # Errors
/// [`WireError::TooLarge`], [`WireError::Truncated`], [`WireError::Decode`]
/// or [`WireError::Io`].
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> Result<Option<T>, WireError> {
    let mut len = [0u8; 4];
    let first = reader.read(&mut len[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    read_exact(reader, &mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    read_exact(reader, &mut buf).await?;
    postcard::from_bytes(&buf)
        .map(Some)
        .map_err(|e| WireError::Decode(e.to_string()))
}

/// Whether `buffered` (bytes read ahead, e.g. a `BufReader`'s buffer)
/// starts with a whole frame, so that [`read_frame`] on it returns without
/// waiting for the peer.
pub fn holds_frame(buffered: &[u8]) -> bool {
    match buffered.get(..4) {
        Some(len) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            // An oversized length: read_frame fails at once, reading no more.
            len > MAX_FRAME || buffered.len() - 4 >= len
        }
        None => false,
    }
}

async fn read_exact<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(WireError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{
        AttachInput, AttachReply, AttachRequest, ControlRequest, Event, ExitStatus, Open, PtySize,
        Refusal, SignalName,
    };

    fn hello() -> Hello {
        Hello {
            id: SessionId::random(),
            owner: "alice".into(),
            name: SessionName::numbered(0),
        }
    }

    /// `messages` written as frames after a preamble read back equal, then
    /// a clean end.
    async fn round_trip<T>(messages: &[T])
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut buf = Vec::new();
        let hello = hello();
        write_preamble(&mut buf, Some(&hello)).await.unwrap();
        for m in messages {
            write_frame(&mut buf, m).await.unwrap();
        }
        let mut reader = &buf[..];
        assert_eq!(read_preamble(&mut reader).await.unwrap(), Some(hello));
        for m in messages {
            let got: T = read_frame(&mut reader).await.unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(read_frame::<_, T>(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn every_roles_messages_round_trip_in_the_wire_encoding() {
        round_trip(&[
            Open::Control,
            Open::Attach(AttachRequest {
                size: Some(PtySize::DEFAULT),
                read_only: true,
                from: Some(42),
                quiet: false,
                watch: false,
                tail: 0,
                pattern: Some("ok.*".into()),
            }),
            Open::History(crate::protocol::HistoryFormat::Raw),
            Open::Signal(SignalName::Usr2),
        ])
        .await;
        round_trip(&[
            ControlRequest::Rename {
                name: "w".parse().expect("name"),
            },
            ControlRequest::Kill,
        ])
        .await;
        round_trip(&[
            AttachInput::Typed(Bytes::from_static(b"ls\r")),
            AttachInput::Resize(PtySize::from_request(100, 30, PtySize::DEFAULT)),
        ])
        .await;
        round_trip(&[
            AttachReply::Attached { from: 7 },
            AttachReply::Refused(Refusal::OutsideBuffer {
                from: 1,
                start: 2,
                end: 3,
            }),
            AttachReply::Refused(Refusal::Pattern {
                reason: "unclosed group".into(),
            }),
        ])
        .await;
        round_trip(&[Bytes::from_static(b"history")]).await;
    }

    #[tokio::test]
    async fn events_keep_their_bytes_and_offsets() {
        let mut buf = Vec::new();
        let events = [
            Event::Output {
                offset: 3,
                data: Bytes::from_static(b"\x1b[1mhi"),
            },
            Event::Skipped { from: 5, to: 9 },
            Event::Exited(ExitStatus {
                code: 129,
                signal: Some("HUP".into()),
            }),
            Event::Matched,
        ];
        for e in &events {
            write_frame(&mut buf, e).await.unwrap();
        }
        let mut reader = &buf[..];
        let first: Event = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(first, Event::Output { offset: 3, data } if &data[..] == b"\x1b[1mhi"));
        let second: Event = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(second, Event::Skipped { from: 5, to: 9 }));
        let third: Event = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(third, Event::Exited(s) if s.code == 129));
    }

    #[tokio::test]
    async fn a_whole_frame_is_told_from_part_of_one() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &AttachInput::Typed(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        assert!(holds_frame(&buf));
        for cut in 0..buf.len() {
            assert!(!holds_frame(&buf[..cut]), "{cut}");
        }
        // An oversized length is "whole": read_frame reports it at once.
        assert!(holds_frame(&(MAX_FRAME as u32 + 1).to_be_bytes()));
    }

    #[tokio::test]
    async fn garbage_is_not_a_preamble() {
        let mut reader = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert!(matches!(
            read_preamble(&mut reader).await,
            Err(WireError::BadPreamble)
        ));
    }

    #[tokio::test]
    async fn another_version_is_named_with_the_peers_hello() {
        let json = serde_json::to_vec(&hello()).unwrap();
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&(VERSION + 1).to_be_bytes());
        buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
        buf.extend_from_slice(&json);
        let err = read_preamble(&mut &buf[..]).await.unwrap_err();
        let WireError::Version {
            theirs,
            hello: Some(h),
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*theirs, VERSION + 1);
        assert_eq!(h.owner, "alice");
        assert!(err.to_string().contains(&format!("v{}", VERSION + 1)));
    }

    #[tokio::test]
    async fn truncated_oversized_and_undecodable_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &AttachInput::Typed(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        let cut = &buf[..buf.len() - 2];
        assert!(matches!(
            read_frame::<_, AttachInput>(&mut &cut[..]).await,
            Err(WireError::Truncated)
        ));
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            read_frame::<_, AttachInput>(&mut &huge[..]).await,
            Err(WireError::TooLarge(_))
        ));
        let junk = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<_, Open>(&mut &junk[..]).await,
            Err(WireError::Decode(_))
        ));
    }
}
