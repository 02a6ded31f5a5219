//! Secrets: read only from the environment, never from the config file, and never printed.
//! [`refuse_secrets_in_file`] turns a secret-looking key in the TOML file into an error that
//! names the key, its line and the variable to set instead; [`Secrets`] holds the values and
//! shows them only masked (`****`), including through `Debug`, so a stray log line cannot
//! leak one.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use super::{line_col, ConfigError, EnvSource};

/// What every masked secret looks like.
pub const MASK: &str = "****";

/// Every secret CoinPilot reads, with what it is for.
pub const SECRET_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "PostgreSQL URL; its password is masked"),
    (
        "COINPILOT_METRICS_TOKEN",
        "bearer token that /metrics requires",
    ),
    (
        "COINPILOT_DASHBOARD_PASSWORD",
        "dashboard login password (plain)",
    ),
    (
        "COINPILOT_DASHBOARD_PASSWORD_HASH",
        "dashboard login password (argon2 hash)",
    ),
    (
        "COINPILOT_DASHBOARD_VIEWER_PASSWORD",
        "read-only dashboard login password (plain)",
    ),
    (
        "COINPILOT_DASHBOARD_VIEWER_PASSWORD_HASH",
        "read-only dashboard login password (argon2 hash)",
    ),
    (
        "COINPILOT_DISCORD_WEBHOOK_URL",
        "Discord webhook for notifications",
    ),
    (
        "COINPILOT_SMTP_URL",
        "SMTP URL for the daily report e-mail (smtp://user:pass@host:port, smtps://…); its password is masked",
    ),
    ("ANTHROPIC_API_KEY", "Anthropic API key for the AI reviewer"),
    (
        "OPENAI_API_KEY",
        "OpenAI(-compatible) API key for the AI reviewer",
    ),
    (
        "COINPILOT_AI_API_KEY",
        "API key for the AI reviewer, when the provider's own variable is not set",
    ),
    (
        "COINPILOT_UPBIT_ACCESS_KEY",
        "Upbit API access key (live trading)",
    ),
    (
        "COINPILOT_UPBIT_SECRET_KEY",
        "Upbit API secret key (live trading)",
    ),
];

/// The variable to set instead of a file key, when the key names a secret.
fn secret_env_for(path: &str) -> Option<&'static str> {
    let exact = match path {
        "database.url" | "database.password" => "DATABASE_URL",
        "http.metrics_token" | "metrics.token" => "COINPILOT_METRICS_TOKEN",
        "dashboard.password" => "COINPILOT_DASHBOARD_PASSWORD",
        "dashboard.password_hash" => "COINPILOT_DASHBOARD_PASSWORD_HASH",
        "notify.discord_webhook_url" | "notify.webhook_url" | "discord.webhook_url" => {
            "COINPILOT_DISCORD_WEBHOOK_URL"
        }
        "ai.api_key" | "ai.anthropic_api_key" => "ANTHROPIC_API_KEY",
        "ai.openai_api_key" => "OPENAI_API_KEY",
        "notify.smtp_url" | "smtp.url" => "COINPILOT_SMTP_URL",
        "upbit.access_key" | "market.access_key" => "COINPILOT_UPBIT_ACCESS_KEY",
        "upbit.secret_key" | "market.secret_key" => "COINPILOT_UPBIT_SECRET_KEY",
        _ => "",
    };
    if !exact.is_empty() {
        return Some(exact);
    }
    // Anything else that looks like a credential is refused too: better a clear error than
    // a key that deny_unknown_fields reports as a mere typo while the secret sits in git.
    let leaf = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    let looks_secret = [
        "password",
        "token",
        "secret",
        "api_key",
        "webhook",
        "access_key",
    ]
    .iter()
    .any(|w| leaf.contains(w));
    looks_secret.then_some("the matching environment variable (see `coinpilot config check`)")
}

/// Fails on the first key of `text` that names a secret. A TOML syntax error is left to the
/// typed parse, which reports it with its position.
pub fn refuse_secrets_in_file(text: &str, path: &str) -> Result<(), ConfigError> {
    let Ok(table) = DeTable::parse(text) else {
        return Ok(());
    };
    walk(table.get_ref(), "", text, path)
}

fn walk(table: &DeTable<'_>, prefix: &str, text: &str, path: &str) -> Result<(), ConfigError> {
    for (key, value) in table.iter() {
        let full = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some(env) = secret_env_for(&full) {
            let (line, _) = line_col(text, key.span().start);
            return Err(ConfigError::SecretInFile {
                path: path.to_string(),
                line,
                key: full,
                env: env.to_string(),
            });
        }
        walk_value(value.get_ref(), &full, text, path)?;
    }
    Ok(())
}

fn walk_value(value: &DeValue<'_>, full: &str, text: &str, path: &str) -> Result<(), ConfigError> {
    match value {
        DeValue::Table(t) => walk(t, full, text, path),
        DeValue::Array(items) => items
            .iter()
            .try_for_each(|item| walk_value(item.get_ref(), full, text, path)),
        _ => Ok(()),
    }
}

/// The secrets found in the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<&'static str, String>,
}

impl Secrets {
    pub fn from_env(env: &EnvSource<'_>) -> Self {
        let values = SECRET_VARS
            .iter()
            .filter_map(|(name, _)| env(name).map(|v| (*name, v)))
            .collect();
        Secrets { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every secret by name: `****` when set (a database URL keeps all but its password),
    /// `(not set)` otherwise.
    pub fn masked(&self) -> BTreeMap<&'static str, String> {
        SECRET_VARS
            .iter()
            .map(|(name, _)| {
                let shown = match self.values.get(name) {
                    None => "(not set)".to_string(),
                    Some(url) if *name == "DATABASE_URL" => mask_url_password(url),
                    Some(url) if *name == "COINPILOT_SMTP_URL" => mask_url_password(url),
                    Some(_) => MASK.to_string(),
                };
                (*name, shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:****@host/db`. A URL that cannot be read
/// is masked whole: it may still carry a password somewhere. A `password=` query parameter
/// (libpq and sqlx read one) is masked too.
pub fn mask_url_password(url: &str) -> String {
    let url = &mask_query_password(url);
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return MASK.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    // A password may itself contain '@' when not percent-encoded: the last '@' ends it.
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let creds = &authority[..at];
    match creds.find(':') {
        Some(c) => format!(
            "{}{}:{MASK}{}",
            &url[..scheme_end],
            &creds[..c],
            &url[scheme_end + at..]
        ),
        None => url.to_string(),
    }
}

/// `…?sslmode=require&password=pw` → `…?sslmode=require&password=****`; other parameters
/// are kept as written.
fn mask_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Whether a URL carries a password.
pub fn url_has_password(url: &str) -> bool {
    mask_url_password(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_keeps_everything_but_its_password() {
        assert_eq!(
            mask_url_password("postgres://cp:s3cr@t@db.coinpilot.svc.cluster.local:5432/cp"),
            "postgres://cp:****@db.coinpilot.svc.cluster.local:5432/cp"
        );
        assert_eq!(mask_url_password("postgres://cp@h/d"), "postgres://cp@h/d");
        assert_eq!(mask_url_password("not a url pw"), MASK);
        assert!(url_has_password("postgres://a:b@h/d"));
        assert!(!url_has_password("postgres://a@h/d?sslmode=require"));
    }

    #[test]
    fn a_password_in_the_query_or_a_url_without_scheme_is_masked() {
        assert_eq!(
            mask_url_password("postgres://u@h/d?sslmode=disable&password=pw1&x=y"),
            "postgres://u@h/d?sslmode=disable&password=****&x=y"
        );
        assert_eq!(
            mask_url_password("postgres://u:pw2@h/d?PASSWORD=pw3"),
            "postgres://u:****@h/d?PASSWORD=****"
        );
        assert_eq!(mask_url_password("u:pw4@h/d"), MASK);
        assert!(url_has_password("postgres://u@h/d?password=pw5"));
    }

    #[test]
    fn secrets_are_masked_even_in_debug_output() {
        let env = |k: &str| match k {
            "ANTHROPIC_API_KEY" => Some("sk-ant-verysecret".to_string()),
            "DATABASE_URL" => Some("postgres://u:hunter2@h/d".to_string()),
            _ => None,
        };
        let s = Secrets::from_env(&env);
        let shown = format!("{s:?} {:?}", s.masked());
        assert!(
            !shown.contains("verysecret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(s.masked()["ANTHROPIC_API_KEY"], MASK);
        assert_eq!(s.masked()["DATABASE_URL"], "postgres://u:****@h/d");
        assert_eq!(s.masked()["COINPILOT_METRICS_TOKEN"], "(not set)");
        assert_eq!(s.get("ANTHROPIC_API_KEY"), Some("sk-ant-verysecret"));
    }

    #[test]
    fn a_secret_key_in_the_file_is_refused_with_its_line_and_variable() {
        let text = "[ai]\nprovider = \"anthropic\"\napi_key = \"sk-ant-x\"\n";
        let err = refuse_secrets_in_file(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml:3"), "{err}");
        assert!(
            err.contains("`ai.api_key`") && err.contains("ANTHROPIC_API_KEY"),
            "{err}"
        );
        let text = "[notify]\nsmtp_password = \"x\"\n";
        let err = refuse_secrets_in_file(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`notify.smtp_password`"), "{err}");
        assert!(refuse_secrets_in_file("[worker]\nconcurrency = 3\n", "c").is_ok());
    }
}
