//! The `modbus:` binding of a profile point and the profile's Modbus quirks, as validated types.
//!
//! Addresses are stored 0-based (the protocol address on the wire) whatever `address_base` the vendor map uses.

use serde::Deserialize;
use std::time::Duration;

/// Which Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    pub fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            "input" => Table::Input,
            "holding" => Table::Holding,
            _ => return None,
        })
    }
    /// Coils and discrete inputs are read as bits, the others as 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

/// How a point's registers are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text over `length` bytes (two per register).
    String,
}

impl DataType {
    pub fn parse(s: &str) -> Option<DataType> {
        Some(match s {
            "bool" => DataType::Bool,
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f32" => DataType::F32,
            "f64" => DataType::F64,
            "string" => DataType::String,
            _ => return None,
        })
    }
    pub const ALL: &'static [&'static str] = &[
        "bool", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string",
    ];

    /// Registers occupied (for register tables).
    pub fn registers(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length.div_ceil(2),
        }
    }
}

/// Word/byte order of multi-register values, in the vocabulary vendor maps use: `ABCD` is big-endian (Modbus
/// standard), `CDAB` swaps 16-bit words, `BADC` swaps bytes within words, `DCBA` is little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl WordOrder {
    pub fn parse(s: &str) -> Option<WordOrder> {
        Some(match s {
            "ABCD" => WordOrder::Abcd,
            "CDAB" => WordOrder::Cdab,
            "BADC" => WordOrder::Badc,
            "DCBA" => WordOrder::Dcba,
            _ => return None,
        })
    }
}

/// A validated `modbus:` binding.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusBinding {
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// One bit of a 16-bit register (0 = least significant).
    pub bit: Option<u8>,
    /// Bytes of a `string`.
    pub length: u16,
}

impl ModbusBinding {
    /// Registers (or bits) this point occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type.registers(self.length)
        }
    }
}

/// The file form of a binding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusBinding {
    pub table: String,
    pub address: u32,
    #[serde(rename = "type", default)]
    pub data_type: Option<String>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default)]
    pub length: Option<u16>,
}

impl RawModbusBinding {
    /// Validates against the profile's address base; errors are `(key, message)` pairs.
    pub fn validate(&self, address_base: u32) -> Result<ModbusBinding, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let table = Table::parse(&self.table).unwrap_or_else(|| {
            errs.push((
                "modbus.table".into(),
                format!(
                    "unknown table `{}`; expected coil, discrete, input or holding",
                    self.table
                ),
            ));
            Table::Holding
        });
        let default_type = if table.is_bits() { "bool" } else { "u16" };
        let type_text = self.data_type.as_deref().unwrap_or(default_type);
        let data_type =
            crate::catalog::units::parse_word("type", type_text, DataType::parse, DataType::ALL)
                .unwrap_or_else(|e| {
                    errs.push(("modbus.type".into(), e));
                    DataType::U16
                });
        let order = match self.order.as_deref() {
            None => WordOrder::Abcd,
            Some(o) => WordOrder::parse(o).unwrap_or_else(|| {
                errs.push((
                    "modbus.order".into(),
                    format!("unknown order `{o}`; expected ABCD, CDAB, BADC or DCBA"),
                ));
                WordOrder::Abcd
            }),
        };
        if self.address < address_base {
            errs.push((
                "modbus.address".into(),
                format!(
                    "address {} is below the profile's address_base {address_base}",
                    self.address
                ),
            ));
        }
        let address = self.address.saturating_sub(address_base);
        if address > u16::MAX as u32 {
            errs.push((
                "modbus.address".into(),
                format!(
                    "address {} is beyond the Modbus range (0..=65535)",
                    self.address
                ),
            ));
        }
        if table.is_bits() && data_type != DataType::Bool {
            errs.push((
                "modbus.type".into(),
                format!(
                    "{} tables hold single bits: type must be bool",
                    table.as_str()
                ),
            ));
        }
        if let Some(bit) = self.bit {
            if table.is_bits() {
                errs.push((
                    "modbus.bit".into(),
                    "`bit` selects a bit of a register; coils and discrete inputs are bits already"
                        .into(),
                ));
            }
            if bit > 15 {
                errs.push((
                    "modbus.bit".into(),
                    format!("bit {bit} out of range: a register has bits 0..=15"),
                ));
            }
            if !matches!(data_type, DataType::Bool | DataType::U16 | DataType::I16) {
                errs.push((
                    "modbus.bit".into(),
                    "`bit` applies to one 16-bit register (type bool)".into(),
                ));
            }
        } else if !table.is_bits() && data_type == DataType::Bool {
            errs.push((
                "modbus.bit".into(),
                "a bool in a register needs `bit` (0..=15)".into(),
            ));
        }
        let length = match (data_type, self.length) {
            (DataType::String, Some(0)) | (DataType::String, None) => {
                errs.push((
                    "modbus.length".into(),
                    "type string needs `length` (bytes, > 0)".into(),
                ));
                2
            }
            (DataType::String, Some(n)) => n,
            (_, Some(_)) => {
                errs.push((
                    "modbus.length".into(),
                    "`length` applies only to type string".into(),
                ));
                0
            }
            (_, None) => 0,
        };
        if self.order.is_some() && data_type.registers(length) < 2 && data_type != DataType::String
        {
            errs.push((
                "modbus.order".into(),
                "`order` applies only to multi-register types".into(),
            ));
        }
        let b = ModbusBinding {
            table,
            address: address as u16,
            data_type,
            order,
            bit: self.bit,
            length,
        };
        if address + b.width() as u32 > 65536 {
            errs.push((
                "modbus.address".into(),
                "the value runs past register 65535".into(),
            ));
        }
        if errs.is_empty() { Ok(b) } else { Err(errs) }
    }
}

/// Profile-level Modbus quirks (`modbus:` at the top of a profile).
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusQuirks {
    /// 0 when the vendor map gives protocol addresses, 1 when it counts from 1 (e.g. "40001 = holding 0" style
    /// maps after removing the table prefix).
    pub address_base: u32,
    /// At most 125 (the protocol limit for registers).
    pub max_registers_per_request: u16,
    /// At most 2000 (the protocol limit for bits).
    pub max_bits_per_request: u16,
    /// Registers the planner may read and discard to merge two requests; `None` lets the cost model decide.
    pub max_gap: Option<u16>,
    pub pause_between_requests: Duration,
    pub one_request_per_point: bool,
}

impl Default for ModbusQuirks {
    fn default() -> Self {
        ModbusQuirks {
            address_base: 0,
            max_registers_per_request: 125,
            max_bits_per_request: 2000,
            max_gap: None,
            pause_between_requests: Duration::ZERO,
            one_request_per_point: false,
        }
    }
}

/// The file form of the quirks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbusQuirks {
    #[serde(default)]
    pub address_base: Option<u32>,
    #[serde(default)]
    pub max_registers_per_request: Option<u16>,
    #[serde(default)]
    pub max_bits_per_request: Option<u16>,
    #[serde(default)]
    pub max_gap: Option<u16>,
    #[serde(default)]
    pub pause_between_requests: Option<String>,
    #[serde(default)]
    pub one_request_per_point: Option<bool>,
}

impl RawModbusQuirks {
    pub fn validate(&self) -> Result<ModbusQuirks, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let d = ModbusQuirks::default();
        let address_base = self.address_base.unwrap_or(0);
        if address_base > 1 {
            errs.push((
                "modbus.address_base".into(),
                format!("address_base must be 0 or 1, not {address_base}"),
            ));
        }
        let max_registers_per_request = self
            .max_registers_per_request
            .unwrap_or(d.max_registers_per_request);
        if !(1..=125).contains(&max_registers_per_request) {
            errs.push((
                "modbus.max_registers_per_request".into(),
                "must be 1..=125 (the protocol limit)".into(),
            ));
        }
        let max_bits_per_request = self.max_bits_per_request.unwrap_or(d.max_bits_per_request);
        if !(1..=2000).contains(&max_bits_per_request) {
            errs.push((
                "modbus.max_bits_per_request".into(),
                "must be 1..=2000 (the protocol limit)".into(),
            ));
        }
        let pause_between_requests = match &self.pause_between_requests {
            None => Duration::ZERO,
            Some(s) => crate::util::parse_duration(s).unwrap_or_else(|e| {
                errs.push(("modbus.pause_between_requests".into(), e));
                Duration::ZERO
            }),
        };
        let q = ModbusQuirks {
            address_base,
            max_registers_per_request,
            max_bits_per_request,
            max_gap: self.max_gap,
            pause_between_requests,
            one_request_per_point: self.one_request_per_point.unwrap_or(false),
        };
        if errs.is_empty() { Ok(q) } else { Err(errs) }
    }
}
