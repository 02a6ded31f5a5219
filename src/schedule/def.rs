//! Schedule definitions (`jobs/*.toml`, SPEC A2): the file format and its validation. A
//! bad cron, zone, duration, job kind, workflow name or args is an error naming the file,
//! the line and the field; names are unique across all files.

use std::collections::HashMap;
use std::path::Path;

use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::cron::CronSchedule;
use super::plan::CatchUp;
use crate::defs::{parse_duration, toml_files, DefError, SourceFile};
use crate::queue::HandlerRegistry;
use crate::workflow::WorkflowDef;

/// What a schedule starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Job(String),
    Workflow(String),
}

impl Target {
    pub fn type_str(&self) -> &'static str {
        match self {
            Target::Job(_) => "job",
            Target::Workflow(_) => "workflow",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Target::Job(n) | Target::Workflow(n) => n,
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    pub name: String,
    pub cron: String,
    pub timezone: Tz,
    pub target: Target,
    pub args: Value,
    pub queue: Option<String>,
    pub priority: i16,
    pub catch_up: CatchUp,
    pub max_catch_up: i32,
    pub misfire_grace: std::time::Duration,
    pub enabled: bool,
    /// The file it came from, for `schedules list`.
    pub source: String,
}

impl ScheduleDef {
    pub fn cron_schedule(&self) -> Result<CronSchedule, String> {
        CronSchedule::parse(&self.cron, self.timezone)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    schedule: Vec<Spanned<RawSchedule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Spanned<String>,
    cron: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    job: Option<Spanned<String>>,
    #[serde(default)]
    workflow: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<Spanned<toml::Table>>,
    #[serde(default)]
    queue: Option<Spanned<String>>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    catch_up: Option<Spanned<String>>,
    #[serde(default)]
    max_catch_up: Option<Spanned<i64>>,
    #[serde(default)]
    misfire_grace: Option<Spanned<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Defaults (SPEC A2): zone UTC, catch-up `latest`, `max_catch_up` 100, grace 60 s.
pub const DEFAULT_MAX_CATCH_UP: i64 = 100;
pub const DEFAULT_MISFIRE_GRACE: &str = "60s";

/// Loads every `*.toml` in `dir`. Job kinds are checked against `registry` (and their args
/// against the kind's args type), workflow targets against `workflows`.
pub fn load_dir(
    dir: &Path,
    registry: &HandlerRegistry,
    workflows: &[WorkflowDef],
) -> Result<Vec<ScheduleDef>, DefError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in toml_files(dir)? {
        let raw: RawFile = file.parse_toml()?;
        for (i, s) in raw.schedule.iter().enumerate() {
            let def = validate(&file, i, s.get_ref(), registry, workflows)?;
            let here = format!("{}:{}", file.path.display(), file.line_of(s.span().start));
            if let Some(other) = seen.insert(def.name.clone(), here) {
                return Err(file.error(
                    Some(s.get_ref().name.span()),
                    format!("schedule[{i}].name"),
                    format!("schedule `{}` is already defined at {other}", def.name),
                ));
            }
            out.push(def);
        }
    }
    Ok(out)
}

fn validate(
    file: &SourceFile,
    i: usize,
    s: &RawSchedule,
    registry: &HandlerRegistry,
    workflows: &[WorkflowDef],
) -> Result<ScheduleDef, DefError> {
    let f = |name: &str| format!("schedule[{i}].{name}");
    let name = s.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(file.error(Some(s.name.span()), f("name"), "must not be empty"));
    }
    let timezone: Tz = match &s.timezone {
        None => Tz::UTC,
        Some(tz) => tz.get_ref().parse().map_err(|_| {
            file.error(
                Some(tz.span()),
                f("timezone"),
                format!(
                    "`{}` is not an IANA time zone (e.g. Asia/Seoul, UTC)",
                    tz.get_ref()
                ),
            )
        })?,
    };
    let cron = s.cron.get_ref().trim().to_string();
    CronSchedule::parse(&cron, timezone)
        .map_err(|m| file.error(Some(s.cron.span()), f("cron"), m))?;
    let args = match &s.args {
        None => Value::Object(Default::default()),
        Some(a) => serde_json::to_value(a.get_ref())
            .map_err(|e| file.error(Some(a.span()), f("args"), e.to_string()))?,
    };
    let target = target(file, i, s, registry, workflows, &args)?;
    let catch_up = match &s.catch_up {
        None => CatchUp::Latest,
        Some(c) => CatchUp::parse(c.get_ref()).ok_or_else(|| {
            file.error(
                Some(c.span()),
                f("catch_up"),
                format!("`{}`: expected none, latest or all", c.get_ref()),
            )
        })?,
    };
    let max_catch_up = match &s.max_catch_up {
        None => DEFAULT_MAX_CATCH_UP,
        Some(m) if (1..=100_000).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            return Err(file.error(
                Some(m.span()),
                f("max_catch_up"),
                "must be between 1 and 100000",
            ))
        }
    };
    let grace = s.misfire_grace.as_ref();
    let misfire_grace = parse_duration(
        grace
            .map(|g| g.get_ref().as_str())
            .unwrap_or(DEFAULT_MISFIRE_GRACE),
    )
    .map_err(|m| file.error(grace.map(|g| g.span()), f("misfire_grace"), m))?;
    let priority = match &s.priority {
        None => 0,
        Some(p) => i16::try_from(*p.get_ref()).map_err(|_| {
            file.error(
                Some(p.span()),
                f("priority"),
                "must fit a smallint (-32768..32767)",
            )
        })?,
    };
    let queue = s.queue.as_ref().map(|q| q.get_ref().trim().to_string());
    if let (Some(q), Some(span)) = (&queue, s.queue.as_ref().map(|q| q.span())) {
        if q.is_empty() {
            return Err(file.error(Some(span), f("queue"), "must not be empty"));
        }
    }
    Ok(ScheduleDef {
        name,
        cron,
        timezone,
        target,
        args,
        queue,
        priority,
        catch_up,
        max_catch_up: max_catch_up as i32,
        misfire_grace,
        enabled: s.enabled.unwrap_or(true),
        source: file.path.display().to_string(),
    })
}

fn target(
    file: &SourceFile,
    i: usize,
    s: &RawSchedule,
    registry: &HandlerRegistry,
    workflows: &[WorkflowDef],
    args: &Value,
) -> Result<Target, DefError> {
    match (&s.job, &s.workflow) {
        (Some(job), None) => {
            let kind = job.get_ref().trim();
            registry.new_job(kind, args.clone()).map_err(|e| {
                let field = if registry.get(kind).is_some() {
                    "args"
                } else {
                    "job"
                };
                let span = match (field, &s.args) {
                    ("args", Some(a)) => a.span(),
                    _ => job.span(),
                };
                file.error(Some(span), format!("schedule[{i}].{field}"), e.to_string())
            })?;
            Ok(Target::Job(kind.to_string()))
        }
        (None, Some(wf)) => {
            let name = wf.get_ref().trim();
            if workflows.iter().any(|w| w.name == name) {
                Ok(Target::Workflow(name.to_string()))
            } else {
                let known: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
                Err(file.error(
                    Some(wf.span()),
                    format!("schedule[{i}].workflow"),
                    format!("unknown workflow `{name}` (known: {})", known.join(", ")),
                ))
            }
        }
        (Some(_), Some(wf)) => Err(file.error(
            Some(wf.span()),
            format!("schedule[{i}]"),
            "give either `job` or `workflow`, not both",
        )),
        (None, None) => Err(file.error(
            Some(s.name.span()),
            format!("schedule[{i}]"),
            "needs a `job = \"kind\"` or a `workflow = \"name\"`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::builtin::register_builtins;

    fn load(text: &str) -> Result<Vec<ScheduleDef>, DefError> {
        let dir = std::env::temp_dir().join(format!(
            "cp-sched-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.toml"), text).unwrap();
        let mut r = HandlerRegistry::new();
        register_builtins(&mut r);
        let out = load_dir(&dir, &r, &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn a_good_schedule_gets_the_defaults() {
        let s = load("[[schedule]]\nname = \"p\"\ncron = \"* * * * * *\"\njob = \"sleep\"\nargs = { ms = 1 }\n").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].timezone, Tz::UTC);
        assert_eq!(s[0].catch_up, CatchUp::Latest);
        assert_eq!(s[0].max_catch_up, 100);
        assert_eq!(s[0].misfire_grace.as_secs(), 60);
        assert!(s[0].enabled);
    }

    fn err_at(text: &str) -> (Option<usize>, String, String) {
        let e = load(text).unwrap_err();
        (e.line, e.field.clone().unwrap_or_default(), e.to_string())
    }

    #[test]
    fn each_bad_schedule_names_line_and_field() {
        let head = "[[schedule]]\nname = \"p\"\n";
        let cases = [
            ("cron = \"* * *\"\njob = \"noop\"\n", 3, "schedule[0].cron"),
            (
                "cron = \"99 * * * *\"\njob = \"noop\"\n",
                3,
                "schedule[0].cron",
            ),
            (
                "cron = \"* * * * *\"\ntimezone = \"Mars/Olympus\"\njob = \"noop\"\n",
                4,
                "schedule[0].timezone",
            ),
            (
                "cron = \"* * * * *\"\njob = \"nope\"\n",
                4,
                "schedule[0].job",
            ),
            (
                "cron = \"* * * * *\"\njob = \"sleep\"\nargs = { ms = \"x\" }\n",
                5,
                "schedule[0].args",
            ),
            (
                "cron = \"* * * * *\"\nworkflow = \"nope\"\n",
                4,
                "schedule[0].workflow",
            ),
            (
                "cron = \"* * * * *\"\njob = \"noop\"\ncatch_up = \"some\"\n",
                5,
                "schedule[0].catch_up",
            ),
            (
                "cron = \"* * * * *\"\njob = \"noop\"\nmisfire_grace = \"1 day\"\n",
                5,
                "schedule[0].misfire_grace",
            ),
            (
                "cron = \"* * * * *\"\njob = \"noop\"\nmax_catch_up = 0\n",
                5,
                "schedule[0].max_catch_up",
            ),
        ];
        for (body, line, field) in cases {
            let (l, f, msg) = err_at(&format!("{head}{body}"));
            assert_eq!((l, f.as_str()), (Some(line), field), "{body}: {msg}");
            assert!(msg.contains("a.toml"), "{msg}");
        }
        let (l, _, msg) = err_at(
            "[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\ncolour = 1\n",
        );
        assert_eq!(l, Some(5), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        let (_, _, msg) = err_at("[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n[[schedule]]\nname = \"p\"\ncron = \"* * * * *\"\njob = \"noop\"\n");
        assert!(msg.contains("already defined"), "{msg}");
    }
}
