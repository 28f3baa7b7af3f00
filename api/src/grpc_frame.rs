//! gRPC's message framing over HTTP/2, for the places that speak it without tonic's codec
//! (the operator's update streams, the sidecar's internal-API caller): each message behind a
//! 5-byte prefix, a compression flag (always 0 here) and its length as a big-endian `u32`.

use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes, BytesMut};

/// The prefix of each message: the compression flag and the length.
pub const PREFIX_BYTES: usize = 5;

/// Why a body is not a sequence of uncompressed gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the body ends inside a message prefix ({left} bytes left)")]
    InsidePrefix { left: usize },
    #[error("the message is compressed, which was not asked for")]
    Compressed,
    #[error("the message prefix says {len} bytes but {left} follow")]
    CutShort { len: usize, left: usize },
}

/// `messages`, each prefixed and uncompressed, in one buffer of exactly their size.
pub fn encode<M: Message>(messages: &[M]) -> Bytes {
    let len: usize = messages
        .iter()
        .map(|m| PREFIX_BYTES + m.encoded_len())
        .sum();
    let mut buf = BytesMut::with_capacity(len);
    for message in messages {
        buf.put_u8(0);
        buf.put_u32(message.encoded_len() as u32);
        message.encode_raw(&mut buf);
    }
    buf.freeze()
}

/// The messages of `body`, in order and still encoded (an empty body has none).
pub fn split(mut body: Bytes) -> Result<Vec<Bytes>, FrameError> {
    let mut messages = Vec::new();
    while body.has_remaining() {
        if body.len() < PREFIX_BYTES {
            return Err(FrameError::InsidePrefix { left: body.len() });
        }
        if body.get_u8() != 0 {
            return Err(FrameError::Compressed);
        }
        let len = body.get_u32() as usize;
        if body.len() < len {
            return Err(FrameError::CutShort {
                len,
                left: body.len(),
            });
        }
        messages.push(body.split_to(len));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::common::StreamPayload;

    fn payload(seq: u64, data: &[u8]) -> StreamPayload {
        StreamPayload {
            data: data.to_vec(),
            seq,
        }
    }

    #[test]
    fn messages_round_trip_in_order_in_a_buffer_of_their_size() {
        let sent = vec![payload(0, b"abc"), payload(1, b""), payload(2, &[7; 3000])];
        let body = encode(&sent);
        let sizes: usize = sent.iter().map(|m| PREFIX_BYTES + m.encoded_len()).sum();
        assert_eq!(body.len(), sizes);
        assert_eq!(body[0], 0, "uncompressed flag");
        assert_eq!(
            u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize,
            sent[0].encoded_len()
        );
        let received: Vec<StreamPayload> = split(body)
            .unwrap()
            .into_iter()
            .map(|m| StreamPayload::decode(m).unwrap())
            .collect();
        assert_eq!(received, sent);
        assert!(split(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let body = encode(&[payload(0, b"abc")]);
        let len = body.len() - PREFIX_BYTES;
        assert_eq!(
            split(body.slice(..body.len() - 1)),
            Err(FrameError::CutShort { len, left: len - 1 })
        );
        assert_eq!(
            split(body.slice(..3)),
            Err(FrameError::InsidePrefix { left: 3 })
        );
        let mut compressed = BytesMut::from(&body[..]);
        compressed[0] = 1;
        assert_eq!(split(compressed.freeze()), Err(FrameError::Compressed));
    }
}
