//! Property tests (proptest) of every parser that takes outside input: definition files,
//! the config file and its environment overrides, cron strings, candle CSV rows and the
//! dashboard's form fields. Each property holds for arbitrary and for mutated-valid input:
//! no panic, an error that says where (file:line, the key, the variable or the field), and
//! for the dashboard no 500 and no write from a rejected form.
//!
//! Each property runs proptest's default 256 cases; `PROPTEST_CASES=100000 cargo test
//! --release --test it props::` runs more. A failure prints the shrunk input and is saved
//! under `tests/proptest-regressions/` to be replayed first next time (commit it with the fix).

mod candles;
mod config;
mod cron;
mod defs;
mod forms;

use proptest::prelude::*;

/// Characters that matter to TOML, cron, CSV and conditions, plus a multi-byte one.
const ALPHABET: &[char] = &[
    '[', ']', '{', '}', '"', '\'', '=', ',', '.', '\n', ' ', '#', '*', '/', '-', ':', '0', '7',
    '9', 'a', 'z', '(', ')', '<', '>', '!', 'é', '\\', '\t', '\r', '+', 'e', 'T',
];

/// One edit of a text: at a position (a fraction of its length), delete, insert, replace
/// or duplicate a line.
#[derive(Debug, Clone)]
enum Edit {
    Delete(f64),
    Insert(f64, char),
    Replace(f64, char),
    DuplicateLine(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let c = prop::sample::select(ALPHABET);
    prop_oneof![
        (0.0..1.0f64).prop_map(Edit::Delete),
        (0.0..1.0f64, c.clone()).prop_map(|(p, c)| Edit::Insert(p, c)),
        (0.0..1.0f64, c).prop_map(|(p, c)| Edit::Replace(p, c)),
        (0.0..1.0f64).prop_map(Edit::DuplicateLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |p: f64, len: usize| ((p * len as f64) as usize).min(len);
    for e in edits {
        match *e {
            Edit::Delete(p) if !chars.is_empty() => {
                let i = at(p, chars.len() - 1);
                chars.remove(i);
            }
            Edit::Insert(p, c) => chars.insert(at(p, chars.len()), c),
            Edit::Replace(p, c) if !chars.is_empty() => {
                let i = at(p, chars.len() - 1);
                chars[i] = c;
            }
            Edit::DuplicateLine(p) => {
                let s: String = chars.iter().collect();
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let l = lines[at(p, lines.len() - 1)].to_string();
                    chars.extend(format!("\n{l}\n").chars());
                }
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// A valid text with one to six random edits.
pub(crate) fn mutated(valid: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(edit(), 1..6).prop_map(move |e| apply(valid, &e))
}

/// Text made of the interesting characters only.
pub(crate) fn noise(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

/// Mutated, interesting-character noise, or any printable text.
pub(crate) fn hostile(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![6 => mutated(valid), 2 => noise(200), 1 => "\\PC{0,200}"]
}

/// The number of lines an error may point at: every line, or one past the last.
pub(crate) fn max_line(text: &str) -> usize {
    text.lines().count() + 1
}
