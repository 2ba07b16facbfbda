//! The on-disk record: a fixed header with a checksum, then the payload.
//!
//! ```text
//!  0      4        8        12              20           24              32
//!  ┌──────┬────────┬────────┬───────────────┬────────────┬───────────────┬──────────────┐
//!  │magic │ len    │ crc32  │ id (u64)      │ events u32 │ appended (ms) │ payload: len │
//!  └──────┴────────┴────────┴───────────────┴────────────┴───────────────┴──────────────┘
//! ```
//!
//! Little endian. `crc32` covers everything after itself (id, events, time, payload), so a torn
//! write, a flipped bit in the header or in the payload all fail the check. `id` grows by one per
//! record for the life of the spool directory, so a gap between two good records says exactly
//! how many records were lost; `events` says how many events a record carries, so what a record
//! held can be counted without decoding its payload.
//!
//! Nothing read back is trusted: a header is checked (magic, length within the spool's record
//! limit) before any byte of the payload is read, and the checksum before the record is used.

/// Marks the start of a data record ("TGS1").
pub(super) const MAGIC: [u8; 4] = *b"TGS1";

/// Marks the start of a lost-range marker ("TGSL"): written by recovery in place of records lost
/// to damage, so the next open does not count them again. Its `id` is the first id lost, its
/// time field the last one, its `events` the events known lost; no payload.
pub(super) const LOST_MAGIC: [u8; 4] = *b"TGSL";

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An appended record.
    Data,
    /// A lost-range marker (see [`LOST_MAGIC`]).
    Lost,
}

/// Bytes before the payload.
pub(super) const HEADER_BYTES: usize = 32;

/// One record's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) kind: Kind,
    pub(super) len: u32,
    pub(super) crc: u32,
    pub(super) id: u64,
    pub(super) events: u32,
    pub(super) appended_ms: u64,
}

impl Header {
    /// The whole record's size on disk.
    pub(super) fn record_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.len)
    }
}

/// Encodes a record (header and payload) into `out`, which is cleared first.
pub(super) fn encode(out: &mut Vec<u8>, id: u64, events: u32, appended_ms: u64, payload: &[u8]) {
    out.clear();
    encode_kind(out, MAGIC, id, events, appended_ms, payload);
}

/// Appends a lost-range marker for ids `from..=to` (`events` known lost) to `out`.
pub(super) fn encode_lost(out: &mut Vec<u8>, from: u64, to: u64, events: u32) {
    encode_kind(out, LOST_MAGIC, from, events, to, &[]);
}

fn encode_kind(
    out: &mut Vec<u8>,
    magic: [u8; 4],
    id: u64,
    events: u32,
    appended_ms: u64,
    payload: &[u8],
) {
    let start = out.len();
    out.reserve(HEADER_BYTES + payload.len());
    out.extend_from_slice(&magic);
    // Callers check the payload against the record limit (a u32) before they get here.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&appended_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = checksum(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of a record's bytes after the crc field.
pub(super) fn checksum(after_crc: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(after_crc);
    h.finalize()
}

/// Why a header cannot be a record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadHeader {
    /// The bytes do not start with [`MAGIC`].
    Magic,
    /// The length is above the spool's record limit.
    TooLong,
}

/// Decodes a header, checking what can be checked without the payload.
pub(super) fn decode_header(b: &[u8; HEADER_BYTES], max_payload: u32) -> Result<Header, BadHeader> {
    let kind = match [b[0], b[1], b[2], b[3]] {
        MAGIC => Kind::Data,
        LOST_MAGIC => Kind::Lost,
        _ => return Err(BadHeader::Magic),
    };
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let h = Header {
        kind,
        len: u32_at(4),
        crc: u32_at(8),
        id: u64_at(12),
        events: u32_at(20),
        appended_ms: u64_at(24),
    };
    if h.len > max_payload || (kind == Kind::Lost && (h.len != 0 || h.appended_ms < h.id)) {
        return Err(BadHeader::TooLong);
    }
    Ok(h)
}

/// Whether `payload` belongs to `header` (the checksum over the header's tail and the payload).
pub(super) fn verify(header_bytes: &[u8; HEADER_BYTES], h: &Header, payload: &[u8]) -> bool {
    let mut c = crc32fast::Hasher::new();
    c.update(&header_bytes[12..]);
    c.update(payload);
    c.finalize() == h.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_flipped_bit_fails_the_check() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 3, 1_700_000_000_000, b"payload bytes");
        let head: [u8; HEADER_BYTES] = buf[..HEADER_BYTES].try_into().unwrap();
        let h = decode_header(&head, 1 << 20).unwrap();
        assert_eq!((h.id, h.events, h.len), (7, 3, 13));
        assert!(verify(&head, &h, &buf[HEADER_BYTES..]));
        for bit in 12 * 8..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let head: [u8; HEADER_BYTES] = bad[..HEADER_BYTES].try_into().unwrap();
            let ok = decode_header(&head, 1 << 20)
                .map(|h| verify(&head, &h, &bad[HEADER_BYTES..]))
                .unwrap_or(false);
            assert!(!ok, "bit {bit} flipped and still accepted");
        }
    }

    #[test]
    fn a_header_is_refused_before_its_payload_is_read() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, 0, &[0; 100]);
        let head: [u8; HEADER_BYTES] = buf[..HEADER_BYTES].try_into().unwrap();
        assert_eq!(decode_header(&head, 99), Err(BadHeader::TooLong));
        let mut wrong = head;
        wrong[0] = b'X';
        assert_eq!(decode_header(&wrong, 1 << 20), Err(BadHeader::Magic));
    }
}
