//! Diagnostics for files users write (site config, profiles, rules): each names the file, line and key.
//!
//! Loaders collect every problem they find into a `Vec<Diagnostic>` instead of stopping at the first, so that
//! `caretaker check` can list them all in one run.

mod collect;
pub mod locate;

pub use collect::{Collector, resolve};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The key or path inside the file (`points[2].unit`, `mqtt.subscriptions[0].profile`).
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        file: &Path,
        line: Option<u64>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: line.filter(|l| *l > 0),
            column: None,
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn with_column(mut self, column: Option<u64>) -> Self {
        self.column = column.filter(|c| *c > 0);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// A diagnostic about `key` of a TOML file, its line found by reading the file again (for problems found after
/// loading, such as an unknown profile).
pub fn at_key(file: &Path, key: &str, message: impl Into<String>) -> Diagnostic {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    Diagnostic::new(file, locate::locate(&text, key), key, message)
}

/// All the diagnostics of a failed load, displayed one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Reads every `*.yaml` file in the given folders, sorted by name within each folder: the one way profiles and
/// rules are found. `key` names the config key listing the folders and `what` the kind of file, for errors
/// (an unreadable folder or file, or a `.yml` file that would otherwise be silently skipped).
pub fn read_yaml_files(
    dirs: &[PathBuf],
    key: &str,
    what: &str,
) -> (Vec<(PathBuf, String)>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                errs.push(Diagnostic::new(
                    dir,
                    None,
                    key,
                    format!("cannot read {what} folder: {e}"),
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml") => {}
                Some("yml") => {
                    errs.push(Diagnostic::new(
                        &path,
                        None,
                        "",
                        format!("{what} files use the `.yaml` extension; rename this file"),
                    ));
                    continue;
                }
                _ => continue,
            }
            match read_small_file(&path) {
                Ok(text) => out.push((path, text)),
                Err(e) => errs.push(Diagnostic::new(&path, None, "", e)),
            }
        }
    }
    (out, errs)
}

/// The largest profile or rule file read (1 MiB); the shipped ones are a few kilobytes.
pub const MAX_YAML_FILE: u64 = 1024 * 1024;

/// Reads a regular file (a symlink to one is fine) of at most [`MAX_YAML_FILE`] bytes. A FIFO would block the
/// open forever and `/dev/zero` would be read until memory runs out, so anything else is refused up front.
fn read_small_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a folder, FIFO or device); cannot read it".into());
    }
    let too_large = || format!("too large: more than {MAX_YAML_FILE} bytes (1 MiB)");
    if meta.len() > MAX_YAML_FILE {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    // Bounded even if the file grows between the check and the read.
    file.take(MAX_YAML_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_YAML_FILE {
        return Err(too_large());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn only_small_regular_files_are_read_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.yaml"), "a: 1\n").unwrap();
        std::fs::write(d.join("z.yaml"), "z: 1\n").unwrap();
        std::os::unix::fs::symlink(d.join("a.yaml"), d.join("b-link.yaml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.yaml")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo.yaml").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(d.join("huge.yaml"), vec![b'#'; MAX_YAML_FILE as usize + 1]).unwrap();
        std::fs::create_dir(d.join("folder.yaml")).unwrap();
        let (files, errs) = read_yaml_files(&[d.to_path_buf()], "profiles.dirs", "profile");
        let names: Vec<_> = files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.yaml", "b-link.yaml", "z.yaml"]);
        let msg = |f: &str| {
            errs.iter()
                .find(|e| e.file.ends_with(f))
                .map(|e| e.message.clone())
                .unwrap_or_else(|| panic!("no diagnostic for {f}: {errs:?}"))
        };
        assert!(msg("fifo.yaml").contains("not a regular file"));
        assert!(msg("zero.yaml").contains("not a regular file"));
        assert!(msg("folder.yaml").contains("not a regular file"));
        assert!(msg("huge.yaml").contains("too large"));
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
