//! Property tests of every parser of definition files: random mutations of valid schedule
//! and workflow files, random cron strings and random conditions never panic; each bad
//! input gives an error that names its file (and a line, when the TOML itself is broken).
//! Seeded, so a failure is reproducible: `COINPILOT_FUZZ_SEED`, `COINPILOT_FUZZ_CASES`.

use coinpilot::defs::SourceFile;
use coinpilot::schedule::cron::CronSchedule;
use coinpilot::workflow::condition::Condition;
use coinpilot::workflow::def;

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
"#;

const WORKFLOW: &str = r#"name = "w"
[[step]]
id = "a"
job = "echo"
[[step]]
id = "b"
job = "echo"
after = ["a"]
when = "a.signal == 'entry' and (a.n >= 2 or a.ok == true)"
"#;

fn rng() -> fastrand::Rng {
    let seed = std::env::var("COINPILOT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_251_201);
    fastrand::Rng::with_seed(seed)
}

fn cases() -> usize {
    std::env::var("COINPILOT_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000)
}

const ALPHABET: &[char] = &[
    '[', ']', '{', '}', '"', '\'', '=', ',', '.', '\n', ' ', '#', '*', '/', '-', '0', '7', '9',
    'a', 'z', '(', ')', '<', '>', '!', 'é', '\\', '\t',
];

/// One random edit: delete, insert or replace a character, or duplicate a line.
fn mutate(r: &mut fastrand::Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..r.usize(1..4) {
        let at = r.usize(..=chars.len());
        match r.u8(..4) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => chars.insert(at, ALPHABET[r.usize(..ALPHABET.len())]),
            2 if at < chars.len() => chars[at] = ALPHABET[r.usize(..ALPHABET.len())],
            _ => {
                let s: String = chars.iter().collect();
                let lines: Vec<&str> = s.lines().collect();
                let l = lines[r.usize(..lines.len())].to_string();
                chars.extend(format!("\n{l}\n").chars());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_schedule_files_never_panic_and_name_their_file() {
    let mut r = rng();
    let reg = registry();
    let dir = std::env::temp_dir().join(format!("cp-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..cases() / 3 {
        let text = mutate(&mut r, SCHEDULES);
        std::fs::write(dir.join("f.toml"), &text).unwrap();
        match coinpilot::schedule::def::load_dir(&dir, &reg, &[]) {
            Ok(_) => ok += 1,
            Err(e) => {
                bad += 1;
                assert!(e.to_string().contains("f.toml"), "{e}\n---\n{text}");
                assert!(!e.message.is_empty());
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        bad > 0 && ok > 0,
        "the mutations should give both outcomes ({ok} ok, {bad} bad)"
    );
}

#[test]
fn mutated_workflow_files_never_panic_and_locate_toml_errors() {
    let mut r = rng();
    let reg = registry();
    let mut bad = 0;
    for _ in 0..cases() / 3 {
        let text = mutate(&mut r, WORKFLOW);
        let f = SourceFile::from_text("workflows/f.toml", text.clone());
        if let Err(e) = def::parse(&f, &reg) {
            bad += 1;
            assert!(e.to_string().starts_with("workflows/f.toml"), "{e}");
            if toml::from_str::<toml::Table>(&text).is_err() {
                assert!(e.line.is_some(), "a TOML syntax error without a line: {e}");
            }
        }
    }
    assert!(bad > 0);
}

#[test]
fn random_cron_strings_and_conditions_never_panic() {
    let mut r = rng();
    let fields = [
        "*", "*/5", "0", "59", "60", "1-5", "MON", "7", "L", "?", "1,2", "-1", "x", "",
    ];
    for _ in 0..cases() {
        let n = r.usize(0..8);
        let expr: Vec<&str> = (0..n).map(|_| fields[r.usize(..fields.len())]).collect();
        let expr = expr.join(" ");
        if let Ok(c) = CronSchedule::parse(&expr, chrono_tz::Tz::UTC) {
            // A valid cron either fires again or says it never does; it never panics.
            let _next = c.next_after(chrono::Utc::now());
        }
        let cond: String = (0..r.usize(0..30))
            .map(|_| ALPHABET[r.usize(..ALPHABET.len())])
            .collect();
        if let Err(e) = Condition::parse(&cond) {
            assert!(
                e.column >= 1 && e.column <= cond.chars().count() + 1,
                "{cond:?}: {e}"
            );
        }
    }
}
