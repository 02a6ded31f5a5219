//! The `notify` job kind: one job per message. The primary channel is the Discord webhook
//! when `COINPILOT_DISCORD_WEBHOOK_URL` is set, else the file sink. A daily report is then
//! mailed by a follow-up `notify` job on [`Channel::Email`], enqueued in this job's
//! transaction: it exists only once the Discord post succeeded and its own retries never
//! post to Discord again.

use serde::{Deserialize, Serialize};

use super::discord::DiscordWebhook;
use super::email::Mailer;
use super::files::FileSink;
use super::{embeds, report, Message, NotifyError, KIND, MAX_ATTEMPTS, QUEUE};
use crate::config::{Config, Secrets};
use crate::queue::{Handler, JobContext, JobError, KindOptions, NewJob, Outcome};

/// Where a `notify` job delivers its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Discord, or files when no webhook is configured.
    #[default]
    Primary,
    /// The daily report by e-mail.
    Email,
}

/// The args of a `notify` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyArgs {
    pub message: Message,
    #[serde(default)]
    pub channel: Channel,
}

/// The `notify` handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notify {
    discord: Option<DiscordWebhook>,
    files: FileSink,
    email: Option<Mailer>,
}

impl Notify {
    /// The channels the configuration enables; errors name the key at fault.
    pub fn from_config(cfg: &Config, secrets: &Secrets) -> Result<Notify, NotifyError> {
        let discord = secrets
            .get("COINPILOT_DISCORD_WEBHOOK_URL")
            .map(DiscordWebhook::new)
            .transpose()?;
        let email = secrets
            .get("COINPILOT_SMTP_URL")
            .map(|url| Mailer::new(url, cfg.notify.email_from(), &cfg.notify.email_recipients))
            .transpose()?;
        Ok(Notify {
            discord,
            files: FileSink::new(cfg.notify.reports_dir()),
            email,
        })
    }

    /// The file sink alone (`reports/`): for processes that only validate or enqueue.
    pub fn files_only() -> Notify {
        Notify {
            discord: None,
            files: FileSink::new(Config::default().notify.reports_dir()),
            email: None,
        }
    }

    /// Where messages go, for the start-up log line.
    pub fn describe(&self) -> String {
        let primary = match &self.discord {
            Some(_) => "Discord webhook".to_string(),
            None => format!("files in {}", self.files.dir().display()),
        };
        match &self.email {
            Some(_) => format!("{primary}; daily report also by e-mail"),
            None => primary,
        }
    }

    async fn deliver_primary(
        &self,
        ctx: &mut JobContext,
        message: &Message,
    ) -> Result<(), JobError> {
        let png = match message {
            Message::DailyReport(r) => chart_or_none(r).await,
            _ => None,
        };
        match &self.discord {
            Some(d) => {
                let mut payload = embeds::payload(message);
                if png.is_none() {
                    payload.embeds.iter_mut().for_each(|e| e.image = None);
                }
                d.send(payload, png).await?
            }
            None => {
                let paths = self
                    .files
                    .write(ctx.job.id, message, png.as_deref())
                    .await?;
                for p in paths {
                    tracing::info!(path = %p.display(), kind = message.type_name(), "notification written");
                }
            }
        }
        if let (Message::DailyReport(_), Some(_)) = (message, &self.email) {
            ctx.enqueue(email_job(ctx.job.id, message)?).await?;
        }
        Ok(())
    }

    async fn deliver_email(&self, message: &Message) -> Result<(), JobError> {
        let Message::DailyReport(r) = message else {
            return Err(JobError::permanent(format!(
                "only the daily report is e-mailed, not `{}`",
                message.type_name()
            )));
        };
        let Some(mailer) = &self.email else {
            // Configured when enqueued, not any more: nothing to send to.
            tracing::warn!(day = %r.day, "daily report e-mail dropped: COINPILOT_SMTP_URL is no longer set");
            return Ok(());
        };
        mailer.send(r, chart_or_none(r).await).await?;
        tracing::info!(day = %r.day, "daily report e-mailed");
        Ok(())
    }
}

/// The report's chart; a chart that cannot be drawn is logged and left out, because
/// retrying would draw it no better and the figures matter more than the picture.
///
/// Drawn on the blocking pool: the render is seconds of CPU in a debug build, and on the
/// worker's runtime it would hold up the heartbeat and the lease watchdog (on a
/// single-threaded runtime the watchdog then stopped the job as if its lease were lost).
async fn chart_or_none(r: &super::DailyReport) -> Option<Vec<u8>> {
    let owned = r.clone();
    let day = r.day;
    match tokio::task::spawn_blocking(move || report::render_png(&owned)).await {
        Ok(Ok(png)) => Some(png),
        Ok(Err(e)) => {
            tracing::warn!(%day, error = %e, "daily report sent without its chart");
            None
        }
        Err(e) => {
            tracing::warn!(%day, error = %e, "daily report sent without its chart: drawing it failed");
            None
        }
    }
}

/// The e-mail follow-up of primary job `parent`; its unique key keeps it single even if
/// the parent's completion is retried.
fn email_job(parent: crate::queue::JobId, message: &Message) -> Result<NewJob, JobError> {
    let args = serde_json::to_value(NotifyArgs {
        message: message.clone(),
        channel: Channel::Email,
    })?;
    Ok(NewJob::new(KIND, args)
        .with_queue(QUEUE)
        .with_max_attempts(MAX_ATTEMPTS)
        .with_unique_key(format!("notify-email:{parent}")))
}

impl Handler for Notify {
    const KIND: &'static str = KIND;
    type Args = NotifyArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: QUEUE.into(),
            max_attempts: MAX_ATTEMPTS,
            // Rendering plus one HTTP or SMTP exchange, each with its own shorter timeout.
            timeout: std::time::Duration::from_secs(120),
            priority: 0,
        }
    }

    async fn run(&self, ctx: &mut JobContext, args: NotifyArgs) -> Result<Outcome, JobError> {
        match args.channel {
            Channel::Primary => self.deliver_primary(ctx, &args.message).await?,
            Channel::Email => self.deliver_email(&args.message).await?,
        }
        Ok(Outcome::done())
    }
}
