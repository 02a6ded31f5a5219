//! Configuration (SPEC part C): one TOML file plus `COINPILOT_*` environment overrides,
//! validated once at start, with errors that name the key (and the file line for TOML
//! errors). Precedence: command-line flags > environment > file > defaults; this module
//! merges the last three, the CLI applies its flags on top. Secrets come only from the
//! environment ([`secrets`]). It reads the file and the environment and nothing else.
//!
//! Options (file key — environment variable — default — effect):
//! - `worker.queues` — `COINPILOT_WORKER_QUEUES` (comma separated) — every queue a job kind
//!   uses — queues served, `name=N` caps this worker's slots on one;
//! - `worker.concurrency` — `COINPILOT_WORKER_CONCURRENCY` — 10 — jobs at once per worker;
//! - `worker.prefetch` — `COINPILOT_WORKER_PREFETCH` — 0 — jobs claimed ahead of free slots
//!   (each claim commit then serves many jobs; see `queue::runtime`);
//! - `worker.delete_completed` — `COINPILOT_WORKER_DELETE_COMPLETED` — false — delete a
//!   job this worker completes (no output, no workflow run) instead of keeping it until
//!   pruning (`queue::claim::CompletedJobs`);
//! - `worker.lease_secs` — `COINPILOT_WORKER_LEASE_SECS` — 60 — job lease;
//! - `worker.poll_secs` — `COINPILOT_WORKER_POLL_SECS` — 1 — poll when no NOTIFY arrives;
//! - `worker.rescue_interval_secs` — `COINPILOT_WORKER_RESCUE_INTERVAL_SECS` — 5;
//! - `worker.shutdown_grace_secs` — `COINPILOT_WORKER_SHUTDOWN_GRACE_SECS` — 30 — time
//!   running jobs get at SIGTERM before they are released;
//! - `database.max_connections` — `COINPILOT_DATABASE_MAX_CONNECTIONS` — concurrency + 6;
//! - `http.listen` — `COINPILOT_HTTP_LISTEN` — off for `worker`, 127.0.0.1:8080 for `up`;
//! - `http.secure_cookies` — `COINPILOT_HTTP_SECURE_COOKIES` — false — mark the dashboard's
//!   session cookie `Secure` (behind https);
//! - `http.trust_forwarded_for` — `COINPILOT_HTTP_TRUST_FORWARDED_FOR` — false — the login
//!   rate limit keys on the last `X-Forwarded-For` address (only behind a proxy);
//! - `market.source` (`replay` | `upbit`) and `market.market` — `COINPILOT_MARKET_SOURCE`,
//!   `COINPILOT_MARKET_MARKET` — replay, KRW-BTC;
//! - `ai.provider` (`rules` | `anthropic` | `openai`), `ai.model`, `ai.base_url` —
//!   `COINPILOT_AI_PROVIDER`, `COINPILOT_AI_MODEL`, `COINPILOT_AI_BASE_URL` — rules;
//! - `notify.email_recipients` — `COINPILOT_NOTIFY_EMAIL_RECIPIENTS` — none;
//! - `notify.email_from` — `COINPILOT_NOTIFY_EMAIL_FROM` — `CoinPilot <coinpilot@localhost>`
//!   — sender of the daily report e-mail (sent only when `COINPILOT_SMTP_URL` is set);
//! - `notify.reports_dir` — `COINPILOT_NOTIFY_REPORTS_DIR` — `reports` — where messages
//!   are written when no Discord webhook is configured;
//! - `paper.starting_balance_krw` (a decimal string) —
//!   `COINPILOT_PAPER_STARTING_BALANCE_KRW` — "1000000".

pub mod secrets;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};

pub use secrets::Secrets;

/// The file read when neither `--config` nor `COINPILOT_CONFIG` names one (optional).
pub const DEFAULT_FILE: &str = "coinpilot.toml";

/// Looks up one environment variable; tests pass a map instead of the process environment.
pub type EnvSource<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Errors of loading and validating the configuration; each names the key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}: `{key}` is a secret and is never read from the config file; set {env} in the environment instead")]
    SecretInFile {
        path: String,
        line: usize,
        key: String,
        env: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// The whole configuration. Every section is optional in the file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub worker: WorkerSection,
    pub http: HttpConfig,
    pub market: MarketConfig,
    pub ai: AiConfig,
    pub notify: NotifyConfig,
    pub paper: PaperConfig,
}

/// `[database]`: the URL itself is a secret (`DATABASE_URL`), so only pool sizing lives here.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// `[worker]`: the defaults of `coinpilot worker` / `up` flags of the same names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Empty: every queue a registered job kind uses, and `default`.
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub prefetch: usize,
    pub delete_completed: bool,
    pub lease_secs: f64,
    pub poll_secs: f64,
    pub rescue_interval_secs: f64,
    pub shutdown_grace_secs: f64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            queues: Vec::new(),
            concurrency: 10,
            prefetch: 0,
            delete_completed: false,
            lease_secs: 60.0,
            poll_secs: 1.0,
            rescue_interval_secs: 5.0,
            shutdown_grace_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Mark the dashboard's session cookie `Secure` (set it when served behind https).
    pub secure_cookies: bool,
    /// Key the login rate limit on the last `X-Forwarded-For` address (set it only behind
    /// a proxy that appends it; otherwise clients could pick their own address).
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarketSource {
    #[default]
    Replay,
    Upbit,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    pub source: MarketSource,
    pub market: String,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            source: MarketSource::Replay,
            market: "KRW-BTC".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AiProvider {
    #[default]
    Rules,
    Anthropic,
    Openai,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    pub provider: AiProvider,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The endpoint of an OpenAI-compatible provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub email_recipients: Vec<String>,
    /// Sender of the daily report e-mail; `None`: [`NotifyConfig::DEFAULT_EMAIL_FROM`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_from: Option<String>,
    /// The file sink's directory; `None`: [`NotifyConfig::DEFAULT_REPORTS_DIR`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_dir: Option<PathBuf>,
}

impl NotifyConfig {
    pub const DEFAULT_EMAIL_FROM: &'static str = "CoinPilot <coinpilot@localhost>";
    pub const DEFAULT_REPORTS_DIR: &'static str = "reports";

    pub fn email_from(&self) -> &str {
        self.email_from
            .as_deref()
            .unwrap_or(Self::DEFAULT_EMAIL_FROM)
    }

    pub fn reports_dir(&self) -> PathBuf {
        self.reports_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(Self::DEFAULT_REPORTS_DIR))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperConfig {
    /// A string in the file ("1000000.50"): money never passes through a float.
    #[serde(with = "decimal_string")]
    pub starting_balance_krw: Decimal,
}

impl Default for PaperConfig {
    fn default() -> Self {
        PaperConfig {
            starting_balance_krw: Decimal::from(1_000_000),
        }
    }
}

mod decimal_string {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s = String::deserialize(d)?;
        Decimal::from_str(s.trim())
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a decimal amount ({e})")))
    }
}

/// The configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub secrets: Secrets,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// Loads from `explicit` (from `--config` or `COINPILOT_CONFIG`: must exist) or else
/// `./coinpilot.toml` when present, then the process environment, and validates.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let queried = RefCell::new(BTreeSet::new());
    let env = |k: &str| {
        queried.borrow_mut().insert(k.to_string());
        std::env::var(k).ok().filter(|v| !v.trim().is_empty())
    };
    let loaded = load_with(explicit, &env)?;
    // A warning, not an error: other parts of the program may read variables of their own
    // under these prefixes, and refusing to start over one would be worse than a log line.
    for var in unknown_overrides(std::env::vars().map(|(k, _)| k), &queried.borrow()) {
        tracing::warn!(variable = %var, "unknown COINPILOT_* configuration override ignored (see `coinpilot config check`)");
    }
    Ok(loaded)
}

/// Section prefixes of the overrides, to spot a misspelt one.
const OVERRIDE_PREFIXES: &[&str] = &[
    "COINPILOT_DATABASE_",
    "COINPILOT_WORKER_",
    "COINPILOT_HTTP_",
    "COINPILOT_MARKET_",
    "COINPILOT_AI_",
    "COINPILOT_NOTIFY_",
    "COINPILOT_PAPER_",
];

/// Variables that look like overrides (`COINPILOT_<SECTION>_…`) but that no key reads.
pub fn unknown_overrides(
    vars: impl Iterator<Item = String>,
    known: &BTreeSet<String>,
) -> Vec<String> {
    vars.filter(|v| OVERRIDE_PREFIXES.iter().any(|p| v.starts_with(p)))
        .filter(|v| !known.contains(v))
        .collect()
}

/// [`load`] with the environment given; an empty variable counts as unset.
pub fn load_with(explicit: Option<&Path>, env: &EnvSource<'_>) -> Result<Loaded, ConfigError> {
    let file = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    let mut config = match &file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            Config::from_toml_str(&text, &p.display().to_string())?
        }
        None => Config::default(),
    };
    config.apply_env(env)?;
    let secrets = Secrets::from_env(env);
    config.validate(&secrets)?;
    Ok(Loaded {
        config,
        secrets,
        file,
    })
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Parses a file's text (`path` only names it in errors); refuses secrets and unknown
    /// keys. Does not validate values: see [`Config::validate`].
    pub fn from_toml_str(text: &str, path: &str) -> Result<Config, ConfigError> {
        secrets::refuse_secrets_in_file(text, path)?;
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError::Toml {
                path: path.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Applies the `COINPILOT_<SECTION>_<KEY>` overrides found in `env`.
    pub fn apply_env(&mut self, env: &EnvSource<'_>) -> Result<(), ConfigError> {
        let w = &mut self.worker;
        if let Some(v) = env("COINPILOT_WORKER_QUEUES") {
            w.queues = split_list(&v);
        }
        set_parsed(env, "COINPILOT_WORKER_CONCURRENCY", &mut w.concurrency)?;
        set_parsed(env, "COINPILOT_WORKER_PREFETCH", &mut w.prefetch)?;
        set_parsed(
            env,
            "COINPILOT_WORKER_DELETE_COMPLETED",
            &mut w.delete_completed,
        )?;
        set_parsed(env, "COINPILOT_WORKER_LEASE_SECS", &mut w.lease_secs)?;
        set_parsed(env, "COINPILOT_WORKER_POLL_SECS", &mut w.poll_secs)?;
        set_parsed(
            env,
            "COINPILOT_WORKER_RESCUE_INTERVAL_SECS",
            &mut w.rescue_interval_secs,
        )?;
        set_parsed(
            env,
            "COINPILOT_WORKER_SHUTDOWN_GRACE_SECS",
            &mut w.shutdown_grace_secs,
        )?;
        set_some(
            env,
            "COINPILOT_DATABASE_MAX_CONNECTIONS",
            &mut self.database.max_connections,
        )?;
        set_some(env, "COINPILOT_HTTP_LISTEN", &mut self.http.listen)?;
        set_parsed(
            env,
            "COINPILOT_HTTP_SECURE_COOKIES",
            &mut self.http.secure_cookies,
        )?;
        set_parsed(
            env,
            "COINPILOT_HTTP_TRUST_FORWARDED_FOR",
            &mut self.http.trust_forwarded_for,
        )?;
        set_enum(env, "COINPILOT_MARKET_SOURCE", &mut self.market.source)?;
        set_parsed(env, "COINPILOT_MARKET_MARKET", &mut self.market.market)?;
        set_enum(env, "COINPILOT_AI_PROVIDER", &mut self.ai.provider)?;
        set_some(env, "COINPILOT_AI_MODEL", &mut self.ai.model)?;
        set_some(env, "COINPILOT_AI_BASE_URL", &mut self.ai.base_url)?;
        if let Some(v) = env("COINPILOT_NOTIFY_EMAIL_RECIPIENTS") {
            self.notify.email_recipients = split_list(&v);
        }
        set_some(
            env,
            "COINPILOT_NOTIFY_EMAIL_FROM",
            &mut self.notify.email_from,
        )?;
        set_some(
            env,
            "COINPILOT_NOTIFY_REPORTS_DIR",
            &mut self.notify.reports_dir,
        )?;
        set_parsed(
            env,
            "COINPILOT_PAPER_STARTING_BALANCE_KRW",
            &mut self.paper.starting_balance_krw,
        )
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self, secrets: &Secrets) -> Result<(), ConfigError> {
        self.worker.validate()?;
        if self.database.max_connections == Some(0) {
            return invalid("database.max_connections", "must be at least 1".into());
        }
        if !is_krw_market(&self.market.market) {
            return invalid(
                "market.market",
                format!(
                    "`{}` is not an Upbit KRW market such as KRW-BTC",
                    self.market.market
                ),
            );
        }
        if self.ai.provider == AiProvider::Anthropic
            && secrets.get("ANTHROPIC_API_KEY").is_none()
            && secrets.get("COINPILOT_AI_API_KEY").is_none()
        {
            return invalid(
                "ai.provider",
                "`anthropic` needs ANTHROPIC_API_KEY in the environment".into(),
            );
        }
        let recipients = &self.notify.email_recipients;
        if let Some(bad) = recipients.iter().find(|r| !r.contains('@')) {
            return invalid(
                "notify.email_recipients",
                format!("`{bad}` is not an e-mail address"),
            );
        }
        if let Some(from) = &self.notify.email_from {
            if !from.contains('@') {
                return invalid(
                    "notify.email_from",
                    format!("`{from}` is not an e-mail address"),
                );
            }
        }
        if self.paper.starting_balance_krw <= Decimal::ZERO {
            return invalid("paper.starting_balance_krw", "must be positive".into());
        }
        Ok(())
    }
}

impl WorkerSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return invalid("worker.concurrency", "must be at least 1".into());
        }
        for (key, v) in [
            ("worker.lease_secs", self.lease_secs),
            ("worker.poll_secs", self.poll_secs),
            ("worker.rescue_interval_secs", self.rescue_interval_secs),
            ("worker.shutdown_grace_secs", self.shutdown_grace_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(
                    key,
                    format!("must be a positive number of seconds, got {v}"),
                );
            }
        }
        match crate::queue::WorkerConfig::parse_queues(&self.queues.join(",")) {
            Ok(_) => Ok(()),
            Err(e) => invalid("worker.queues", e.to_string()),
        }
    }
}

fn invalid(key: &str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        message,
    })
}

fn is_krw_market(m: &str) -> bool {
    m.strip_prefix("KRW-").is_some_and(|coin| {
        !coin.is_empty()
            && coin
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    })
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_env<T: FromStr>(var: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e| ConfigError::Env {
        var: var.into(),
        message: format!("`{v}`: {e}"),
    })
}

fn set_parsed<T: FromStr>(env: &EnvSource<'_>, var: &str, slot: &mut T) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = env(var) {
        *slot = parse_env(var, &v)?;
    }
    Ok(())
}

fn set_some<T: FromStr>(
    env: &EnvSource<'_>,
    var: &str,
    slot: &mut Option<T>,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = env(var) {
        *slot = Some(parse_env(var, &v)?);
    }
    Ok(())
}

/// For the lowercase enums: the same names as in the file.
fn set_enum<T: DeserializeOwned>(
    env: &EnvSource<'_>,
    var: &str,
    slot: &mut T,
) -> Result<(), ConfigError> {
    if let Some(v) = env(var) {
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            v.trim().into_deserializer();
        *slot = T::deserialize(de).map_err(|e| ConfigError::Env {
            var: var.into(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
