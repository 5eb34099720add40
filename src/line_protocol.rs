//! InfluxDB line protocol: escaping, field values and a small line builder, for every writer of the crate (the
//! readings encoder, the catalog's series keys, the `energy` and `work_orders` measurements).
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] timestamp
//! ```
//!
//! A utility module: it depends on nothing else in the crate, so models (the catalog) and stages alike can use it
//! without importing each other. Everything appends to a `Vec<u8>`; nothing allocates besides that buffer.
//!
//! Escaping: a measurement escapes commas and spaces; tag keys, tag values and field keys also escape equals
//! signs; a backslash is doubled. A newline or carriage return cannot be escaped (it would end the line) and is
//! written as a plain space.

/// Characters escaped with a backslash in a measurement name.
const MEASUREMENT_SPECIAL: &[u8] = b", ";
/// Characters escaped with a backslash in a tag key, tag value or field key.
const KEY_SPECIAL: &[u8] = b",= ";

/// Escapes a measurement name (commas and spaces).
pub fn escape_measurement(s: &str) -> String {
    escaped(s, MEASUREMENT_SPECIAL)
}

/// Escapes a tag key or field key (commas, equals signs and spaces).
pub fn escape_key(s: &str) -> String {
    escaped(s, KEY_SPECIAL)
}

/// Tag values escape the same characters as keys.
pub fn escape_tag_value(s: &str) -> String {
    escaped(s, KEY_SPECIAL)
}

/// Appends an escaped measurement name.
#[inline]
pub fn push_measurement(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, MEASUREMENT_SPECIAL);
}

/// Appends an escaped tag key, tag value or field key.
#[inline]
pub fn push_key(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, KEY_SPECIAL);
}

/// Appends `,key=value`, both escaped; nothing when `value` is empty (line protocol has no empty tag values).
pub fn push_tag(out: &mut Vec<u8>, key: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(b',');
    push_key(out, key);
    out.push(b'=');
    push_key(out, value);
}

/// An escaped series key: `measurement,tag=value,...` with the tags in the order given (empty values left out).
pub fn series_key<'t>(
    measurement: &str,
    tags: impl IntoIterator<Item = (&'t str, &'t str)>,
) -> String {
    let mut out = Vec::with_capacity(64);
    push_measurement(&mut out, measurement);
    for (k, v) in tags {
        push_tag(&mut out, k, v);
    }
    into_string(out)
}

// Every byte that escaping inserts or replaces is ASCII, and a multi-byte UTF-8 sequence contains no ASCII byte,
// so escaping byte by byte keeps the text valid UTF-8.
fn escape_into(out: &mut Vec<u8>, s: &str, special: &[u8]) {
    out.reserve(s.len());
    for &b in s.as_bytes() {
        match b {
            b'\n' | b'\r' => out.push(b' '),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if special.contains(&b) => {
                out.push(b'\\');
                out.push(b);
            }
            b => out.push(b),
        }
    }
}

fn escaped(s: &str, special: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    escape_into(&mut out, s, special);
    into_string(out)
}

fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("escaping valid UTF-8 keeps it valid")
}

/// Appends a float field value in its shortest round-trip form, always with a fraction or an exponent
/// (`20.0`, `0.1`, `1e-7`). Callers leave non-finite values out: line protocol has no NaN or infinity.
#[inline]
pub fn push_float(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
}

/// Appends a float field value, whole numbers below 10^15 without a fraction (`21`, not `21.0`: InfluxDB still
/// reads a float); other values as [`push_float`]. The readings encoder's form: most readings are whole.
#[inline]
pub fn push_float_compact(out: &mut Vec<u8>, v: f64) {
    if v == v.trunc() && v.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        push_float(out, v);
    }
}

/// Appends an integer field value (`42i`).
#[inline]
pub fn push_integer(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b'i');
}

/// Appends a boolean field value (`true` or `false`).
#[inline]
pub fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Appends a string field value: double-quoted, with double quotes and backslashes escaped.
pub fn push_string(out: &mut Vec<u8>, v: &str) {
    out.reserve(v.len() + 2);
    out.push(b'"');
    for &b in v.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Ends a line: ` <timestamp>\n` (nanoseconds; `i64` for readings, `i128` where a product could overflow).
#[inline]
pub fn end_line<T: itoa::Integer>(out: &mut Vec<u8>, timestamp_ns: T) {
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(timestamp_ns).as_bytes());
    out.push(b'\n');
}

/// Writes one line into a buffer: the series first (measurement, tags), then the fields, then [`Line::end`].
///
/// ```
/// use caretaker::line_protocol::Line;
/// let mut out = Vec::new();
/// let mut line = Line::new(&mut out, "work_orders");
/// line.tag("site", "north campus").tag("team", "");
/// line.field_i64("id", 1).field_f64("value", 19.4).field_bool("open", true);
/// line.end(1_000_i64);
/// assert_eq!(out, b"work_orders,site=north\\ campus id=1i,value=19.4,open=true 1000\n");
/// ```
pub struct Line<'a> {
    out: &'a mut Vec<u8>,
    fields: u32,
}

impl<'a> Line<'a> {
    /// Starts a line with a measurement name (escaped here).
    pub fn new(out: &'a mut Vec<u8>, measurement: &str) -> Line<'a> {
        push_measurement(out, measurement);
        Line { out, fields: 0 }
    }

    /// Adds a tag (`,key=value`, escaped); left out when `value` is empty.
    pub fn tag(&mut self, key: &str, value: &str) -> &mut Self {
        debug_assert_eq!(self.fields, 0, "tags come before fields");
        push_tag(self.out, key, value);
        self
    }

    /// Adds tags escaped beforehand (`,key=value,...`), such as the tag part of a catalog series key.
    pub fn escaped_tags(&mut self, tags: &str) -> &mut Self {
        debug_assert_eq!(self.fields, 0, "tags come before fields");
        self.out.extend_from_slice(tags.as_bytes());
        self
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.out.push(if self.fields == 0 { b' ' } else { b',' });
        self.fields += 1;
        push_key(self.out, key);
        self.out.push(b'=');
        self.out
    }

    /// Adds a float field ([`push_float`]).
    pub fn field_f64(&mut self, key: &str, v: f64) -> &mut Self {
        push_float(self.key(key), v);
        self
    }

    /// Adds an integer field (`key=42i`).
    pub fn field_i64(&mut self, key: &str, v: i64) -> &mut Self {
        push_integer(self.key(key), v);
        self
    }

    /// Adds a boolean field.
    pub fn field_bool(&mut self, key: &str, v: bool) -> &mut Self {
        push_bool(self.key(key), v);
        self
    }

    /// Adds a string field (quoted and escaped).
    pub fn field_str(&mut self, key: &str, v: &str) -> &mut Self {
        push_string(self.key(key), v);
        self
    }

    /// Ends the line with its timestamp in nanoseconds and a newline. A line needs at least one field.
    pub fn end<T: itoa::Integer>(self, timestamp_ns: T) {
        debug_assert!(self.fields > 0, "a line needs at least one field");
        end_line(self.out, timestamp_ns);
    }
}

/// Counts the fields of one encoded line, for accounting when a batch is split.
pub fn fields_in_line(line: &[u8]) -> u32 {
    // The field set is between the first and the last unescaped space; fields are separated by unescaped commas.
    let mut spaces = Vec::with_capacity(2);
    let mut escaped = false;
    for (i, &b) in line.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b' ' {
            spaces.push(i);
        }
    }
    if spaces.len() < 2 {
        return 0;
    }
    let fields = &line[spaces[0] + 1..*spaces.last().unwrap()];
    let mut n = 1;
    let mut escaped = false;
    for &b in fields {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b',' {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_of_each_part() {
        assert_eq!(escape_measurement("a b,c=d\\e"), "a\\ b\\,c=d\\\\e");
        assert_eq!(escape_key("a b,c=d\\e"), "a\\ b\\,c\\=d\\\\e");
        assert_eq!(escape_tag_value("a b,c=d\\e"), "a\\ b\\,c\\=d\\\\e");
        assert_eq!(escape_tag_value("two\nlines\r"), "two lines ");
        assert_eq!(escape_tag_value("β γ"), "β\\ γ");
        assert_eq!(
            series_key("m x", [("b", "1 2"), ("empty", ""), ("a", "x=y")]),
            "m\\ x,b=1\\ 2,a=x\\=y"
        );
    }

    #[test]
    fn value_forms() {
        let f = |g: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            g(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(&|o| push_float(o, 20.0)), "20.0");
        assert_eq!(f(&|o| push_float(o, 1e-7)), "1e-7");
        assert_eq!(f(&|o| push_float_compact(o, 20.0)), "20");
        assert_eq!(f(&|o| push_float_compact(o, -0.0)), "0");
        assert_eq!(f(&|o| push_float_compact(o, 1e15)), "1000000000000000.0");
        assert_eq!(f(&|o| push_float_compact(o, 0.5)), "0.5");
        assert_eq!(f(&|o| push_integer(o, -7)), "-7i");
        assert_eq!(f(&|o| push_bool(o, false)), "false");
        assert_eq!(
            f(&|o| push_string(o, "say \"hi\" \\o/")),
            "\"say \\\"hi\\\" \\\\o/\""
        );
        assert_eq!(f(&|o| end_line(o, 12_i128)), " 12\n");
    }

    #[test]
    fn a_line_with_every_kind_of_field() {
        let mut out = b"previous\n".to_vec();
        let mut line = Line::new(&mut out, "energy use");
        line.tag("site", "north campus")
            .tag("point", "")
            .escaped_tags(",unit=kWh");
        line.field_f64("kwh", 1.5)
            .field_i64("n", 3)
            .field_bool("estimated", false)
            .field_str("note", "a \"b\"");
        line.end(-5_i64);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "previous\nenergy\\ use,site=north\\ campus,unit=kWh kwh=1.5,n=3i,estimated=false,note=\"a \\\"b\\\"\" -5\n"
        );
    }

    #[test]
    fn fields_are_counted_past_escapes() {
        assert_eq!(fields_in_line(b"m,t=a\\ b x=1,y\\,z=2,w=3 10"), 3);
        assert_eq!(fields_in_line(b"m x=1 10"), 1);
        assert_eq!(fields_in_line(b"garbage"), 0);
    }
}
