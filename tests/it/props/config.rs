//! The config file and its `COINPILOT_*` overrides: an arbitrary or mutated file never
//! panics and its error names the file with a line inside it (or the key); an arbitrary
//! value in any override variable is refused with an error that names that variable, or
//! accepted and then validated with an error that names a key.

use coinpilot::config::{Config, ConfigError, Secrets};
use proptest::prelude::*;

use super::{hostile, max_line};

const EXAMPLE: &str = include_str!("../../../ops/coinpilot.example.toml");

const VARS: &[&str] = &[
    "COINPILOT_WORKER_QUEUES",
    "COINPILOT_WORKER_CONCURRENCY",
    "COINPILOT_WORKER_LEASE_SECS",
    "COINPILOT_WORKER_POLL_SECS",
    "COINPILOT_WORKER_RESCUE_INTERVAL_SECS",
    "COINPILOT_WORKER_SHUTDOWN_GRACE_SECS",
    "COINPILOT_DATABASE_MAX_CONNECTIONS",
    "COINPILOT_HTTP_LISTEN",
    "COINPILOT_HTTP_SECURE_COOKIES",
    "COINPILOT_HTTP_TRUST_FORWARDED_FOR",
    "COINPILOT_MARKET_SOURCE",
    "COINPILOT_MARKET_MARKET",
    "COINPILOT_AI_PROVIDER",
    "COINPILOT_AI_MODEL",
    "COINPILOT_AI_BASE_URL",
    "COINPILOT_NOTIFY_EMAIL_RECIPIENTS",
    "COINPILOT_PAPER_STARTING_BALANCE_KRW",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "-1",
            "3",
            "1.5",
            "nan",
            "inf",
            "1e400",
            "true",
            "yes",
            "replay",
            "upbit",
            "rules",
            "anthropic",
            "KRW-BTC",
            "krw-btc",
            "127.0.0.1:8080",
            "[::1]:0",
            "a,b,,c",
            "orders=2",
            "18446744073709551616",
            "-0",
            "1000000.5",
        ])
        .prop_map(str::to_string),
        super::noise(20),
        "\\PC{0,20}",
    ]
}

fn check_validated(config: &Config) {
    if let Err(e) = config.validate(&Secrets::default()) {
        let shown = e.to_string();
        assert!(
            matches!(e, ConfigError::Invalid { ref key, .. } if !key.is_empty()),
            "{shown}"
        );
    }
}

proptest! {
    #[test]
    fn config_files_never_panic_and_errors_name_file_line_or_key(text in hostile(EXAMPLE)) {
        match Config::from_toml_str(&text, "c.toml") {
            Ok(config) => check_validated(&config),
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("c.toml:"), "{}", shown);
                let line = match e {
                    ConfigError::Toml { line, .. } | ConfigError::SecretInFile { line, .. } => line,
                    other => panic!("unexpected error kind: {other}"),
                };
                prop_assert!(line >= 1 && line <= max_line(&text), "line {}: {}", line, shown);
            }
        }
    }

    #[test]
    fn env_overrides_name_the_variable_they_refuse(
        set in prop::collection::btree_map(prop::sample::select(VARS), value(), 1..5)
    ) {
        let mut config = Config::from_toml_str(EXAMPLE, "c.toml").unwrap();
        let env = |k: &str| set.get(k).cloned();
        match config.apply_env(&env) {
            Ok(()) => check_validated(&config),
            Err(ConfigError::Env { var, message }) => {
                prop_assert!(set.contains_key(var.as_str()), "{} was not set", var);
                prop_assert!(!message.is_empty());
            }
            Err(other) => panic!("an override error that names no variable: {other}"),
        }
    }
}
