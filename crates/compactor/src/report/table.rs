//! The report as a table for people: one line per task, bounded in width,
//! with every text the user handed in (names, errors, reasons) shown with
//! its control characters escaped, so a name cannot move the cursor or
//! recolour a terminal. The full texts stay in the API and the JSON.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::{Interruption, Outcome, ShutdownReport};

/// The widest a task name is shown, in characters.
pub(crate) const NAME_WIDTH: usize = 40;
/// The longest an error, a panic message or a reason is shown.
const MESSAGE_WIDTH: usize = 200;

/// `text` for a terminal: control characters escaped, at most `width`
/// characters, the rest elided with `…`.
pub(crate) fn shown(text: &str, width: usize) -> String {
    let escaped = text.chars().flat_map(|c| {
        let escape = c.is_control().then(|| c.escape_default());
        let plain = (!c.is_control()).then_some(c);
        escape.into_iter().flatten().chain(plain)
    });
    let mut out = String::new();
    for (count, c) in escaped.enumerate() {
        if count >= width {
            // More than fits: the last place marks the rest.
            out.pop();
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// A path for a line: as [`shown`], but a long one loses its middle, not
/// its end (the failing task's own name).
fn shown_path(path: &str, width: usize) -> String {
    if path.chars().count() <= width {
        return shown(path, width);
    }
    let (head, leaf) = path.rsplit_once('/').unwrap_or(("", path));
    let leaf = shown(leaf, width / 2);
    let room = width.saturating_sub(leaf.chars().count() + 1);
    format!("{}/{leaf}", shown(head, room))
}

/// A chain of task names for a line ("a on b on c"): at most five names,
/// the first ones and the last (the task that holds the others up).
pub(crate) fn links(chain: &[&str]) -> String {
    const LINKS: usize = 5;
    let names =
        |part: &[&str]| -> Vec<String> { part.iter().map(|n| shown(n, NAME_WIDTH)).collect() };
    if chain.len() <= LINKS {
        return names(chain).join(" on ");
    }
    let head = names(&chain[..LINKS - 1]).join(" on ");
    let skipped = chain.len() - LINKS;
    let last = shown(chain[chain.len() - 1], NAME_WIDTH);
    format!("{head} on … ({skipped} more) on {last}")
}

/// Names, comma-separated: at most five, then how many more.
fn links_plain(names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        n if n <= SHOWN => names.join(", "),
        n => format!("{}, and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

/// Names for a table column: each shown (escaped, cut), and the column's
/// width (at least that of its heading, "task").
pub(crate) fn name_column<'a>(names: impl Iterator<Item = &'a str>) -> (Vec<String>, usize) {
    let shown_names: Vec<String> = names.map(|n| shown(n, NAME_WIDTH)).collect();
    let width = shown_names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    (shown_names, width)
}

/// `text` left-aligned in `width` characters.
pub(crate) fn padded(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let mut out = text.to_owned();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
    out
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks = self.tasks();
        write!(
            f,
            "shutdown ({}) {} in {}: {} task{}, {}",
            shown(&self.reason().to_string(), MESSAGE_WIDTH),
            if self.is_complete() {
                "finished"
            } else {
                "in progress"
            },
            Millis(self.duration()),
            tasks.len(),
            if tasks.len() == 1 { "" } else { "s" },
            if self.is_clean() {
                "clean"
            } else {
                "NOT clean"
            },
        )?;
        let (names, name_w) = name_column(tasks.iter().map(|t| &*t.name));
        writeln!(f)?;
        writeln!(
            f,
            "  {:>3}  {}  {:<11}  {:<9}  {:<10}  {:>3}  {:>9}  {:>9}",
            "#",
            padded("task", name_w),
            "phase",
            "category",
            "outcome",
            "try",
            "start",
            "time"
        )?;
        for (i, (t, name)) in tasks.iter().zip(&names).enumerate() {
            let start = t
                .started_at()
                .map_or_else(|| "-".to_owned(), |s| format!("+{}", Millis(s)));
            write!(
                f,
                "  {:>3}  {}  {:<11}  {:<9}  {:<10}  {:>3}  {:>9}  {:>9}",
                i + 1,
                padded(name, name_w),
                t.effective_priority().to_string(),
                shown(t.category.as_str(), NAME_WIDTH),
                t.outcome.label(),
                t.attempts,
                start,
                Millis(t.duration()).to_string(),
            )?;
            match &t.outcome {
                Outcome::Failed(e) => write!(f, "  {}", shown(e, MESSAGE_WIDTH))?,
                Outcome::Panicked(m) => write!(f, "  {}", shown(m, MESSAGE_WIDTH))?,
                Outcome::Skipped(r) => write!(f, "  {r}")?,
                _ => {}
            }
            if let Some(waited) = t.waited_for() {
                write!(f, "  waiting on {}", shown(waited, NAME_WIDTH))?;
            }
            let how = match t.interruption {
                Some(Interruption::Stopped) => "  (stopped on its token)",
                Some(Interruption::Dropped) => "  (dropped)",
                Some(Interruption::Abandoned) => "  (abandoned, still running)",
                Some(Interruption::Overran) => "  (returned after its time ran out)",
                Some(Interruption::Killed { pid, code, signal }) => {
                    f.write_str("  (dropped; its child process")?;
                    if let Some(pid) = pid {
                        write!(f, " {pid}")?;
                    }
                    match (signal, code) {
                        (Some(signal), _) => write!(f, " killed, ended by signal {signal})")?,
                        (None, Some(code)) => write!(f, " killed, exited with {code})")?,
                        (None, None) => f.write_str(" killed and reaped)")?,
                    }
                    ""
                }
                None => "",
            };
            f.write_str(how)?;
            if let Some(freed) = t.freed() {
                write!(f, "  {freed}")?;
            }
            if let Some(n) = t.leaked() {
                write!(
                    f,
                    "  possible leak: {n} strong reference{} left",
                    if n == 1 { "" } else { "s" }
                )?;
            }
            writeln!(f)?;
            for failure in t.scope().map(ShutdownReport::failures).unwrap_or_default() {
                let path = format!("{}/{}", t.name, failure.path());
                let outcome = failure.outcome().to_string();
                writeln!(
                    f,
                    "       {}  {}",
                    shown_path(&path, 2 * NAME_WIDTH),
                    shown(&outcome, MESSAGE_WIDTH)
                )?;
            }
        }
        let categories = self.by_category();
        if categories.len() > 1 {
            let mut sums = String::new();
            for (i, c) in categories.iter().enumerate() {
                let sep = if i == 0 { "" } else { "; " };
                let category = shown(&c.category.to_string(), NAME_WIDTH);
                write!(sums, "{sep}{category} {}", c.tasks)?;
                if c.not_clean() > 0 {
                    write!(sums, ", {} not clean", c.not_clean())?;
                }
                write!(sums, " in {}", Millis(c.time))?;
                if !c.freed.is_nothing() {
                    write!(sums, ", {}", c.freed)?;
                }
            }
            writeln!(f, "  by category: {sums}")?;
        }
        let abandoned: Vec<String> = self
            .abandoned()
            .iter()
            .map(|f| shown_path(f.path(), 2 * NAME_WIDTH))
            .collect();
        if !abandoned.is_empty() {
            writeln!(
                f,
                "  still running after the report: {}",
                links_plain(&abandoned)
            )?;
        }
        if let Some(tasks) = self.runtime_tasks() {
            writeln!(
                f,
                "  tokio tasks alive on the runtime at the report: {tasks}"
            )?;
        }
        for w in self.warnings() {
            writeln!(f, "  warning: {}", shown(&w.to_string(), MESSAGE_WIDTH))?;
        }
        Ok(())
    }
}

/// A duration shown in milliseconds with enough precision for fast cleanups.
pub(crate) struct Millis(pub(crate) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
            return f.write_str("unlimited");
        }
        let ms = self.0.as_secs_f64() * 1e3;
        if ms < 10.0 {
            write!(f, "{ms:.2}ms")
        } else if ms < 10_000.0 {
            write!(f, "{ms:.0}ms")
        } else {
            write!(f, "{:.1}s", ms / 1e3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_texts_elided() {
        assert_eq!(shown("db\u{1b}[31m\n", 40), "db\\u{1b}[31m\\n");
        assert_eq!(shown("abcdef", 4), "abc…");
        assert_eq!(shown("abcd", 4), "abcd");
        assert_eq!(padded("ab", 4), "ab  ");
        assert_eq!(
            shown_path("tenant/connection/flush", 16),
            "tenant/co…/flush"
        );
        assert_eq!(shown_path("a/b", 16), "a/b");
    }
}
