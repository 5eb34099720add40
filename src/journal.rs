//! Logging to the systemd journal with priorities, so `journalctl -p warning -u caretaker` shows warnings and
//! errors only. The native journal protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL) over a Unix datagram socket,
//! written here rather than with the `tracing-journald` crate: the protocol is ~60 lines and the same
//! datagram socket the watchdog's `sd_notify` already uses (`watchdog.rs`).
//!
//! Used when the process runs under systemd with stderr connected to the journal: `JOURNAL_STREAM` holds
//! `device:inode` of that stream, and systemd's own rule is to use the native protocol only when it matches
//! stderr (a child whose stderr was redirected elsewhere inherits the variable but is not on the journal).
//! One entry per event: `MESSAGE` (the message followed by its fields as `key=value`), `PRIORITY` (syslog
//! levels: error 3, warn 4, info 6, debug and trace 7), `SYSLOG_IDENTIFIER=caretaker`, `TARGET` (the module),
//! `CODE_FILE`/`CODE_LINE`, and each field as its own upper-case journal field (`DEVICE=...`).

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Where journald listens; `CARETAKER_JOURNAL_SOCKET` overrides it (tests point it at a socket of their own).
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The syslog priority of a tracing level, as journald filters on it (`journalctl -p`).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the journal: `JOURNAL_STREAM` is set and names stderr's device and inode.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat on fd 2 writes into the zeroed struct we own; a closed fd returns -1.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // u64 on x86_64, narrower on some 32-bit targets
    let (sdev, sino) = (st.st_dev as u64, st.st_ino as u64);
    dev.parse::<u64>().is_ok_and(|d| d == sdev) && ino.parse::<u64>().is_ok_and(|i| i == sino)
}

/// The socket path to send to.
pub fn socket_path() -> PathBuf {
    std::env::var_os("CARETAKER_JOURNAL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOCKET))
}

/// Appends one field in the native protocol: `KEY=value\n`, or for a value with a newline
/// `KEY\n<64-bit little-endian length><value>\n`.
pub fn put_field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A journal field name for a tracing field: upper case, `A-Z0-9_` only, not starting with `_` or a digit
/// (journald drops such fields, or reserves them for itself), at most 64 characters.
pub fn field_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('_') || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'F');
    }
    s.truncate(64);
    s
}

/// The tracing layer that sends each event to journald.
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalLayer {
    /// Connects to the journal socket (nothing is sent yet).
    pub fn new() -> std::io::Result<JournalLayer> {
        let path = socket_path();
        let socket = UnixDatagram::unbound()?;
        // Fails early when journald is not there, so the caller can fall back to stderr.
        socket.connect(&path)?;
        Ok(JournalLayer { socket, path })
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, format!("{value:?}"));
    }
}

impl Fields {
    fn add(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
            return;
        }
        let _ = write!(self.rest, " {}={}", field.name(), value);
        self.fields.push((field_name(field.name()), value));
    }
}

/// One event as a native-protocol datagram.
pub fn entry(event: &Event<'_>) -> Vec<u8> {
    let meta = event.metadata();
    let mut f = Fields::default();
    event.record(&mut f);
    let mut buf = Vec::with_capacity(256);
    put_field(
        &mut buf,
        "PRIORITY",
        priority(meta.level()).to_string().as_bytes(),
    );
    put_field(&mut buf, "SYSLOG_IDENTIFIER", b"caretaker");
    put_field(
        &mut buf,
        "MESSAGE",
        format!("{}{}", f.message, f.rest).as_bytes(),
    );
    put_field(&mut buf, "TARGET", meta.target().as_bytes());
    if let Some(file) = meta.file() {
        put_field(&mut buf, "CODE_FILE", file.as_bytes());
    }
    if let Some(line) = meta.line() {
        put_field(&mut buf, "CODE_LINE", line.to_string().as_bytes());
    }
    for (k, v) in &f.fields {
        if !matches!(
            k.as_str(),
            "PRIORITY" | "MESSAGE" | "SYSLOG_IDENTIFIER" | "TARGET" | "CODE_FILE" | "CODE_LINE"
        ) {
            put_field(&mut buf, k, v.as_bytes());
        }
    }
    buf
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let buf = entry(event);
        if self.socket.send(&buf).is_err() {
            // journald restarting or gone (or an entry over the datagram size): the line still goes somewhere.
            eprintln!(
                "<{}>{} (journal {} unavailable)",
                priority(event.metadata().level()),
                String::from_utf8_lossy(&buf).replace('\n', " "),
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities_journalctl_filters_on() {
        // `journalctl -p warning` shows priorities 0..=4: errors and warnings, nothing else.
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
        let shown: Vec<_> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]
            .iter()
            .filter(|l| priority(l) <= 4)
            .collect();
        assert_eq!(shown, [&Level::ERROR, &Level::WARN]);
    }

    #[test]
    fn fields_are_framed_as_the_native_protocol_says() {
        let mut b = Vec::new();
        put_field(&mut b, "MESSAGE", b"one line");
        put_field(&mut b, "MESSAGE", b"two\nlines");
        let mut want = b"MESSAGE=one line\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(b, want);
        assert_eq!(field_name("device"), "DEVICE");
        assert_eq!(field_name("rule.name"), "RULE_NAME");
        assert_eq!(field_name("_x"), "F_X");
        assert_eq!(field_name("1st"), "F1ST");
    }
}
