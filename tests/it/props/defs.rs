//! Schedule files (`jobs/*.toml`) and workflow files (`workflows/*.toml`): arbitrary and
//! mutated files never panic; every error starts with the file's path, carries a line
//! inside the file when it has one, and always has one when the TOML itself is broken.

use coinpilot::defs::{DefError, SourceFile};
use coinpilot::workflow::def;
use proptest::prelude::*;

use super::{hostile, max_line};
use crate::support::registry;

const SCHEDULES: &str = r#"[[schedule]]
name = "trade-cycle"
cron = "5 * * * * *"
timezone = "Asia/Seoul"
job = "sleep"
args = { ms = 5 }
catch_up = "all"
max_catch_up = 10
misfire_grace = "30s"

[[schedule]]
name = "nightly"
cron = "0 0 3 * * *"
job = "noop"
enabled = false
"#;

const WORKFLOW: &str = r#"name = "w"
[[step]]
id = "a"
job = "echo"
args = { n = 2 }
[[step]]
id = "b"
job = "echo"
after = ["a"]
when = "a.signal == 'entry' and (a.n >= 2 or a.ok == true)"
[[step]]
id = "c"
job = "noop"
after = ["a", "b"]
"#;

fn check_error(e: &DefError, path: &str, text: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with(path), "{shown}");
    assert!(!e.message.is_empty(), "{shown}");
    if let Some(line) = e.line {
        assert!(line >= 1 && line <= max_line(text), "line {line}: {shown}");
    }
    if toml::from_str::<toml::Table>(text).is_err() {
        assert!(
            e.line.is_some(),
            "a TOML syntax error without a line: {shown}"
        );
    }
}

proptest! {
    #[test]
    fn schedule_files_never_panic_and_errors_name_file_and_line(text in hostile(SCHEDULES)) {
        let dir = std::env::temp_dir().join(format!(
            "cp-props-sched-{}-{}", std::process::id(), fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f.toml"), &text).unwrap();
        let loaded = coinpilot::schedule::def::load_dir(&dir, &registry(), &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Err(e) = loaded {
            check_error(&e, &dir.join("f.toml").display().to_string(), &text);
        }
    }

    #[test]
    fn workflow_files_never_panic_and_errors_name_file_and_line(text in hostile(WORKFLOW)) {
        let f = SourceFile::from_text("workflows/f.toml", text.clone());
        if let Err(e) = def::parse(&f, &registry()) {
            check_error(&e, "workflows/f.toml", &text);
        }
    }
}
