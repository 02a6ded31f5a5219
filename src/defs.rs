//! Definition files (`jobs/*.toml`, `workflows/*.toml`): reading a directory of them and
//! reporting a problem as `file:line: field: message`, the one error shape every loader
//! uses. Knows nothing about what the files mean; `schedule` and `workflow` do.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem in a definition file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct DefError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field (dotted path such as `schedule[2].cron`), when the problem is one field's.
    pub field: Option<String>,
    pub message: String,
}

/// One file's text, kept to turn byte offsets into line numbers.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<SourceFile, DefError> {
        let text = std::fs::read_to_string(path).map_err(|e| DefError {
            file: path.to_path_buf(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        })?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// An error at `span` (a `toml::Spanned` span), about `field`.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> DefError {
        let field: String = field.into();
        DefError {
            file: self.path.clone(),
            line: span.map(|s| self.line_of(s.start)),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }

    /// Parses the file as TOML into `T`, mapping serde's error (unknown key, wrong type,
    /// missing field) to its line.
    pub fn parse_toml<T: serde::de::DeserializeOwned>(&self) -> Result<T, DefError> {
        toml::from_str(&self.text).map_err(|e| {
            let msg = e.message().trim().to_string();
            self.error(e.span(), "", msg)
        })
    }
}

/// Every `*.toml` file in `dir`, sorted by name; no directory means no files.
pub fn toml_files(dir: &Path) -> Result<Vec<SourceFile>, DefError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(DefError {
                file: dir.to_path_buf(),
                line: None,
                field: None,
                message: format!("cannot list the directory: {e}"),
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| SourceFile::read(p)).collect()
}

/// Parses a duration such as `60s`, `500ms`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (expected e.g. `60s`, `500ms`, `5m`)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use ms, s, m or h)")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_file_line_and_field() {
        let f = SourceFile::from_text("jobs/a.toml", "x = 1\ny = 2\n");
        let e = f.error(Some(6..7), "schedule[0].cron", "bad");
        assert_eq!(e.to_string(), "jobs/a.toml:2: schedule[0].cron: bad");
    }

    #[test]
    fn toml_syntax_error_has_its_line() {
        let f = SourceFile::from_text("w.toml", "a = 1\nb = \n");
        let e = f.parse_toml::<toml::Table>().unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap().as_secs(), 60);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
        assert!(parse_duration("1 day").is_err());
        assert!(parse_duration("s").is_err());
    }
}
