//! Workflow definitions (`workflows/*.toml`, SPEC A3): the file format, and the checks that
//! make a bad file a load-time error naming file, line and field — duplicate or unknown
//! step ids, unknown job kinds, cycles, and conditions that do not parse or read a step
//! that is not upstream of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

use super::condition::Condition;
use crate::defs::{toml_files, DefError, SourceFile};
use crate::queue::HandlerRegistry;

/// A validated workflow. Serialized as the run's definition snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// In file order (kept for display); `after` lists carry the graph.
    pub steps: Vec<StepDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    pub id: String,
    pub job: String,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub when: Option<String>,
    /// The step's own args; they win over the run's args.
    #[serde(default)]
    pub args: serde_json::Map<String, Value>,
}

/// The key of a step's args that holds its parents' outputs.
pub const PARENTS_KEY: &str = "parents";

impl WorkflowDef {
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Steps that list `id` in their `after`.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &StepDef> + '_ {
        let id = id.to_string();
        self.steps.iter().filter(move |s| s.after.contains(&id))
    }

    /// The args a step's job gets: the run's args, overridden by the step's own, plus
    /// `parents` = {parent id: output} for the parents that returned an output (SPEC A3: a
    /// step's output is visible to its children). A handler that needs what an ancestor
    /// decided gets it from its parent's output, which carries it forward.
    pub fn step_args<'a>(
        &self,
        step: &StepDef,
        run_args: &Value,
        output_of: impl Fn(&str) -> Option<&'a Value>,
    ) -> Value {
        let mut merged = run_args.as_object().cloned().unwrap_or_default();
        for (k, v) in &step.args {
            merged.insert(k.clone(), v.clone());
        }
        let parents: serde_json::Map<String, Value> = step
            .after
            .iter()
            .filter_map(|p| output_of(p).map(|o| (p.clone(), o.clone())))
            .collect();
        if !parents.is_empty() {
            merged.insert(PARENTS_KEY.into(), Value::Object(parents));
        }
        Value::Object(merged)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    job: Spanned<String>,
    #[serde(default)]
    after: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<toml::Table>,
}

/// Loads and validates every `*.toml` in `dir`; workflow names are unique across files.
pub fn load_dir(dir: &Path, registry: &HandlerRegistry) -> Result<Vec<WorkflowDef>, DefError> {
    let mut out: Vec<WorkflowDef> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in toml_files(dir)? {
        let def = parse(&file, registry)?;
        if let Some(other) = seen.insert(def.name.clone(), file.path.display().to_string()) {
            return Err(file.error(
                None,
                "name",
                format!("workflow `{}` is also defined in {other}", def.name),
            ));
        }
        out.push(def);
    }
    Ok(out)
}

/// Parses and validates one workflow file.
pub fn parse(file: &SourceFile, registry: &HandlerRegistry) -> Result<WorkflowDef, DefError> {
    let raw: RawWorkflow = file.parse_toml()?;
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(file.error(Some(raw.name.span()), "name", "must not be empty"));
    }
    if raw.step.is_empty() {
        return Err(file.error(None, "step", "a workflow needs at least one [[step]]"));
    }
    let mut steps = Vec::with_capacity(raw.step.len());
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in raw.step.iter().enumerate() {
        let s = s.get_ref();
        let id = s.id.get_ref().trim().to_string();
        let field = format!("step[{i}].id");
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(file.error(
                Some(s.id.span()),
                field,
                format!("`{id}` is not a step id (letters, digits, `_` and `-`)"),
            ));
        }
        if ids.insert(id.clone(), i).is_some() {
            return Err(file.error(
                Some(s.id.span()),
                field,
                format!("duplicate step id `{id}`"),
            ));
        }
        let kind = s.job.get_ref().trim().to_string();
        if registry.get(&kind).is_none() {
            let known = registry.kinds().collect::<Vec<_>>().join(", ");
            return Err(file.error(
                Some(s.job.span()),
                format!("step[{i}].job"),
                format!("unknown job kind `{kind}` (known kinds: {known})"),
            ));
        }
        let args = match &s.args {
            None => serde_json::Map::new(),
            Some(t) => match serde_json::to_value(t) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(file.error(
                        Some(s.id.span()),
                        format!("step[{i}].args"),
                        "args must be a table",
                    ))
                }
            },
        };
        steps.push(StepDef {
            id,
            job: kind,
            after: s
                .after
                .as_ref()
                .map(|a| {
                    a.get_ref()
                        .iter()
                        .map(|x| x.get_ref().trim().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            when: s.when.as_ref().map(|w| w.get_ref().trim().to_string()),
            args,
        });
    }
    let def = WorkflowDef {
        name,
        description: raw.description.clone(),
        steps,
    };
    check_graph(file, &raw, &def)?;
    Ok(def)
}

/// `after` names existing steps, the graph has no cycle, and each condition parses and
/// reads only steps upstream of its own.
fn check_graph(file: &SourceFile, raw: &RawWorkflow, def: &WorkflowDef) -> Result<(), DefError> {
    for (i, s) in def.steps.iter().enumerate() {
        let raw_after = raw.step[i].get_ref().after.as_ref();
        for (j, parent) in s.after.iter().enumerate() {
            let span = raw_after.map(|a| a.get_ref()[j].span());
            if def.step(parent).is_none() {
                return Err(file.error(
                    span,
                    format!("step[{i}].after"),
                    format!("unknown step `{parent}` (steps: {})", step_list(def)),
                ));
            }
            if parent == &s.id {
                return Err(file.error(
                    span,
                    format!("step[{i}].after"),
                    "a step cannot follow itself",
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(def) {
        let first = def.steps.iter().position(|s| s.id == cycle[0]).unwrap_or(0);
        return Err(file.error(
            raw.step[first].get_ref().after.as_ref().map(|a| a.span()),
            format!("step[{first}].after"),
            format!("the steps form a cycle: {}", cycle.join(" → ")),
        ));
    }
    for (i, s) in def.steps.iter().enumerate() {
        let Some(when) = &s.when else { continue };
        let span = raw.step[i].get_ref().when.as_ref().map(|w| w.span());
        let field = format!("step[{i}].when");
        let cond = Condition::parse(when)
            .map_err(|e| file.error(span.clone(), field.clone(), format!("`{when}`: {e}")))?;
        let upstream = ancestors(def, &s.id);
        for r in cond.steps() {
            if !upstream.contains(r) {
                return Err(file.error(
                    span.clone(),
                    field.clone(),
                    format!(
                        "`{when}` reads step `{r}`, which does not run before `{}`",
                        s.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn step_list(def: &WorkflowDef) -> String {
    def.steps
        .iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every step a step transitively follows.
pub fn ancestors<'a>(def: &'a WorkflowDef, id: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&str> = def
        .step(id)
        .map(|s| s.after.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(p) = todo.pop() {
        if let Some(step) = def.step(p) {
            if out.insert(step.id.as_str()) {
                todo.extend(step.after.iter().map(String::as_str));
            }
        }
    }
    out
}

/// A cycle as a path of step ids (first repeated at the end), if the graph has one.
fn find_cycle(def: &WorkflowDef) -> Option<Vec<String>> {
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit(
        def: &WorkflowDef,
        id: &str,
        colour: &mut HashMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match colour.get(id) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == id).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(id.to_string(), 1);
        path.push(id.to_string());
        if let Some(step) = def.step(id) {
            for parent in &step.after {
                if let Some(c) = visit(def, parent, colour, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        colour.insert(id.to_string(), 2);
        None
    }
    let mut colour = HashMap::new();
    def.steps
        .iter()
        .find_map(|s| visit(def, &s.id, &mut colour, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::builtin::register_builtins;

    fn registry() -> HandlerRegistry {
        let mut r = HandlerRegistry::new();
        register_builtins(&mut r);
        r
    }

    fn load(text: &str) -> Result<WorkflowDef, DefError> {
        parse(
            &SourceFile::from_text("workflows/t.toml", text),
            &registry(),
        )
    }

    const GOOD: &str = r#"
name = "t"
[[step]]
id = "a"
job = "noop"
[[step]]
id = "b"
job = "noop"
after = ["a"]
when = "a.signal == 'entry'"
args = { ms = 5 }
"#;

    #[test]
    fn a_good_file_loads() {
        let d = load(GOOD).unwrap();
        assert_eq!(d.steps.len(), 2);
        assert_eq!(
            d.children("a").map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        let run_args = serde_json::json!({"ms": 1, "market": "KRW-BTC"});
        let args = d.step_args(&d.steps[1], &run_args, |_| None);
        assert_eq!(args, serde_json::json!({"ms": 5, "market": "KRW-BTC"}));
        let out = serde_json::json!({"signal": "entry"});
        let args = d.step_args(&d.steps[1], &run_args, |p| (p == "a").then_some(&out));
        assert_eq!(
            args["parents"],
            serde_json::json!({"a": {"signal": "entry"}})
        );
    }

    fn err(text: &str) -> DefError {
        load(text).unwrap_err()
    }

    #[test]
    fn each_bad_file_names_line_and_field() {
        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"nope\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(4), Some("step[0].job")),
            "{e}"
        );
        assert!(e.message.contains("unknown job kind `nope`"), "{e}");

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\nafter = [\"zz\"]\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(5), Some("step[0].after")),
            "{e}"
        );

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\nafter = [\"b\"]\n[[step]]\nid = \"b\"\njob = \"noop\"\nafter = [\"a\"]\n");
        assert!(e.message.contains("cycle"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\n[[step]]\nid = \"b\"\njob = \"noop\"\nafter = [\"a\"]\nwhen = \"a.x = 1\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(9), Some("step[1].when")),
            "{e}"
        );

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\nwhen = \"b.x == 1\"\n[[step]]\nid = \"b\"\njob = \"noop\"\n");
        assert!(e.message.contains("does not run before"), "{e}");

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\n[[step]]\nid = \"a\"\njob = \"noop\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(6), Some("step[1].id")),
            "{e}"
        );

        let e = err("name = \"t\"\n[[step]]\nid = \"a\"\njob = \"noop\"\ncolour = 1\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("colour"), "{e}");

        let e = err("name = \"t\"\n[[step]\n");
        assert_eq!(e.line, Some(2), "{e}");
    }
}
