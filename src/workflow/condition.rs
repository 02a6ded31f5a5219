//! `when` conditions of workflow steps (SPEC A3): comparisons `step.field OP literal` (OP one
//! of `== != < <= > >=`; literals are quoted strings, numbers, `true`, `false`) joined by
//! `and` / `or`, with parentheses; `and` binds tighter than `or`. Parsed at load time;
//! evaluated against parents' outputs at run time, where a missing field makes the whole
//! condition false (and is reported, so the step can record why it was skipped).

use std::fmt;

use serde_json::Value;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Cmp {
        step: String,
        /// The field path inside the step's output (`a.b` for nested objects).
        path: Vec<String>,
        op: Op,
        value: Literal,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// Why a condition did not hold, in words for the step's note.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    True,
    False,
    /// A referenced field is absent from its step's output: the condition is false.
    Missing(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl Condition {
    pub fn parse(src: &str) -> Result<Condition, ParseError> {
        let tokens = tokenize(src)?;
        let end = src.chars().count() + 1;
        let mut p = Parser {
            tokens,
            pos: 0,
            end,
        };
        let c = p.or()?;
        match p.peek() {
            None => Ok(c),
            Some((col, t)) => Err(ParseError {
                column: *col,
                message: format!("unexpected {t} after a complete condition"),
            }),
        }
    }

    /// Every step the condition reads.
    pub fn steps(&self) -> Vec<&str> {
        match self {
            Condition::Cmp { step, .. } => vec![step.as_str()],
            Condition::And(a, b) | Condition::Or(a, b) => {
                let mut v = a.steps();
                v.extend(b.steps());
                v
            }
        }
    }

    /// Evaluates against `output(step)`; every comparison is evaluated so that a missing
    /// field anywhere is reported (SPEC: a missing field makes the condition false).
    pub fn evaluate<'a>(&self, output: &impl Fn(&str) -> Option<&'a Value>) -> Verdict {
        match self {
            Condition::Cmp {
                step,
                path,
                op,
                value,
            } => {
                let field = output(step).and_then(|v| path.iter().try_fold(v, |v, k| v.get(k)));
                match field {
                    None => Verdict::Missing(format!("{step}.{}", path.join("."))),
                    Some(v) => verdict(compare(v, *op, value)),
                }
            }
            Condition::And(a, b) => match (a.evaluate(output), b.evaluate(output)) {
                (m @ Verdict::Missing(_), _) | (_, m @ Verdict::Missing(_)) => m,
                (Verdict::True, Verdict::True) => Verdict::True,
                _ => Verdict::False,
            },
            Condition::Or(a, b) => match (a.evaluate(output), b.evaluate(output)) {
                (m @ Verdict::Missing(_), _) | (_, m @ Verdict::Missing(_)) => m,
                (Verdict::True, _) | (_, Verdict::True) => Verdict::True,
                _ => Verdict::False,
            },
        }
    }
}

fn verdict(b: bool) -> Verdict {
    if b {
        Verdict::True
    } else {
        Verdict::False
    }
}

/// Values of different types are never equal and never ordered; booleans are not ordered.
fn compare(v: &Value, op: Op, lit: &Literal) -> bool {
    let ord = match (v, lit) {
        (Value::String(a), Literal::Str(b)) => a.as_str().partial_cmp(b.as_str()),
        (Value::Number(a), Literal::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        (Value::Bool(a), Literal::Bool(b)) => {
            return match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => false,
            }
        }
        _ => return op == Op::Ne,
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Gt => ord == Greater,
        Op::Ge => ord != Less,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Path(Vec<String>),
    Op(Op),
    Lit(Literal),
    And,
    Or,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Path(p) => write!(f, "`{}`", p.join(".")),
            Token::Op(o) => write!(f, "operator {o:?}"),
            Token::Lit(l) => write!(f, "literal {l:?}"),
            Token::And => f.write_str("`and`"),
            Token::Or => f.write_str("`or`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
        }
    }
}

fn tokenize(src: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, message: String| ParseError { column, message };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push((col, if c == '(' { Token::Open } else { Token::Close }));
            i += 1;
        } else if "=!<>".contains(c) {
            let two = chars.get(i + 1) == Some(&'=');
            let op = match (c, two) {
                ('=', true) => Op::Eq,
                ('!', true) => Op::Ne,
                ('<', true) => Op::Le,
                ('>', true) => Op::Ge,
                ('<', false) => Op::Lt,
                ('>', false) => Op::Gt,
                _ => return Err(err(col, format!("`{c}` is not an operator (use == or !=)"))),
            };
            out.push((col, Token::Op(op)));
            i += if two { 2 } else { 1 };
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| err(col, "unterminated string literal".into()))?;
            let s: String = chars[i + 1..i + 1 + end].iter().collect();
            out.push((col, Token::Lit(Literal::Str(s))));
            i += end + 2;
        } else if c.is_ascii_digit() || c == '-' {
            let len = chars[i..]
                .iter()
                .skip(1)
                .take_while(|d| d.is_ascii_digit() || **d == '.')
                .count()
                + 1;
            let s: String = chars[i..i + len].iter().collect();
            let n = s
                .parse::<f64>()
                .map_err(|_| err(col, format!("`{s}` is not a number")))?;
            out.push((col, Token::Lit(Literal::Num(n))));
            i += len;
        } else if c.is_alphabetic() || c == '_' {
            let len = chars[i..]
                .iter()
                .take_while(|d| d.is_alphanumeric() || **d == '_' || **d == '.' || **d == '-')
                .count();
            let word: String = chars[i..i + len].iter().collect();
            out.push((col, word_token(&word).map_err(|m| err(col, m))?));
            i += len;
        } else {
            return Err(err(col, format!("unexpected character `{c}`")));
        }
    }
    Ok(out)
}

fn word_token(word: &str) -> Result<Token, String> {
    Ok(match word {
        "and" => Token::And,
        "or" => Token::Or,
        "true" => Token::Lit(Literal::Bool(true)),
        "false" => Token::Lit(Literal::Bool(false)),
        _ => {
            let parts: Vec<String> = word.split('.').map(str::to_string).collect();
            if parts.len() < 2 || parts.iter().any(String::is_empty) {
                return Err(format!(
                    "`{word}` is not a field reference (expected `step.field`)"
                ));
            }
            Token::Path(parts)
        }
    })
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    /// The column just past the input, where "found the end" errors point.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, expected: &str) -> Result<(usize, Token), ParseError> {
        let t = self.tokens.get(self.pos).cloned().ok_or(ParseError {
            column: self.end,
            message: format!("expected {expected}, found the end"),
        })?;
        self.pos += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some((_, Token::Or))) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.atom()?;
        while matches!(self.peek(), Some((_, Token::And))) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Condition, ParseError> {
        match self.next("a comparison or `(`")? {
            (_, Token::Open) => {
                let inner = self.or()?;
                match self.next("`)`")? {
                    (_, Token::Close) => Ok(inner),
                    (col, t) => Err(ParseError {
                        column: col,
                        message: format!("expected `)`, found {t}"),
                    }),
                }
            }
            (_, Token::Path(mut parts)) => {
                let op = match self.next("an operator")? {
                    (_, Token::Op(op)) => op,
                    (col, t) => {
                        return Err(ParseError {
                            column: col,
                            message: format!("expected an operator, found {t}"),
                        })
                    }
                };
                let value = match self.next("a literal")? {
                    (_, Token::Lit(l)) => l,
                    (col, t) => {
                        return Err(ParseError {
                            column: col,
                            message: format!(
                                "expected a literal ('text', a number, true or false), found {t}"
                            ),
                        })
                    }
                };
                let step = parts.remove(0);
                Ok(Condition::Cmp {
                    step,
                    path: parts,
                    op,
                    value,
                })
            }
            (col, t) => Err(ParseError {
                column: col,
                message: format!("expected a comparison `step.field OP literal`, found {t}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, outputs: &Value) -> Verdict {
        let c = Condition::parse(src).unwrap();
        c.evaluate(&|s: &str| outputs.get(s))
    }

    #[test]
    fn comparisons_of_each_type() {
        let o = json!({"evaluate": {"signal": "entry", "rsi": 28.5, "ok": true},
                       "review": {"confirmed": true, "confidence": 60}});
        assert_eq!(eval("evaluate.signal == 'entry'", &o), Verdict::True);
        assert_eq!(eval("evaluate.signal != \"entry\"", &o), Verdict::False);
        assert_eq!(eval("review.confirmed == true", &o), Verdict::True);
        assert_eq!(eval("review.confidence >= 60", &o), Verdict::True);
        assert_eq!(eval("review.confidence > 60", &o), Verdict::False);
        assert_eq!(eval("evaluate.rsi < 30", &o), Verdict::True);
        assert_eq!(eval("evaluate.rsi <= -1", &o), Verdict::False);
        // Different types are never equal.
        assert_eq!(eval("review.confidence == '60'", &o), Verdict::False);
        assert_eq!(eval("review.confidence != '60'", &o), Verdict::True);
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let o = json!({"a": {"x": 1}, "b": {"y": 2}});
        assert_eq!(eval("a.x == 2 and b.y == 2 or a.x == 1", &o), Verdict::True);
        assert_eq!(
            eval("a.x == 2 and (b.y == 2 or a.x == 1)", &o),
            Verdict::False
        );
    }

    #[test]
    fn missing_field_makes_it_false_and_says_which() {
        let o = json!({"a": {"x": 1}});
        assert_eq!(
            eval("a.x == 1 or a.nope == 1", &o),
            Verdict::Missing("a.nope".into())
        );
        assert_eq!(eval("b.x == 1", &o), Verdict::Missing("b.x".into()));
        let nested = json!({"a": {"m": {"k": "v"}}});
        assert_eq!(eval("a.m.k == 'v'", &nested), Verdict::True);
    }

    #[test]
    fn bad_conditions_say_where() {
        for (src, col) in [
            ("evaluate.signal = 'entry'", 17),
            ("evaluate.signal == ", 20),
            ("signal == 'entry'", 1),
            ("(a.x == 1", 10),
            ("a.x == 1 b.y == 2", 10),
            ("a.x == 'open", 8),
            ("a.x == 1 and", 13),
            ("a.x == b.y", 8),
        ] {
            let e = Condition::parse(src).unwrap_err();
            assert_eq!(e.column, col, "{src}: {e}");
        }
    }

    #[test]
    fn steps_lists_every_reference() {
        let c = Condition::parse("(a.x == 1 or b.y == 2) and c.z != 'q'").unwrap();
        assert_eq!(c.steps(), vec!["a", "b", "c"]);
    }
}
