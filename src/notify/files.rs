//! The file sink: without a Discord webhook every message is written under the reports
//! directory (`notify.reports_dir`, default `reports/`), so the demo shows them anyway.
//!
//! Names are `<day>-job<id>-<type>.md` (plus `.png` for a daily report's chart): the job id
//! and the message's own day do not change between attempts, so a retried job overwrites
//! its files instead of adding copies. Each file is written to a temporary name and renamed,
//! so a reader never sees half a report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::embeds;
use super::{report, Message, NotifyError};
use crate::queue::JobId;

#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    pub fn new(dir: impl Into<PathBuf>) -> FileSink {
        FileSink { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file stem of `message` sent by job `job`.
    pub fn stem(job: JobId, message: &Message) -> String {
        format!("{}-job{}-{}", message.day(), job, message.type_name())
    }

    /// Writes the message (and a daily report's chart); returns the paths written.
    pub async fn write(
        &self,
        job: JobId,
        message: &Message,
        png: Option<&[u8]>,
    ) -> Result<Vec<PathBuf>, NotifyError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| write_error(&self.dir, source))?;
        let stem = Self::stem(job, message);
        let mut written = Vec::new();
        let mut markdown = match message {
            Message::DailyReport(r) => report::render_markdown(r),
            other => markdown_of(other),
        };
        if let Some(png) = png {
            let path = self.dir.join(format!("{stem}.png"));
            write_atomically(&path, png).await?;
            // Relative, so the pair can be moved together.
            let _infallible = writeln!(markdown, "\n![chart]({stem}.png)");
            written.push(path);
        }
        let path = self.dir.join(format!("{stem}.md"));
        write_atomically(&path, markdown.as_bytes()).await?;
        written.insert(0, path);
        Ok(written)
    }
}

fn write_error(path: &Path, source: std::io::Error) -> NotifyError {
    NotifyError::Write {
        path: path.display().to_string(),
        source,
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NotifyError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|source| write_error(&tmp, source))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|source| write_error(path, source))
}

/// Any message but the daily report, as markdown: the same texts as its Discord embed, so
/// the two channels never disagree.
pub fn markdown_of(message: &Message) -> String {
    let mut out = String::new();
    for e in embeds::payload(message).embeds {
        // Writing to a String cannot fail.
        let _infallible = write_embed(&mut out, &e);
    }
    out
}

fn write_embed(out: &mut String, e: &super::limits::Embed) -> std::fmt::Result {
    if let Some(t) = &e.title {
        writeln!(out, "# {t}\n")?;
    }
    if let Some(ts) = &e.timestamp {
        writeln!(out, "_{ts}_\n")?;
    }
    if let Some(d) = &e.description {
        writeln!(out, "{d}\n")?;
    }
    for f in &e.fields {
        writeln!(out, "- **{}**: {}", f.name, f.value)?;
    }
    if let Some(f) = &e.footer {
        writeln!(out, "\n{}", f.text)?;
    }
    Ok(())
}
