//! Decoding registers and bits into a point's raw value (before the profile's `scale` and `offset`).
//!
//! Word orders use the vendor-map vocabulary: the bytes of a value, most significant first, are `A B C D`
//! (`A B C D E F G H` for 64-bit). `ABCD` sends them as is (the Modbus standard, big-endian); `CDAB` reverses
//! the order of the 16-bit registers; `BADC` swaps the two bytes inside each register; `DCBA` does both
//! (little-endian). For 64-bit values the same rule applies to four registers (`CDAB` = last register first).
//! `string` values are ASCII (`BADC`/`DCBA` swap the bytes in each register), trimmed of NULs and spaces, and
//! must parse as a number: readings are numbers, and devices that report numbers as text do it this way.

use crate::catalog::modbus_binding::{DataType, ModbusBinding, WordOrder};

/// Why registers could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {want} registers, got {got}")]
    Short { want: usize, got: usize },
    #[error("string `{0}` is not a number")]
    NotANumber(String),
    #[error("string is not ASCII")]
    NotAscii,
}

/// Puts the registers' bytes in `A B C D ...` order into `out` (most significant first).
#[inline]
fn ordered_bytes(regs: &[u16], order: WordOrder, out: &mut [u8]) {
    let n = regs.len();
    let (swap_bytes, reverse_words) = match order {
        WordOrder::Abcd => (false, false),
        WordOrder::Cdab => (false, true),
        WordOrder::Badc => (true, false),
        WordOrder::Dcba => (true, true),
    };
    for (i, &r) in regs.iter().enumerate() {
        let w = if swap_bytes { r.swap_bytes() } else { r };
        let slot = if reverse_words { n - 1 - i } else { i };
        out[slot * 2..slot * 2 + 2].copy_from_slice(&w.to_be_bytes());
    }
}

/// Decodes the registers of one point (exactly `binding.width()` of them, starting at its address).
#[inline]
pub fn decode_registers(b: &ModbusBinding, regs: &[u16]) -> Result<f64, DecodeError> {
    let want = b.width() as usize;
    if regs.len() < want {
        return Err(DecodeError::Short {
            want,
            got: regs.len(),
        });
    }
    let regs = &regs[..want];
    if let Some(bit) = b.bit {
        return Ok(f64::from((regs[0] >> bit) & 1));
    }
    let mut buf = [0u8; 8];
    Ok(match b.data_type {
        DataType::Bool => f64::from(u8::from(regs[0] != 0)),
        DataType::U16 => f64::from(regs[0]),
        DataType::I16 => f64::from(regs[0] as i16),
        DataType::U32 | DataType::I32 | DataType::F32 => {
            ordered_bytes(regs, b.order, &mut buf[..4]);
            let raw = [buf[0], buf[1], buf[2], buf[3]];
            match b.data_type {
                DataType::U32 => f64::from(u32::from_be_bytes(raw)),
                DataType::I32 => f64::from(i32::from_be_bytes(raw)),
                _ => f64::from(f32::from_be_bytes(raw)),
            }
        }
        DataType::U64 | DataType::I64 | DataType::F64 => {
            ordered_bytes(regs, b.order, &mut buf);
            match b.data_type {
                DataType::U64 => u64::from_be_bytes(buf) as f64,
                DataType::I64 => i64::from_be_bytes(buf) as f64,
                _ => f64::from_be_bytes(buf),
            }
        }
        DataType::String => {
            let mut bytes = Vec::with_capacity(want * 2);
            for &r in regs {
                let r = if matches!(b.order, WordOrder::Badc | WordOrder::Dcba) {
                    r.swap_bytes()
                } else {
                    r
                };
                bytes.extend_from_slice(&r.to_be_bytes());
            }
            bytes.truncate(b.length as usize);
            if !bytes.is_ascii() {
                return Err(DecodeError::NotAscii);
            }
            let text = String::from_utf8_lossy(&bytes);
            let t = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
            t.parse::<f64>()
                .map_err(|_| DecodeError::NotANumber(t.to_string()))?
        }
    })
}

/// A coil or discrete input as a number.
#[inline]
pub fn decode_bit(v: bool) -> f64 {
    f64::from(u8::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::modbus_binding::Table;

    fn b(data_type: DataType, order: WordOrder) -> ModbusBinding {
        ModbusBinding {
            table: Table::Holding,
            address: 0,
            data_type,
            order,
            bit: None,
            length: 0,
        }
    }

    /// Lays out big-endian bytes as registers in `order` (the inverse of decoding), for the round trips.
    fn layout(be: &[u8], order: WordOrder) -> Vec<u16> {
        let mut words: Vec<u16> = be
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        if matches!(order, WordOrder::Badc | WordOrder::Dcba) {
            words.iter_mut().for_each(|w| *w = w.swap_bytes());
        }
        if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
            words.reverse();
        }
        words
    }

    const ORDERS: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    #[test]
    fn every_type_and_order_round_trips() {
        for o in ORDERS {
            let v = -123456.75f32;
            assert_eq!(
                decode_registers(&b(DataType::F32, o), &layout(&v.to_be_bytes(), o)),
                Ok(v as f64)
            );
            let v = -9_876_543_210.125f64;
            assert_eq!(
                decode_registers(&b(DataType::F64, o), &layout(&v.to_be_bytes(), o)),
                Ok(v)
            );
            let v = 4_000_000_000u32;
            assert_eq!(
                decode_registers(&b(DataType::U32, o), &layout(&v.to_be_bytes(), o)),
                Ok(v as f64)
            );
            let v = -2_000_000_000i32;
            assert_eq!(
                decode_registers(&b(DataType::I32, o), &layout(&v.to_be_bytes(), o)),
                Ok(v as f64)
            );
            let v = 1u64 << 52 | 12345;
            assert_eq!(
                decode_registers(&b(DataType::U64, o), &layout(&v.to_be_bytes(), o)),
                Ok(v as f64)
            );
            let v = -(1i64 << 50) - 7;
            assert_eq!(
                decode_registers(&b(DataType::I64, o), &layout(&v.to_be_bytes(), o)),
                Ok(v as f64)
            );
        }
    }

    #[test]
    fn known_vendor_layouts() {
        // 0x41200000 = 10.0f32: standard order is [0x4120, 0x0000]; word-swapped [0x0000, 0x4120].
        let f = b(DataType::F32, WordOrder::Abcd);
        assert_eq!(decode_registers(&f, &[0x4120, 0x0000]), Ok(10.0));
        let f = b(DataType::F32, WordOrder::Cdab);
        assert_eq!(decode_registers(&f, &[0x0000, 0x4120]), Ok(10.0));
        let f = b(DataType::F32, WordOrder::Badc);
        assert_eq!(decode_registers(&f, &[0x2041, 0x0000]), Ok(10.0));
        let f = b(DataType::F32, WordOrder::Dcba);
        assert_eq!(decode_registers(&f, &[0x0000, 0x2041]), Ok(10.0));
        assert_eq!(
            decode_registers(&b(DataType::I16, WordOrder::Abcd), &[0xFFFE]),
            Ok(-2.0)
        );
        assert_eq!(
            decode_registers(&b(DataType::U16, WordOrder::Abcd), &[0xFFFE]),
            Ok(65534.0)
        );
    }

    #[test]
    fn bits_strings_and_short_input() {
        let mut x = b(DataType::Bool, WordOrder::Abcd);
        x.bit = Some(3);
        assert_eq!(decode_registers(&x, &[0b1000]), Ok(1.0));
        assert_eq!(decode_registers(&x, &[0b0111]), Ok(0.0));
        let mut s = b(DataType::String, WordOrder::Abcd);
        s.length = 6;
        let regs = [
            u16::from_be_bytes(*b"23"),
            u16::from_be_bytes(*b"0."),
            u16::from_be_bytes(*b"5\0"),
        ];
        assert_eq!(decode_registers(&s, &regs), Ok(230.5));
        s.order = WordOrder::Badc;
        let swapped: Vec<u16> = regs.iter().map(|r| r.swap_bytes()).collect();
        assert_eq!(decode_registers(&s, &swapped), Ok(230.5));
        s.order = WordOrder::Abcd;
        let text = [u16::from_be_bytes(*b"ab"), 0, 0];
        assert!(matches!(
            decode_registers(&s, &text),
            Err(DecodeError::NotANumber(_))
        ));
        assert!(matches!(
            decode_registers(&b(DataType::F64, WordOrder::Abcd), &[1, 2]),
            Err(DecodeError::Short { want: 4, got: 2 })
        ));
        assert_eq!(decode_bit(true), 1.0);
    }
}
