//! The replication protocol's frames and messages (formats/replication.md).
//!
//! Both directions carry frames: a `u32` little-endian length of what
//! follows, a one-byte type, and the payload. Control messages are JSON
//! objects (small, versioned by the hello's `protocol` field, readable in
//! a packet dump); stream bytes travel in `Data` frames that carry their
//! offset in the stream, so a resumed transfer says where it starts
//! without a separate message.

use crate::stream::header::SnapshotRef;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame payload accepted (a hello listing many chunk digests is
/// the biggest message; data frames are at most [`DATA_FRAME`]).
pub const MAX_FRAME: u32 = 64 << 20;
/// Stream bytes per data frame.
pub const DATA_FRAME: usize = 256 << 10;
/// Bytes per chunk digest of a partly received stream.
pub const CHUNK: u64 = 1 << 20;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Destination → source: what the destination holds (JSON [`Hello`]).
    Hello = b'H',
    /// Source → destination: what will be sent (JSON [`Decision`]).
    Decision = b'D',
    /// Source → destination: stream bytes, a `u64` offset then the bytes.
    Data = b'S',
    /// Source → destination: the stream is complete (JSON [`End`]).
    End = b'E',
    /// Destination → source: the stream is received and durable (JSON [`Received`]).
    Received = b'R',
    /// Source → destination: apply it now (JSON `{}`).
    Commit = b'C',
    /// Destination → source: applied and recorded (JSON [`Ack`]).
    Ack = b'A',
    /// Either way: the sender gives up (JSON [`Failure`]).
    Failure = b'X',
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            b'H' => Kind::Hello,
            b'D' => Kind::Decision,
            b'S' => Kind::Data,
            b'E' => Kind::End,
            b'R' => Kind::Received,
            b'C' => Kind::Commit,
            b'A' => Kind::Ack,
            b'X' => Kind::Failure,
            _ => return None,
        })
    }
}

/// A snapshot as the protocol names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snap {
    /// Sequence number in its source.
    pub id: u64,
    /// Globally unique id, hex.
    pub uuid: String,
    /// When it was taken, RFC 3339 with nanoseconds.
    pub time: String,
    /// Seconds of `time` (exact, for identity).
    pub time_sec: i64,
    /// Nanoseconds of `time`.
    pub time_nsec: u32,
    /// Dump level.
    pub level: u8,
}

impl Snap {
    /// The protocol form of a snapshot identity.
    pub fn of(s: &SnapshotRef) -> Snap {
        Snap {
            id: s.id,
            uuid: crate::ids::hex(&s.uuid),
            time: s.time.rfc3339(),
            time_sec: s.time.sec,
            time_nsec: s.time.nsec,
            level: s.level,
        }
    }

    /// Back to a snapshot identity.
    pub fn to_ref(&self) -> Result<SnapshotRef> {
        Ok(SnapshotRef {
            id: self.id,
            uuid: uuid16(&self.uuid)?,
            time: crate::tree::Time {
                sec: self.time_sec,
                nsec: self.time_nsec.min(999_999_999),
            },
            level: self.level.min(9),
        })
    }
}

/// A 16-byte id from hex.
pub fn uuid16(s: &str) -> Result<[u8; 16]> {
    crate::ids::unhex(s)
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| anyhow!("'{s}' is not a 32-digit hex id"))
}

/// What a destination holds of one source.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Followed {
    /// The source's uuid (its VBN space), hex.
    pub source_uuid: String,
    /// The source path, as the streams gave it (lossy UTF-8).
    pub source_path: String,
    /// The snapshots held of it, oldest first; the last is the newest
    /// master, the one an increment must be based on.
    pub snapshots: Vec<Snap>,
}

/// A transfer the destination holds part (or all) of, not yet applied.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incoming {
    /// The stream's source uuid, hex.
    pub source_uuid: String,
    /// The snapshot it brings.
    pub snapshot: Snap,
    /// Its base.
    pub base: Option<Snap>,
    /// The stream id, hex.
    pub stream_id: String,
    /// Bytes held.
    pub bytes: u64,
    /// True when the whole stream was received (an [`End`] was seen).
    pub complete: bool,
    /// XXH3-128 (hex, little-endian) of each [`CHUNK`] of the bytes held;
    /// the last may be shorter.
    pub chunks: Vec<String>,
}

/// The destination's hello.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub protocol: u32,
    /// snapdump version of the destination.
    pub tool_version: String,
    /// The destination's replica id (a volume's uuid, a target's own id), hex.
    pub replica_id: String,
    /// "volume" or "target".
    pub kind: String,
    /// The destination path (for messages and the source's records).
    pub path: String,
    /// The sources it holds snapshots of.
    pub follows: Vec<Followed>,
    /// A cut transfer, if one is held.
    pub incoming: Option<Incoming>,
}

/// What the source will do.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A full image follows.
    Full,
    /// An increment from the destination's newest master follows.
    Increment,
    /// The held part of a cut transfer is continued.
    Resume,
    /// The held complete transfer is to be applied; nothing follows.
    Commit,
    /// The destination is up to date; nothing follows.
    Current,
    /// The destination holds what the source does not know; nothing follows.
    Conflict,
}

/// The source's decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    /// What happens next.
    pub action: Action,
    /// The stream's source uuid, hex.
    pub source_uuid: String,
    /// The base the stream is taken against (increment, resume).
    pub base: Option<Snap>,
    /// The snapshot the destination will hold after it.
    pub top: Option<Snap>,
    /// For people: why.
    pub reason: String,
}

/// End of the stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct End {
    /// Length of the whole stream.
    pub bytes: u64,
}

/// The destination has the whole stream, synced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    /// Length held.
    pub bytes: u64,
}

/// The destination applied the stream and recorded the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ack {
    /// The snapshot it now holds as its newest master.
    pub snapshot: Snap,
}

/// A side gives up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// One line: what went wrong and what to do.
    pub message: String,
}

/// One received frame.
pub enum Frame {
    /// A JSON message of the given kind.
    Message(Kind, Vec<u8>),
    /// Stream bytes at an offset.
    Data(u64, Vec<u8>),
}

/// The error a peer's Failure message becomes: the peer reported it
/// itself, so a `serve` whose source gave up does not print it again.
#[derive(Debug)]
pub struct PeerFailure(pub String);

impl std::fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerFailure {}

/// Frames over a byte channel, counting bytes each way.
pub struct Channel {
    r: Box<dyn Read + Send>,
    w: Box<dyn Write + Send>,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// What the peer is (for messages).
    pub peer: String,
}

impl Channel {
    /// A channel over a reader and a writer.
    pub fn new(r: Box<dyn Read + Send>, w: Box<dyn Write + Send>, peer: &str) -> Channel {
        Channel {
            r,
            w,
            bytes_in: 0,
            bytes_out: 0,
            peer: peer.to_string(),
        }
    }

    fn frame(&mut self, kind: Kind, parts: &[&[u8]]) -> Result<()> {
        let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        if len > MAX_FRAME as usize {
            bail!(
                "internal: a {kind:?} message of {len} bytes exceeds the protocol's {MAX_FRAME}-byte frames"
            );
        }
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4] = kind as u8;
        let r = (|| -> std::io::Result<()> {
            self.w.write_all(&head)?;
            for p in parts {
                self.w.write_all(p)?;
            }
            if kind != Kind::Data {
                self.w.flush()?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            return Err(self.lost(e));
        }
        self.bytes_out += 4 + len as u64;
        Ok(())
    }

    /// The error for a write that failed: the peer usually closed the
    /// channel because it failed, and said why in a Failure frame it sent
    /// first; that message is the error, not the broken pipe.
    fn lost(&mut self, e: std::io::Error) -> anyhow::Error {
        for _ in 0..64 {
            match self.recv() {
                Ok(Some(Frame::Message(Kind::Failure, body))) => {
                    let f: Failure = serde_json::from_slice(&body).unwrap_or(Failure {
                        message: String::from_utf8_lossy(&body).into_owned(),
                    });
                    return PeerFailure(format!("{}: {}", self.peer, f.message)).into();
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        anyhow!("the connection to {} was lost: {e}", self.peer)
    }

    /// Sends a JSON message.
    pub fn send<T: Serialize>(&mut self, kind: Kind, msg: &T) -> Result<()> {
        let body = serde_json::to_vec(msg)?;
        self.frame(kind, &[&body])
    }

    /// Sends stream bytes that start at `offset` in the stream.
    pub fn send_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        for (i, piece) in data.chunks(DATA_FRAME).enumerate() {
            let at = offset + (i * DATA_FRAME) as u64;
            self.frame(Kind::Data, &[&at.to_le_bytes(), piece])?;
        }
        Ok(())
    }

    /// Sends one data frame (possibly empty: it then only says where the
    /// stream's bytes end).
    pub fn send_data_frame(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.frame(Kind::Data, &[&offset.to_le_bytes(), data])
    }

    /// Flushes buffered frames.
    pub fn flush(&mut self) -> Result<()> {
        match self.w.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Reads the next frame; `None` when the peer closed the channel
    /// between frames.
    pub fn recv(&mut self) -> Result<Option<Frame>> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match self.r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => bail!("{} closed the connection inside a frame", self.peer),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read from {}", self.peer)),
            }
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap());
        if len == 0 || len > MAX_FRAME {
            bail!(
                "{} sent a frame of {len} bytes, which is not the snapdump replication protocol (is the remote command `snapdump serve`?)",
                self.peer
            );
        }
        let kind = Kind::from_byte(head[4]).ok_or_else(|| {
            anyhow!(
                "{} sent a frame of unknown type {:#04x}; is it a snapdump of another protocol version?",
                self.peer,
                head[4]
            )
        })?;
        let mut body = vec![0u8; len as usize - 1];
        self.r
            .read_exact(&mut body)
            .with_context(|| format!("{} closed the connection inside a frame", self.peer))?;
        self.bytes_in += 4 + len as u64;
        if kind == Kind::Data {
            if body.len() < 8 {
                bail!("{} sent a data frame without its offset", self.peer);
            }
            let at = u64::from_le_bytes(body[..8].try_into().unwrap());
            body.drain(..8);
            return Ok(Some(Frame::Data(at, body)));
        }
        Ok(Some(Frame::Message(kind, body)))
    }

    /// Reads a message of kind `want`; a failure message from the peer
    /// becomes the error, anything else is a protocol error.
    pub fn expect<T: for<'de> Deserialize<'de>>(&mut self, want: Kind) -> Result<T> {
        match self.recv()? {
            Some(Frame::Message(k, body)) if k == want => serde_json::from_slice(&body)
                .with_context(|| format!("{} sent a malformed {:?} message", self.peer, want)),
            Some(Frame::Message(Kind::Failure, body)) => {
                let f: Failure = serde_json::from_slice(&body).unwrap_or(Failure {
                    message: String::from_utf8_lossy(&body).into_owned(),
                });
                Err(PeerFailure(format!("{}: {}", self.peer, f.message)).into())
            }
            Some(Frame::Message(k, _)) => {
                bail!("{} sent {:?} where {:?} was expected", self.peer, k, want)
            }
            Some(Frame::Data(..)) => bail!(
                "{} sent stream data where {:?} was expected",
                self.peer,
                want
            ),
            None => bail!("{} closed the connection (expected {:?})", self.peer, want),
        }
    }
}

/// The chunk digests of `bytes` (see [`Incoming::chunks`]).
pub fn chunk_digest(bytes: &[u8]) -> String {
    crate::ids::hex(&xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_round_trip() {
        let out = Shared::default();
        let mut tx = Channel::new(Box::new(std::io::empty()), Box::new(out.clone()), "peer");
        tx.send(Kind::End, &End { bytes: 7 }).unwrap();
        let data = vec![5u8; DATA_FRAME + 3];
        tx.send_data(100, &data).unwrap();
        let bytes = out.0.lock().unwrap().clone();
        assert_eq!(tx.bytes_out, bytes.len() as u64);
        let mut rx = Channel::new(
            Box::new(std::io::Cursor::new(bytes)),
            Box::new(std::io::sink()),
            "peer",
        );
        let e: End = rx.expect(Kind::End).unwrap();
        assert_eq!(e.bytes, 7);
        match rx.recv().unwrap() {
            Some(Frame::Data(at, b)) => assert_eq!((at, b.len()), (100, DATA_FRAME)),
            _ => panic!("expected data"),
        }
        match rx.recv().unwrap() {
            Some(Frame::Data(at, b)) => assert_eq!((at, b.len()), (100 + DATA_FRAME as u64, 3)),
            _ => panic!("expected data"),
        }
        assert!(rx.recv().unwrap().is_none());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let mut rx = Channel::new(
            Box::new(std::io::Cursor::new(b"SSH-2.0-OpenSSH\r\n".to_vec())),
            Box::new(std::io::sink()),
            "host",
        );
        let e = rx.recv().err().unwrap().to_string();
        assert!(e.contains("not the snapdump replication protocol"), "{e}");
    }
}
