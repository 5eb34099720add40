//! One spool record: `len u32 | crc32 u32 | lines u32 | readings u32 | created_ms i64 | body[len]`, little
//! endian; the CRC covers the 16 meta bytes (lines, readings, created_ms) and the body.

use crate::sinks::influx::queue::Chunk;

/// Bytes of a record header.
pub(super) const REC_HEADER: usize = 24;
/// Larger lengths can only come from corruption.
const MAX_RECORD: u64 = 1 << 30;

/// The 24-byte record header of `chunk` (the body is written right after it, not copied).
pub(super) fn record_header(chunk: &Chunk) -> [u8; REC_HEADER] {
    let mut h = [0u8; REC_HEADER];
    h[0..4].copy_from_slice(&(chunk.body.len() as u32).to_le_bytes());
    h[8..12].copy_from_slice(&chunk.lines.to_le_bytes());
    h[12..16].copy_from_slice(&chunk.readings.to_le_bytes());
    h[16..24].copy_from_slice(&chunk.created_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[8..]);
    crc.update(&chunk.body);
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Why a record could not be read.
#[derive(Debug)]
pub(super) enum BadRecord {
    Short,
    Length(u64),
    Checksum,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::Short => write!(f, "torn record (file ends inside it)"),
            BadRecord::Length(n) => write!(f, "impossible record length {n}"),
            BadRecord::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

/// Parses the record header at the start of `h` (24 bytes): (body length, crc).
pub(super) fn parse_header(h: &[u8], remaining: u64) -> Result<(u64, u32), BadRecord> {
    if (h.len() as u64) < REC_HEADER as u64 || remaining < REC_HEADER as u64 {
        return Err(BadRecord::Short);
    }
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if len > MAX_RECORD {
        return Err(BadRecord::Length(len));
    }
    if REC_HEADER as u64 + len > remaining {
        return Err(BadRecord::Short);
    }
    Ok((len, crc))
}

/// Checks and decodes a whole record (`rec` = header + body).
pub(super) fn decode_record(rec: &[u8], crc: u32) -> Result<Chunk, BadRecord> {
    if crc32fast::hash(&rec[8..]) != crc {
        return Err(BadRecord::Checksum);
    }
    Ok(Chunk {
        lines: u32::from_le_bytes(rec[8..12].try_into().unwrap()),
        readings: u32::from_le_bytes(rec[12..16].try_into().unwrap()),
        created_ms: i64::from_le_bytes(rec[16..24].try_into().unwrap()),
        body: rec[REC_HEADER..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_its_chunk_and_any_flipped_bit_is_caught() {
        let chunk = Chunk {
            body: b"m x=1 1\n".to_vec(),
            lines: 1,
            readings: 2,
            created_ms: -3,
        };
        let mut rec = record_header(&chunk).to_vec();
        rec.extend_from_slice(&chunk.body);
        let (len, crc) = parse_header(&rec, rec.len() as u64).unwrap();
        assert_eq!(len, chunk.body.len() as u64);
        assert_eq!(decode_record(&rec, crc).unwrap(), chunk);
        for bit in (8 * 8)..(rec.len() * 8) {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(decode_record(&bad, crc), Err(BadRecord::Checksum)));
        }
        assert!(matches!(
            parse_header(&rec, rec.len() as u64 - 1),
            Err(BadRecord::Short)
        ));
        let mut huge = rec.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_header(&huge, u64::MAX),
            Err(BadRecord::Length(_))
        ));
    }
}
