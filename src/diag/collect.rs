//! The one error collector of the config loaders (the site config and each section it composes, the simulated
//! site file): every problem becomes a [`Diagnostic`] with the file, the line of its key and the key, and
//! loading goes on so `caretaker check` lists them all.

use super::{Diagnostic, locate::locate};
use crate::util::parse_duration;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Collects the diagnostics of one TOML file while its sections are validated.
pub struct Collector<'a> {
    pub file: &'a Path,
    text: &'a str,
    pub errs: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Collector {
            file,
            text,
            errs: Vec::new(),
        }
    }

    /// Records a problem with `key` (`mqtt.subscriptions[1].topic`), at the key's line.
    pub fn err(&mut self, key: &str, msg: impl Into<String>) {
        let line = locate(self.text, key);
        self.errs.push(Diagnostic::new(self.file, line, key, msg));
    }

    /// Records the `(key, message)` problems of a section whose validation is pure (it reads no file and needs
    /// no line numbers itself: Modbus device tables, `[energy]`, `[work_orders]`).
    pub fn report<K: AsRef<str>>(&mut self, errs: impl IntoIterator<Item = (K, String)>) {
        for (key, msg) in errs {
            self.err(key.as_ref(), msg);
        }
    }

    /// A human duration (`10s`, `5m`), `default` when absent; a bad one is reported and `default` used.
    pub fn duration(&mut self, key: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(key, e);
                default
            }),
        }
    }

    /// A path from the file, resolved against the file's folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        resolve(self.file, p)
    }

    /// A secret given inline (usually through the environment) or in a file; the file wins.
    pub fn secret(
        &mut self,
        key: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Option<String> {
        if let Some(f) = file {
            let path = self.path(f);
            match std::fs::read_to_string(&path) {
                Ok(s) => return Some(s.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    self.err(
                        &format!("{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        inline.clone()
    }
}

/// Resolves a path written in a config file against that file's folder.
pub fn resolve(config_file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
