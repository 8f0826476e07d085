//! Kafka's framing: every request and response is a big-endian `i32` size followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Kafka's default for `socket.request.max.bytes` (100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: i64, max: usize },
    #[error("frame has a negative size {0}")]
    NegativeSize(i32),
}

/// Takes one whole frame's body (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete; the size is checked against `max_bytes` as soon
/// as the prefix has arrived, so an oversized frame is refused before anything is allocated for it.
pub fn take_frame(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = frame_size(buf, max_bytes)? else {
        return Ok(None);
    };
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// The size of the frame at the front of `buf`, once its prefix has arrived, checked against `max_bytes`.
pub fn frame_size(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(FrameError::TooLarge {
            size: size as i64,
            max: max_bytes,
        });
    }
    Ok(Some(size))
}

/// Writes the size prefix for a frame whose body follows in `buf` starting at `start + 4`.
///
/// Callers reserve four bytes at `start`, encode the body after them, then call this.
pub fn patch_size_prefix(buf: &mut [u8], start: usize) {
    let size = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_prefix_and_body_wait_for_more() {
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(take_frame(&mut buf, 16), Ok(None));
        buf.extend_from_slice(&[3, b'a', b'b']);
        assert_eq!(take_frame(&mut buf, 16), Ok(None));
        buf.extend_from_slice(b"cZ");
        assert_eq!(
            take_frame(&mut buf, 16),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(&buf[..], b"Z");
    }

    #[test]
    fn oversized_and_negative_frames_are_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&17i32.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buf, 16),
            Err(FrameError::TooLarge { size: 17, max: 16 })
        );
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(take_frame(&mut buf, 16), Err(FrameError::NegativeSize(-1)));
    }

    #[test]
    fn size_prefix_is_patched_after_the_body() {
        let mut buf = vec![9, 9, 0, 0, 0, 0, b'x', b'y'];
        patch_size_prefix(&mut buf, 2);
        assert_eq!(buf, vec![9, 9, 0, 0, 0, 2, b'x', b'y']);
    }
}
