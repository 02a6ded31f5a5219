//! `coinpilot config check`: prints the effective configuration with secrets masked, and
//! refuses an invalid one with exit code 2 and a message naming the key and line. Needs no
//! database.

use std::path::PathBuf;
use std::process::{Command, Output};

const SECRETS: [(&str, &str); 4] = [
    ("ANTHROPIC_API_KEY", "sk-ant-topsecret-1234"),
    ("COINPILOT_METRICS_TOKEN", "metrics-tok-5678"),
    (
        "COINPILOT_DISCORD_WEBHOOK_URL",
        "https://discord.test/hook/abcdef",
    ),
    (
        "DATABASE_URL",
        "postgres://cp:db-pass-9999@db.coinpilot.svc.cluster.local/cp",
    ),
];

/// A scratch directory to run in, so no ./coinpilot.toml of the checkout is picked up.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coinpilot-config-cli-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config_check(dir: &PathBuf, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coinpilot"));
    c.current_dir(dir)
        .env_remove("COINPILOT_CONFIG")
        .env("RUST_LOG", "warn");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.args(args).args(["config", "check"]).output().unwrap()
}

#[test]
fn config_check_masks_secrets_given_in_the_environment() {
    let dir = scratch("mask");
    let mut env = SECRETS.to_vec();
    env.extend([
        ("COINPILOT_WORKER_CONCURRENCY", "3"),
        ("COINPILOT_AI_PROVIDER", "anthropic"),
    ]);
    for json in [false, true] {
        let out = config_check(&dir, &env, if json { &["--json"] } else { &[] });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{all}");
        for (var, secret) in SECRETS {
            assert!(!all.contains(secret), "{var}'s value leaked:\n{all}");
        }
        assert!(all.contains("****"), "{all}");
        assert!(
            all.contains("db.coinpilot.svc.cluster.local"),
            "non-secret URL parts stay: {all}"
        );
        if json {
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(v["config"]["worker"]["concurrency"], 3);
            assert_eq!(v["secrets"]["ANTHROPIC_API_KEY"], "****");
        } else {
            assert!(stdout.contains("concurrency = 3"), "{stdout}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_check_refuses_an_invalid_file_with_exit_2_naming_key_and_line() {
    let dir = scratch("invalid");
    let cases = [
        (
            "typo.toml",
            "[worker]\nconcurrency = 2\nshutdown_grace = 10\n",
            "typo.toml:3:",
            "shutdown_grace",
        ),
        (
            "secret.toml",
            "[ai]\napi_key = \"sk-ant-in-file\"\n",
            "secret.toml:2",
            "ANTHROPIC_API_KEY",
        ),
        (
            "value.toml",
            "[worker]\nconcurrency = 0\n",
            "worker.concurrency",
            "at least 1",
        ),
    ];
    for (file, text, where_, what) in cases {
        std::fs::write(dir.join(file), text).unwrap();
        // Once through --config, once through COINPILOT_CONFIG.
        for out in [
            config_check(&dir, &[], &["--config", file]),
            config_check(&dir, &[("COINPILOT_CONFIG", file)], &[]),
        ] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{file}: {err}");
            assert!(err.contains(where_) && err.contains(what), "{file}: {err}");
            assert!(!err.contains("sk-ant-in-file"), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_worker_refuses_an_invalid_config_before_touching_the_database() {
    let dir = scratch("worker");
    let out = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_coinpilot"));
        c.current_dir(&dir)
            .env_remove("COINPILOT_CONFIG")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nowhere")
            .env("COINPILOT_WORKER_LEASE_SECS", "-1");
        c.arg("worker").output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("worker.lease_secs"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
