//! The daily report by e-mail (SMTP through lettre): the markdown as a plain-text body and
//! the chart attached as `report.png`. Only the daily report is mailed.
//!
//! `COINPILOT_SMTP_URL` is a secret: `smtps://user:pass@host:465` (TLS from the start),
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), or plain `smtp://host:port`, which
//! is accepted only for a server on this machine (localhost, 127.0.0.0/8, ::1) so that no
//! password or report crosses a network unencrypted. Errors never show the URL.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::embeds::REPORT_PNG;
use super::{report, DailyReport, NotifyError};
use crate::queue::JobError;

const KEY: &str = "COINPILOT_SMTP_URL";
/// An SMTP exchange of one small message; a stuck server must not hold the job.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("url", &crate::config::secrets::MASK)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish()
    }
}

fn config_error(key: &'static str, message: impl Into<String>) -> NotifyError {
    NotifyError::Config {
        key,
        message: message.into(),
    }
}

/// The host of an SMTP URL (`scheme://[user[:pass]@]host[:port][/…][?…]`).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// Whether `url` would send in clear text (plain `smtp://` without `tls=`).
fn is_plain(url: &str) -> bool {
    url.starts_with("smtp://")
        && !url.contains("tls=required")
        && !url.contains("tls=opportunistic")
}

fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Mailer {
    /// Checks the URL, the sender and the recipients (each error names its key).
    pub fn new(url: &str, from: &str, to: &[String]) -> Result<Mailer, NotifyError> {
        let url = url.trim();
        let host = url_host(url).ok_or_else(|| {
            config_error(KEY, "is not an SMTP URL (smtp://host:port or smtps://…)")
        })?;
        if is_plain(url) && !is_local(host) {
            return Err(config_error(
                KEY,
                "plain smtp:// is allowed only for localhost; use smtps:// or add ?tls=required",
            ));
        }
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| config_error(KEY, format!("cannot be used: {e}")))?;
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| config_error("notify.email_from", format!("`{from}`: {e}")))?;
        if to.is_empty() {
            return Err(config_error(
                "notify.email_recipients",
                "COINPILOT_SMTP_URL is set but there is no recipient",
            ));
        }
        let to = to
            .iter()
            .map(|r| {
                r.parse::<Mailbox>()
                    .map_err(|e| config_error("notify.email_recipients", format!("`{r}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mailer {
            transport: builder.timeout(Some(TIMEOUT)).build(),
            from,
            to,
        })
    }

    /// The e-mail of `r`, with `png` attached when there is one.
    pub fn message(
        &self,
        r: &DailyReport,
        png: Option<Vec<u8>>,
    ) -> Result<lettre::Message, JobError> {
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!(
                "CoinPilot daily report {} · {} ({})",
                r.day, r.market, r.mode
            ));
        for to in &self.to {
            b = b.to(to.clone());
        }
        let png_type = ContentType::parse("image/png")
            .map_err(|e| JobError::permanent(format!("image/png: {e}")))?;
        let mut body = MultiPart::mixed().singlepart(SinglePart::plain(report::render_markdown(r)));
        if let Some(png) = png {
            body = body.singlepart(Attachment::new(REPORT_PNG.to_string()).body(png, png_type));
        }
        b.multipart(body)
            .map_err(|e| JobError::permanent(format!("daily report e-mail: {e}")))
    }

    /// Sends; every SMTP failure is retried (a 5xx reply from a misconfigured server too:
    /// an operator fixes it and the next attempt goes through).
    pub async fn send(&self, r: &DailyReport, png: Option<Vec<u8>>) -> Result<(), JobError> {
        let message = self.message(r, png)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| JobError::retry(format!("SMTP: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_smtp_urls() {
        assert_eq!(
            url_host("smtp://u:p@w@mail.example.com:587?tls=required"),
            Some("mail.example.com")
        );
        assert_eq!(url_host("smtp://127.0.0.1:2525"), Some("127.0.0.1"));
        assert_eq!(url_host("smtp://[::1]:25"), Some("::1"));
        assert_eq!(url_host("mail.example.com"), None);
    }

    #[test]
    fn plain_smtp_is_refused_beyond_localhost_and_the_error_hides_the_password() {
        let to = vec!["ops@example.com".to_string()];
        let err = Mailer::new("smtp://u:hunter2@mail.example.com:25", "a@b.c", &to).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("COINPILOT_SMTP_URL") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(Mailer::new("smtp://localhost:2525", "a@b.c", &to).is_ok());
        assert!(Mailer::new("smtps://u:p@mail.example.com", "a@b.c", &to).is_ok());
        assert!(Mailer::new("smtp://u:p@mail.example.com?tls=required", "a@b.c", &to).is_ok());
        let err = Mailer::new("smtp://localhost:2525", "a@b.c", &[]).unwrap_err();
        assert!(err.to_string().contains("notify.email_recipients"), "{err}");
        let err = Mailer::new("smtp://localhost:2525", "nobody", &to).unwrap_err();
        assert!(err.to_string().contains("notify.email_from"), "{err}");
    }
}
