//! A workflow run drawn as a layered DAG in server-rendered SVG: each step is a box in the
//! column of its depth (longest path from a root), coloured by its state, with an arrow
//! from each parent. No JavaScript; the SVG scales to the screen width.

use std::collections::HashMap;

use maud::{html, Markup};

use crate::workflow::store::StepView;

const W: i64 = 150;
const H: i64 = 44;
const GAP_X: i64 = 50;
const GAP_Y: i64 = 16;

/// Depth per step: roots 0, else one more than the deepest parent. Definitions are
/// acyclic (checked at load), so `steps.len()` rounds settle every depth.
fn depths(steps: &[StepView]) -> HashMap<&str, i64> {
    let mut d: HashMap<&str, i64> = steps.iter().map(|s| (s.step.as_str(), 0)).collect();
    for _ in 0..steps.len() {
        for s in steps {
            let deepest = s
                .after
                .iter()
                .filter_map(|p| d.get(p.as_str()))
                .max()
                .copied();
            if let Some(p) = deepest {
                d.insert(s.step.as_str(), p + 1);
            }
        }
    }
    d
}

fn fill(state: &str) -> (&'static str, &'static str) {
    match state {
        "completed" => ("#d8f3e1", "#17643a"),
        "running" | "enqueued" => ("#dbe8ff", "#1d4fb8"),
        "failed" => ("#fde0e0", "#9b1c1c"),
        "pending" => ("#fff4d6", "#7a5600"),
        _ => ("#eceef2", "#5b6475"),
    }
}

pub fn render(steps: &[StepView]) -> Markup {
    let depth = depths(steps);
    let mut rows: HashMap<i64, i64> = HashMap::new();
    let mut pos: HashMap<&str, (i64, i64)> = HashMap::new();
    for s in steps {
        let col = depth.get(s.step.as_str()).copied().unwrap_or(0);
        let row = rows.entry(col).or_insert(0);
        pos.insert(s.step.as_str(), (col * (W + GAP_X), *row * (H + GAP_Y)));
        *row += 1;
    }
    let width = (rows.keys().max().copied().unwrap_or(0) + 1) * (W + GAP_X) - GAP_X + 2;
    let height = (rows.values().max().copied().unwrap_or(1)) * (H + GAP_Y) - GAP_Y + 2;
    html! {
        svg viewBox={ "-1 -1 " (width) " " (height) } width=(width) style="max-width:100%;height:auto"
            role="img" aria-label="workflow steps" {
            defs { marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto" {
                path d="M0,0L10,5L0,10z" fill="#8a93a3" {} } }
            @for s in steps { @for p in &s.after {
                @if let (Some((px, py)), Some((cx, cy))) = (pos.get(p.as_str()), pos.get(s.step.as_str())) {
                    line x1=(px + W) y1=(py + H / 2) x2=(cx) y2=(cy + H / 2)
                        stroke="#8a93a3" marker-end="url(#arr)" {}
                }
            } }
            @for s in steps {
                @let (x, y) = pos.get(s.step.as_str()).copied().unwrap_or((0, 0));
                @let (bg, fg) = fill(s.state.as_str());
                g {
                    title { (s.step) ": " (s.state.as_str()) }
                    rect x=(x) y=(y) width=(W) height=(H) rx="6" fill=(bg) stroke=(fg) {}
                    text x=(x + 8) y=(y + 18) fill=(fg) font-weight="600" { (s.step) }
                    text x=(x + 8) y=(y + 35) fill=(fg) { (s.state.as_str()) " · " (s.kind) }
                }
            }
        }
    }
}
