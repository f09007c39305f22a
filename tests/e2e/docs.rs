//! The docs stay true: every file a page names and every relative link in
//! `README.md`, `docs/` and the crate's README leads somewhere that exists
//! (an anchor, to a heading of its page), and the crate's README, which
//! crates.io shows away from the repository, links only absolutely, its
//! links into the repository leading to files that exist. The
//! integration snippets of `docs/integrations.md` are taken, line for line,
//! from the examples that the test command builds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's address, as the workspace's `repository` gives it.
const REPOSITORY: &str = "https://github.com/compactor-rs/compactor";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the repository")
        .to_path_buf()
}

/// The pages checked, relative to the root.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| Path::new("docs").join(e.expect("an entry").file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages.push(PathBuf::from("crates/compactor/README.md"));
    pages
}

/// A page's text outside its fenced code blocks, line by line (numbered
/// from 1).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// The inline code spans of a line.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The targets of a line's inline links and images, `[text](target)`.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target);
        rest = &after[end..];
    }
    targets
}

/// Whether an inline code span names a file or folder of the repository:
/// it begins with one of the repository's top folders, or ends with a file
/// extension the repository uses.
fn names_a_path(span: &str) -> bool {
    const TOP: [&str; 7] = [
        "crates/",
        "tests/",
        "examples/",
        "docs/",
        ".ci/",
        ".cargo/",
        "src/",
    ];
    const EXTENSIONS: [&str; 6] = [".rs", ".md", ".toml", ".lock", ".sh", ".cfg"];
    let plain = span
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./*".contains(c));
    plain
        && !span.starts_with('/')
        && !span.contains("..")
        && (TOP.iter().any(|t| span.starts_with(t)) || EXTENSIONS.iter().any(|e| span.ends_with(e)))
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, other
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|(_, line)| line.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// Where `path` leads, if anywhere: relative to the page's folder, to the
/// root, or, for a source file named as the design page's layout names
/// them (`run/clock.rs`), to the library's `src/`.
fn resolve(page_dir: &Path, path: &str) -> Option<PathBuf> {
    let exists = |p: PathBuf| match path.contains('*') {
        // A pattern: its folder exists, and something in it matches.
        true => p.parent().is_some_and(Path::is_dir).then_some(p),
        false => p.exists().then_some(p),
    };
    exists(page_dir.join(path))
        .or_else(|| exists(root().join(path)))
        .or_else(|| exists(root().join("crates/compactor/src").join(path)))
}

/// What is wrong with a link's target, if anything.
fn bad_link(page: &Path, target: &str, crate_page: bool) -> Option<String> {
    let text_of = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(anchor) = target.strip_prefix('#') {
        let own = text_of(&root().join(page));
        return (!anchors(&own).contains(anchor)).then(|| format!("no heading for #{anchor}"));
    }
    if let Some(in_repo) = target.strip_prefix(REPOSITORY).and_then(|t| {
        t.strip_prefix("/blob/main/")
            .or(t.strip_prefix("/tree/main/"))
    }) {
        let path = in_repo.split('#').next().unwrap_or("");
        return (!root().join(path).exists())
            .then(|| format!("{target}: no `{path}` in the repository"));
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    if crate_page {
        return Some(format!(
            "{target}: crates.io shows this page away from the repository; link to \
             {REPOSITORY}/blob/main/... or docs.rs instead"
        ));
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let dir = root().join(page.parent().unwrap_or(Path::new("")));
    let Some(found) = resolve(&dir, path) else {
        return Some(format!("{target}: no such file"));
    };
    let missing_anchor = !anchor.is_empty()
        && found.extension().is_some_and(|e| e == "md")
        && !anchors(&text_of(&found)).contains(anchor);
    missing_anchor.then(|| format!("{target}: no heading for #{anchor}"))
}

#[test]
fn every_file_and_link_the_docs_name_exists() {
    let mut wrong = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page)).expect("the page reads");
        let crate_page = page.starts_with("crates");
        let dir = root().join(page.parent().unwrap_or(Path::new("")));
        for (n, line) in prose(&text) {
            let at = format!("{}:{n}", page.display());
            for span in code_spans(line).into_iter().filter(|s| names_a_path(s)) {
                if resolve(&dir, span).is_none() {
                    wrong.push(format!("{at}: `{span}` names no file of the repository"));
                }
            }
            for target in link_targets(line) {
                if let Some(why) = bad_link(&page, target, crate_page) {
                    wrong.push(format!("{at}: {why}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs name what is not there:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_finds_what_is_not_there() {
    let page = Path::new("README.md");
    assert!(bad_link(page, "docs/no-such-page.md", false).is_some());
    assert!(bad_link(page, "docs/design.md#no-such-heading", false).is_some());
    assert!(bad_link(page, "docs/design.md", false).is_none());
    assert!(
        bad_link(page, "docs/design.md", true).is_some(),
        "relative, on the crate's page"
    );
    let gone = format!("{REPOSITORY}/blob/main/docs/gone.md");
    assert!(bad_link(page, &gone, true).is_some());
    assert!(
        bad_link(
            page,
            &format!("{REPOSITORY}/blob/main/docs/design.md"),
            true
        )
        .is_none()
    );
    assert!(names_a_path("tests/ready.rs") && resolve(&root(), "tests/ready.rs").is_none());
    assert!(!names_a_path("tokio::time") && !names_a_path("cargo test"));
    assert_eq!(
        slug("The drain delay, against the load balancer"),
        "the-drain-delay-against-the-load-balancer"
    );
    assert_eq!(
        link_targets("see [a](x.md) and [b](y.md#z \"t\")"),
        ["x.md", "y.md#z"]
    );
}

/// The `rust` code blocks of a page that follow a `<!-- snippet: FILE -->`
/// line: (the file, the block's lines, the block's first line number).
fn snippets(text: &str) -> Vec<(String, Vec<&str>, usize)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(file) = line
            .trim()
            .strip_prefix("<!-- snippet:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            continue;
        };
        let Some((n, _)) = lines.find(|(_, l)| l.trim_start().starts_with("```")) else {
            break;
        };
        let block: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        found.push((file.trim().to_owned(), block, n + 2));
    }
    found
}

/// Whether `block`'s lines appear in `source` one after another, each the
/// same but for its indentation (blank lines aside).
fn appears_in(block: &[&str], source: &str) -> bool {
    let wanted: Vec<&str> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let have: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    !wanted.is_empty() && have.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

#[test]
fn the_integration_snippets_are_the_examples_code() {
    let page = root().join("docs/integrations.md");
    let text = std::fs::read_to_string(&page).expect("the page reads");
    let found = snippets(&text);
    let blocks = text.lines().filter(|l| l.trim() == "```rust").count();
    assert_eq!(
        found.len(),
        blocks,
        "every rust block of the page names its example"
    );
    for (file, block, line) in found {
        let source = std::fs::read_to_string(root().join(&file))
            .unwrap_or_else(|e| panic!("docs/integrations.md:{line}: {file}: {e}"));
        assert!(
            appears_in(&block, &source),
            "docs/integrations.md:{line}: the snippet is not in {file} as it stands; copy it \
             from there again:\n{}",
            block.join("\n")
        );
    }
    // The check itself: a changed line is noticed.
    let source = "fn f() {\n    let a = 1;\n\n    let b = 2;\n}\n";
    assert!(appears_in(&["let a = 1;", "  let b = 2;"], source));
    assert!(!appears_in(&["let a = 1;", "let b = 3;"], source));
}
