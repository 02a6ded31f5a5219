//! Unit tests of the configuration: precedence, errors naming key and line, secrets.

use std::collections::HashMap;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn write_file(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("coinpilot.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A throwaway directory, removed on drop (no tempfile crate for one test helper).
mod tempdir {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Dir(pub PathBuf);
    static N: AtomicUsize = AtomicUsize::new(0);

    impl Dir {
        pub fn new() -> Dir {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("coinpilot-cfg-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn defaults_when_no_file_and_no_environment() {
    let loaded = load_with(None, &env_of(&[])).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert_eq!(loaded.config.worker.concurrency, 10);
    assert_eq!(loaded.config.worker.shutdown_grace_secs, 30.0);
    assert_eq!(loaded.config.market.market, "KRW-BTC");
    assert_eq!(
        loaded.config.paper.starting_balance_krw,
        Decimal::from(1_000_000)
    );
}

#[test]
fn environment_wins_over_file_which_wins_over_defaults() {
    let (_dir, path) = write_file(
        "[worker]\nconcurrency = 4\nlease_secs = 20\nqueues = [\"market\", \"default=2\"]\n\
         delete_completed = true\n\
         [paper]\nstarting_balance_krw = \"500000.5\"\n",
    );
    let from_file = load_with(Some(&path), &env_of(&[])).unwrap().config;
    assert_eq!(from_file.worker.concurrency, 4);
    assert_eq!(from_file.worker.lease_secs, 20.0);
    assert_eq!(from_file.worker.poll_secs, 1.0, "default kept");
    assert_eq!(from_file.worker.queues, ["market", "default=2"]);
    assert!(from_file.worker.delete_completed);
    assert_eq!(
        from_file.paper.starting_balance_krw,
        Decimal::from_str("500000.5").unwrap()
    );

    let env = env_of(&[
        ("COINPILOT_WORKER_CONCURRENCY", "7"),
        ("COINPILOT_WORKER_QUEUES", "a, b=3"),
        ("COINPILOT_WORKER_DELETE_COMPLETED", "false"),
        ("COINPILOT_AI_PROVIDER", "openai"),
        ("COINPILOT_HTTP_LISTEN", "0.0.0.0:8080"),
        ("COINPILOT_PAPER_STARTING_BALANCE_KRW", "2000000"),
    ]);
    let merged = load_with(Some(&path), &env).unwrap().config;
    assert_eq!(merged.worker.concurrency, 7);
    assert_eq!(merged.worker.lease_secs, 20.0, "file value kept");
    assert_eq!(merged.worker.queues, ["a", "b=3"]);
    assert!(!merged.worker.delete_completed);
    assert_eq!(merged.ai.provider, AiProvider::Openai);
    assert_eq!(merged.http.listen, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(merged.paper.starting_balance_krw, Decimal::from(2_000_000));
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_its_line() {
    let text = "[worker]\nconcurrency = 4\nconcurency = 5\n";
    let err = Config::from_toml_str(text, "coinpilot.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("coinpilot.toml:3:"), "{err}");
    assert!(err.contains("unknown field `concurency`"), "{err}");
    let err = Config::from_toml_str("[wroker]\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.toml:1:") && err.contains("`wroker`"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_or_value_names_the_key() {
    let err = Config::from_toml_str("[market]\nsource = \"binance\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.toml:2:") && err.contains("binance"),
        "{err}"
    );
    let err = Config::from_toml_str("[paper]\nstarting_balance_krw = \"lots\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("f.toml:2:") && err.contains("lots"), "{err}");

    let mut c = Config::default();
    c.worker.concurrency = 0;
    let err = c.validate(&Secrets::default()).unwrap_err().to_string();
    assert!(err.contains("`worker.concurrency`"), "{err}");
    let mut c = Config::default();
    c.market.market = "BTC".into();
    let err = c.validate(&Secrets::default()).unwrap_err().to_string();
    assert!(err.contains("`market.market`"), "{err}");

    let err = load_with(None, &env_of(&[("COINPILOT_WORKER_LEASE_SECS", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("COINPILOT_WORKER_LEASE_SECS"), "{err}");
    let err = load_with(None, &env_of(&[("COINPILOT_AI_PROVIDER", "gpt")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("COINPILOT_AI_PROVIDER"), "{err}");
}

#[test]
fn a_secret_in_the_file_is_refused() {
    let text = "[database]\nurl = \"postgres://u:pw@db/cp\"\n";
    let err = Config::from_toml_str(text, "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml:2") && err.contains("`database.url`") && err.contains("DATABASE_URL"),
        "{err}"
    );
    assert!(
        !err.contains("pw@"),
        "the secret itself is not echoed: {err}"
    );
}

#[test]
fn the_anthropic_provider_needs_its_key_from_the_environment() {
    let env = env_of(&[("COINPILOT_AI_PROVIDER", "anthropic")]);
    let err = load_with(None, &env).unwrap_err().to_string();
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    let env = env_of(&[
        ("COINPILOT_AI_PROVIDER", "anthropic"),
        ("ANTHROPIC_API_KEY", "sk-ant-1"),
    ]);
    assert!(load_with(None, &env).is_ok());
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let err = load_with(Some(Path::new("/nonexistent/coinpilot.toml")), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/coinpilot.toml"), "{err}");
}

#[test]
fn the_shipped_example_file_is_valid_and_complete() {
    let text = include_str!("../../ops/coinpilot.example.toml");
    let c = Config::from_toml_str(text, "coinpilot.example.toml").unwrap();
    c.validate(&Secrets::default()).unwrap();
    // It shows every key: serialising the defaults names nothing it lacks.
    let table: toml::Table = toml::from_str(text).unwrap();
    let defaults: toml::Table =
        toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                table.get(section).and_then(|s| s.get(key)).is_some(),
                "example lacks {section}.{key}"
            );
        }
    }
}

#[test]
fn a_misspelt_override_is_spotted() {
    let queried = RefCell::new(BTreeSet::new());
    let env = |k: &str| {
        queried.borrow_mut().insert(k.to_string());
        None
    };
    load_with(None, &env).unwrap();
    let vars = [
        "COINPILOT_WORKER_CONCURENCY",
        "COINPILOT_WORKER_CONCURRENCY",
        "COINPILOT_DATA_DIR",
        "PATH",
    ]
    .map(String::from);
    assert_eq!(
        unknown_overrides(vars.into_iter(), &queried.borrow()),
        ["COINPILOT_WORKER_CONCURENCY"]
    );
}

#[test]
fn notify_keys_have_defaults_overrides_and_checked_addresses() {
    let c = load_with(None, &env_of(&[])).unwrap().config;
    assert_eq!(c.notify.reports_dir(), PathBuf::from("reports"));
    assert_eq!(c.notify.email_from(), NotifyConfig::DEFAULT_EMAIL_FROM);
    let env = env_of(&[
        ("COINPILOT_NOTIFY_REPORTS_DIR", "/var/lib/coinpilot/reports"),
        ("COINPILOT_NOTIFY_EMAIL_FROM", "bot@example.com"),
        ("COINPILOT_SMTP_URL", "smtps://u:mailpass@smtp.example.com"),
    ]);
    let loaded = load_with(None, &env).unwrap();
    assert_eq!(
        loaded.config.notify.reports_dir(),
        PathBuf::from("/var/lib/coinpilot/reports")
    );
    assert_eq!(loaded.config.notify.email_from(), "bot@example.com");
    let masked = &loaded.secrets.masked()["COINPILOT_SMTP_URL"];
    assert_eq!(masked, "smtps://u:****@smtp.example.com");
    let err = load_with(None, &env_of(&[("COINPILOT_NOTIFY_EMAIL_FROM", "nobody")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("notify.email_from"), "{err}");
}
