//! On-disk record framing and CRC-32.
//!
//! A frame is `len: u32 LE | crc: u32 LE | body[len]`, the CRC-32 (IEEE) of the body.
//! The body is `offset: u64 | append_ms: i64 | timestamp_ms: i64 | key_len: u32 |
//! key | payload`, all little-endian; `key_len == u32::MAX` means no key. The offset is
//! stored so recovery can check that a segment's records are contiguous, the append time
//! so retention and the idempotency-key window survive a restart.

/// Bytes before the body: length and CRC.
pub const HEADER_LEN: usize = 8;
/// Fixed part of the body: offset, append time, timestamp, key length.
pub const BODY_FIXED_LEN: usize = 8 + 8 + 8 + 4;
const NO_KEY: u32 = u32::MAX;

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameBody {
    pub offset: u64,
    pub append_ms: i64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// Length of the frame (header included) for a key and payload.
pub fn frame_len(key: Option<&str>, payload_len: usize) -> usize {
    HEADER_LEN + BODY_FIXED_LEN + key.map_or(0, str::len) + payload_len
}

/// Append one frame to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    offset: u64,
    append_ms: i64,
    timestamp_ms: i64,
    key: Option<&str>,
    payload: &[u8],
) {
    let body_len = BODY_FIXED_LEN + key.map_or(0, str::len) + payload.len();
    let start = out.len();
    // Callers bound record sizes far below 4 GiB (max_record_bytes), so this cannot truncate.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_start = out.len();
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&append_ms.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    match key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
        }
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    out.extend_from_slice(payload);
    let crc = crc32(&out[body_start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Parse a frame header: (body length, expected CRC).
pub fn decode_header(h: &[u8; HEADER_LEN]) -> (u32, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

/// Check a body against its CRC and decode it; `None` if it is damaged.
pub fn decode_body(body: &[u8], crc: u32) -> Option<FrameBody> {
    if body.len() < BODY_FIXED_LEN || crc32(body) != crc {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let offset = u64_at(0);
    let append_ms = u64_at(8) as i64;
    let timestamp_ms = u64_at(16) as i64;
    let key_len = u32::from_le_bytes([body[24], body[25], body[26], body[27]]);
    let rest = &body[BODY_FIXED_LEN..];
    let (key, payload) = if key_len == NO_KEY {
        (None, rest)
    } else {
        let n = key_len as usize;
        if n > rest.len() {
            return None;
        }
        let key = std::str::from_utf8(&rest[..n]).ok()?.to_string();
        (Some(key), &rest[n..])
    };
    Some(FrameBody {
        offset,
        append_ms,
        timestamp_ms,
        key,
        payload: payload.to_vec(),
    })
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as in zlib and Kafka's v0 messages).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_reference() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn roundtrip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 11, -3, Some("dev/1"), b"hello");
        assert_eq!(buf.len(), frame_len(Some("dev/1"), 5));
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&buf[..HEADER_LEN]);
        let (len, crc) = decode_header(&h);
        assert_eq!(len as usize, buf.len() - HEADER_LEN);
        let body = decode_body(&buf[HEADER_LEN..], crc).unwrap();
        assert_eq!(body.offset, 7);
        assert_eq!(body.append_ms, 11);
        assert_eq!(body.timestamp_ms, -3);
        assert_eq!(body.key.as_deref(), Some("dev/1"));
        assert_eq!(body.payload, b"hello");
        buf[HEADER_LEN + 30] ^= 1;
        assert!(decode_body(&buf[HEADER_LEN..], crc).is_none());
    }
}
