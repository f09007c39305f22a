//! A [`ShutdownPlan`] for people: a table (`Display`), Mermaid and DOT.
//! Names are user text: escaped for each format, as in the report's table.

use std::fmt::{self, Write as _};

use super::ShutdownPlan;
use crate::report::{Millis, NAME_WIDTH, name_column, padded, shown};

impl fmt::Display for ShutdownPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown plan: {} task{} in {} phase{}; worst case {} (deadline {}{})",
            self.tasks().len(),
            plural(self.tasks().len()),
            self.phases().len(),
            plural(self.phases().len()),
            Millis(self.worst_case()),
            Millis(self.deadline()),
            match self.worst_case_without_deadline() > self.deadline() {
                true => format!(
                    "; the tasks' own limits add up to {}, so the deadline may cut them short",
                    Millis(self.worst_case_without_deadline())
                ),
                false => String::new(),
            },
        )?;
        let (names, name_w) = name_column(self.tasks().map(|t| t.name()));
        for (p, phase) in self.phases().iter().enumerate() {
            let count = phase.tasks();
            write!(
                f,
                "  phase {} ({count} task{}",
                phase.priority(),
                plural(count)
            )?;
            if let Some(budget) = phase.budget() {
                write!(f, ", budget {}", Millis(budget))?;
            }
            writeln!(f, "): worst case {}", Millis(phase.worst_case()))?;
            writeln!(
                f,
                "    {}  {:<9}  {:>9}  {:>7}  {:>9}  then",
                padded("task", name_w),
                "category",
                "timeout",
                "retries",
                "worst",
            )?;
            for t in self.tasks_in(p) {
                write!(
                    f,
                    "    {}  {:<9}  {:>9}  {:>7}  {:>9}",
                    padded(&names[t.index()], name_w),
                    shown(t.category().as_str(), NAME_WIDTH),
                    Millis(t.timeout()).to_string(),
                    t.retries(),
                    Millis(t.worst_case()).to_string(),
                )?;
                let then: Vec<&str> = t.depends_on().map(|d| names[d.index()].as_str()).collect();
                if !then.is_empty() {
                    write!(f, "  {}", then.join(", "))?;
                }
                if let Some(by) = t.raised_by() {
                    write!(
                        f,
                        "  (from {}, raised by {})",
                        t.priority(),
                        shown(by, NAME_WIDTH)
                    )?;
                }
                writeln!(f)?;
            }
        }
        let path: Vec<&str> = self
            .critical_path()
            .map(|t| names[t.index()].as_str())
            .collect();
        if !path.is_empty() {
            writeln!(f, "  critical path: {}", path.join(" -> "))?;
        }
        for warning in self.warnings() {
            writeln!(f, "  warning: {}", shown(&warning.to_string(), 200))?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl ShutdownPlan {
    /// The graph as a Mermaid flowchart: a subgraph per phase, an arrow from
    /// each task to each task that runs after it.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (p, phase) in self.phases().iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph phase{p}[\"phase {} · worst {}\"]",
                phase.priority(),
                Millis(phase.worst_case())
            );
            for t in self.tasks_in(p) {
                let _ = writeln!(
                    out,
                    "    t{}[\"{}<br/>timeout {}{}\"]",
                    t.index(),
                    mermaid_text(t.name()),
                    Millis(t.timeout()),
                    retries(t.retries()),
                );
            }
            out.push_str("  end\n");
        }
        self.for_each_edge(|from, to| {
            let _ = writeln!(out, "  t{from} --> t{to}");
        });
        out
    }

    /// The graph in Graphviz DOT: a cluster per phase, an edge from each
    /// task to each task that runs after it.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph shutdown {\n  rankdir=TB;\n  node [shape=box];\n");
        for (p, phase) in self.phases().iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{p} {{\n    label=\"phase {} · worst {}\";",
                phase.priority(),
                Millis(phase.worst_case())
            );
            for t in self.tasks_in(p) {
                let _ = writeln!(
                    out,
                    "    t{} [label=\"{}\\ntimeout {}{}\"];",
                    t.index(),
                    dot_text(t.name()),
                    Millis(t.timeout()),
                    retries(t.retries()),
                );
            }
            out.push_str("  }\n");
        }
        self.for_each_edge(|from, to| {
            let _ = writeln!(out, "  t{from} -> t{to};");
        });
        out.push_str("}\n");
        out
    }

    /// Calls `edge` with the numbers of each task and a task that runs
    /// after it.
    fn for_each_edge(&self, mut edge: impl FnMut(usize, usize)) {
        for t in self.tasks() {
            for d in t.depends_on() {
                edge(t.index(), d.index());
            }
        }
    }
}

fn retries(n: u32) -> String {
    match n {
        0 => String::new(),
        1 => ", 1 retry".to_owned(),
        n => format!(", {n} retries"),
    }
}

/// A name inside a Mermaid `["…"]` label: quotes and markup as entities,
/// control characters escaped.
fn mermaid_text(name: &str) -> String {
    let mut out = String::new();
    for c in shown(name, NAME_WIDTH).chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            c => out.push(c),
        }
    }
    out
}

/// A name inside a DOT `"…"` string.
fn dot_text(name: &str) -> String {
    let mut out = String::new();
    for c in shown(name, NAME_WIDTH).chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
