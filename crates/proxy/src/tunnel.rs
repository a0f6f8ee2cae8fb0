//! Upgraded connections (WebSocket and any other HTTP/1.1 Upgrade) relayed byte for byte.
//!
//! A tunnel holds a drain token of its instance for as long as it is open. When a drain gives
//! up waiting, a WebSocket tunnel finishes the frame it is relaying in each direction and then
//! sends a Close frame with status 1001 "going away" (RFC 6455 §7.4.1) to both peers, so
//! browsers see an orderly close they can reconnect from rather than a broken frame. Other
//! protocols are opaque to us; their sockets are shut down.

use std::hash::BuildHasher;
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, warn};

/// After a cut, how long a WebSocket tunnel may take to reach a frame boundary and send its
/// Close frames before its sockets are simply dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

const BUFFER: usize = 16 * 1024;

/// 1001 "going away": the endpoint is going away, e.g. a server going down (RFC 6455 §7.4.1).
const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

pub(crate) struct Tunnel {
    pub(crate) client: OnUpgrade,
    pub(crate) upstream: OnUpgrade,
    pub(crate) websocket: bool,
    pub(crate) label: String,
    pub(crate) cut: CancellationToken,
    /// Keeps the instance from counting as drained while the tunnel is open.
    pub(crate) work: TaskTrackerToken,
}

impl Tunnel {
    pub(crate) async fn run(self) {
        let Tunnel {
            client,
            upstream,
            websocket,
            label,
            cut,
            work,
        } = self;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(upstream = %label, error = %e, "upgrade did not complete");
                return;
            }
        };
        let client = TokioIo::new(client);
        let upstream = TokioIo::new(upstream);
        let relay = async {
            if websocket {
                relay_websocket(client, upstream, &cut).await
            } else {
                relay_opaque(client, upstream, &cut).await
            }
        };
        let hard_stop = async {
            cut.cancelled().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        };
        tokio::select! {
            result = relay => match result {
                Ok(()) => debug!(upstream = %label, "tunnel closed"),
                Err(e) => debug!(upstream = %label, error = %e, "tunnel ended with an error"),
            },
            _ = hard_stop => {
                warn!(upstream = %label, "tunnel did not reach a frame boundary in time; dropped");
            }
        }
        drop(work);
    }
}

async fn relay_opaque(
    mut client: TokioIo<Upgraded>,
    mut upstream: TokioIo<Upgraded>,
    cut: &CancellationToken,
) -> std::io::Result<()> {
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => copied.map(drop),
        _ = cut.cancelled() => {
            let _ = tokio::join!(client.shutdown(), upstream.shutdown());
            Ok(())
        }
    }
}

async fn relay_websocket(
    client: TokioIo<Upgraded>,
    upstream: TokioIo<Upgraded>,
    cut: &CancellationToken,
) -> std::io::Result<()> {
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut upstream_rx, mut upstream_tx) = tokio::io::split(upstream);
    // RFC 6455 §5.1: frames to a server are masked, frames to a client are not.
    let (up, down) = tokio::join!(
        pump(&mut client_rx, &mut upstream_tx, cut, Mask::Masked),
        pump(&mut upstream_rx, &mut client_tx, cut, Mask::Unmasked),
    );
    up.and(down)
}

#[derive(Clone, Copy)]
enum Mask {
    Masked,
    Unmasked,
}

/// Copy frames from `src` to `dst` until EOF, or until `cut` fires and the current frame is
/// complete; then send `dst` a Close frame and shut its write side.
async fn pump<R, W>(
    src: &mut R,
    dst: &mut W,
    cut: &CancellationToken,
    mask: Mask,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FrameBoundary::default();
    let mut buf = vec![0u8; BUFFER];
    let mut cutting = false;
    loop {
        if cutting && frames.at_boundary() {
            dst.write_all(&close_frame(mask)).await?;
            return dst.shutdown().await;
        }
        // Once cutting, never read past the end of the current frame: bytes of the next one
        // would have to be relayed too and the boundary would move away again.
        let limit = if cutting {
            frames.bytes_left_in_frame().min(BUFFER)
        } else {
            BUFFER
        };
        let n = tokio::select! {
            biased;
            _ = cut.cancelled(), if !cutting => {
                cutting = true;
                continue;
            }
            read = src.read(&mut buf[..limit]) => read?,
        };
        if n == 0 {
            return dst.shutdown().await;
        }
        frames.advance(&buf[..n]);
        dst.write_all(&buf[..n]).await?;
    }
}

fn close_frame(mask: Mask) -> Vec<u8> {
    // FIN + opcode 0x8 (Close), then the payload length, then the status code
    // (RFC 6455 §5.2, §5.5.1).
    match mask {
        Mask::Unmasked => vec![0x88, GOING_AWAY.len() as u8, GOING_AWAY[0], GOING_AWAY[1]],
        Mask::Masked => {
            // RFC 6455 §5.3 wants an unpredictable key; std's per-process random hasher
            // seed is enough for one frame the proxy writes itself.
            let key = (std::collections::hash_map::RandomState::new().hash_one(GOING_AWAY) as u32)
                .to_be_bytes();
            vec![
                0x88,
                0x80 | GOING_AWAY.len() as u8,
                key[0],
                key[1],
                key[2],
                key[3],
                GOING_AWAY[0] ^ key[0],
                GOING_AWAY[1] ^ key[1],
            ]
        }
    }
}

/// Follows a WebSocket byte stream far enough to know where each frame ends (RFC 6455 §5.2):
/// a 2-byte head, an optional 2- or 8-byte extended length, an optional 4-byte masking key,
/// then the payload.
#[derive(Debug, Default)]
struct FrameBoundary {
    head: [u8; 14],
    head_len: usize,
    payload_left: u64,
}

impl FrameBoundary {
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0
    }

    /// Bytes that certainly belong to the current frame (at least 1 unless at a boundary).
    fn bytes_left_in_frame(&self) -> usize {
        if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else {
            (self.head_needed() - self.head_len).max(1)
        }
    }

    /// Length of the current head as far as the bytes seen so far tell.
    fn head_needed(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let extended = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            let take = (self.head_needed() - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
            self.head_len += take;
            bytes = &bytes[take..];
            if self.head_len >= 2 && self.head_len == self.head_needed() {
                self.payload_left = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
                    n => u64::from(n),
                };
                self.head_len = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => f.push(mask_bit | payload_len as u8),
            126..=65535 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        let mut stream = Vec::new();
        for (len, masked) in [
            (0, false),
            (5, true),
            (300, false),
            (70_000, true),
            (1, false),
        ] {
            stream.extend(frame(len, masked));
        }
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut frames = FrameBoundary::default();
            for piece in stream.chunks(chunk) {
                frames.advance(piece);
            }
            assert!(frames.at_boundary(), "chunk size {chunk}");
        }
        let mut frames = FrameBoundary::default();
        let one = frame(300, true);
        frames.advance(&one[..5]);
        assert!(!frames.at_boundary());
        assert_eq!(frames.bytes_left_in_frame(), 3, "rest of the masking key");
        frames.advance(&one[5..10]);
        assert_eq!(frames.bytes_left_in_frame(), one.len() - 10);
        frames.advance(&one[10..]);
        assert!(frames.at_boundary());
    }

    #[test]
    fn close_frames_carry_1001() {
        assert_eq!(close_frame(Mask::Unmasked), vec![0x88, 0x02, 0x03, 0xE9]);
        let masked = close_frame(Mask::Masked);
        assert_eq!(masked[..2], [0x88, 0x82]);
        let key = &masked[2..6];
        assert_eq!([masked[6] ^ key[0], masked[7] ^ key[1]], [0x03, 0xE9]);
    }
}
