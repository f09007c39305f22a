//! The docs stay true. In `README.md`, `docs/` and the crate's README,
//! read as Markdown (inline and reference links, code spans, code blocks):
//! every relative link leads to a file of the repository, from the page's
//! own folder as GitHub resolves it, and to a heading of that file where it
//! names one; every file or folder a code span names exists; the crate's
//! README, which crates.io shows away from the repository, links only
//! absolutely, its links into the repository leading to what exists. Each
//! `rust` block of `docs/integrations.md` is taken, line for line, from
//! the example it names, which the test command builds and tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

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

/// What a page holds that can go stale, each with its line.
#[derive(Debug, Default)]
struct Page {
    links: Vec<(usize, String)>,
    code_spans: Vec<(usize, String)>,
    anchors: BTreeSet<String>,
    /// The code blocks: the line of their first line, their info string,
    /// their text, and the file a `<!-- snippet: FILE -->` before them names.
    blocks: Vec<(usize, String, String, Option<String>)>,
}

fn read_page(text: &str) -> Page {
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut page = Page::default();
    let mut heading: Option<String> = None;
    let mut block: Option<(usize, String, String)> = None;
    let mut snippet: Option<String> = None;
    // GitHub's flavour: tables, strikethrough, task lists, footnotes.
    let gfm = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    for (event, range) in Parser::new_ext(text, gfm).into_offset_iter() {
        let line = line_of(range.start);
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                page.links.push((line, dest_url.to_string()));
            }
            Event::Start(Tag::Heading { .. }) => {
                heading = Some(String::new());
            }
            Event::End(TagEnd::Heading(_)) => {
                page.anchors
                    .insert(slug(&heading.take().unwrap_or_default()));
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match kind {
                    CodeBlockKind::Fenced(info) => info.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                block = Some((line + 1, info, String::new()));
            }
            Event::End(TagEnd::CodeBlock) => {
                let (first, info, body) = block.take().expect("a block was open");
                page.blocks.push((first, info, body, snippet.take()));
            }
            Event::Text(t) => match (&mut block, &mut heading) {
                (Some((_, _, body)), _) => body.push_str(&t),
                (None, Some(h)) => h.push_str(&t),
                (None, None) => {}
            },
            Event::Code(code) => {
                if let Some(h) = &mut heading {
                    h.push_str(&code);
                }
                page.code_spans.push((line, code.to_string()));
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                let marker = html
                    .trim()
                    .strip_prefix("<!-- snippet:")
                    .and_then(|r| r.strip_suffix("-->"));
                if let Some(file) = marker {
                    snippet = Some(file.trim().to_owned());
                }
                let mut rest = &*html;
                while let Some(at) = rest.find("href=\"") {
                    let value = &rest[at + 6..];
                    let end = value.find('"').unwrap_or(value.len());
                    page.links.push((line, value[..end].to_owned()));
                    rest = &value[end..];
                }
            }
            _ => {}
        }
    }
    page
}

/// Whether a code span names a file or folder of the repository: a path of
/// plain characters that begins with one of the repository's top folders,
/// ends with a file extension the repository uses, or ends with `/`.
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
        && span.len() > 1
        && !span.starts_with('/')
        && !span.contains("..")
        && (TOP.iter().any(|t| span.starts_with(t))
            || EXTENSIONS.iter().any(|e| span.ends_with(e))
            || span.ends_with('/'))
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

/// Whether `path` exists, a pattern (`docs/*.md`) by its folder.
fn exists(path: &Path) -> bool {
    match path.to_string_lossy().contains('*') {
        true => path.parent().is_some_and(Path::is_dir),
        false => path.exists(),
    }
}

/// Where a code span's path leads, if anywhere: relative to the page's
/// folder, to the root, or, for a source file or folder named as the design
/// page's layout names them (`run/clock.rs`, `registry/`), to the
/// library's `src/`.
fn resolve_span(page_dir: &Path, path: &str) -> Option<PathBuf> {
    [
        page_dir.to_path_buf(),
        root(),
        root().join("crates/compactor/src"),
    ]
    .into_iter()
    .map(|base| base.join(path))
    .find(|p| exists(p))
}

/// What is wrong with a link's target, if anything. A relative link is
/// resolved from the page's folder only, as GitHub does.
fn bad_link(page: &Path, target: &str, crate_page: bool) -> Option<String> {
    let anchors_of = |p: &Path| read_page(&std::fs::read_to_string(p).unwrap_or_default()).anchors;
    let has_anchor = |file: &Path, anchor: &str| {
        anchor.is_empty()
            || file.extension().is_none_or(|e| e != "md")
            || anchors_of(file).contains(anchor)
    };
    if let Some(anchor) = target.strip_prefix('#') {
        let own = root().join(page);
        return (!has_anchor(&own, anchor)).then(|| format!("no heading for #{anchor}"));
    }
    if let Some(in_repo) = target.strip_prefix(REPOSITORY) {
        let Some(path) = in_repo
            .strip_prefix("/blob/main/")
            .or(in_repo.strip_prefix("/tree/main/"))
        else {
            return Some(format!(
                "{target}: link into the repository through {REPOSITORY}/blob/main/"
            ));
        };
        let (path, anchor) = path.split_once('#').unwrap_or((path, ""));
        let file = root().join(path);
        return match (file.exists(), has_anchor(&file, anchor)) {
            (false, _) => Some(format!("{target}: no `{path}` in the repository")),
            (true, false) => Some(format!("{target}: no heading for #{anchor}")),
            (true, true) => None,
        };
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
    let file = root()
        .join(page.parent().unwrap_or(Path::new("")))
        .join(path);
    if !exists(&file) {
        return Some(format!("{target}: no such file from {}", page.display()));
    }
    (!has_anchor(&file, anchor)).then(|| format!("{target}: no heading for #{anchor}"))
}

#[test]
fn every_file_and_link_the_docs_name_exists() {
    let mut wrong = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page)).expect("the page reads");
        let read = read_page(&text);
        let crate_page = page.starts_with("crates");
        let dir = root().join(page.parent().unwrap_or(Path::new("")));
        for (n, span) in read.code_spans.iter().filter(|(_, s)| names_a_path(s)) {
            if resolve_span(&dir, span).is_none() {
                let at = page.display();
                wrong.push(format!(
                    "{at}:{n}: `{span}` names no file of the repository"
                ));
            }
        }
        for (n, target) in &read.links {
            if let Some(why) = bad_link(&page, target, crate_page) {
                wrong.push(format!("{}:{n}: {why}", page.display()));
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
    let readme = Path::new("README.md");
    let design = Path::new("docs/design.md");
    assert!(bad_link(readme, "docs/no-such-page.md", false).is_some());
    assert!(bad_link(readme, "docs/design.md#no-such-heading", false).is_some());
    assert!(bad_link(readme, "docs/design.md", false).is_none());
    // From docs/, a link to the root's README must climb: GitHub resolves
    // it from the page's folder.
    assert!(bad_link(design, "README.md", false).is_some());
    assert!(bad_link(design, "../README.md", false).is_none());
    assert!(bad_link(design, "run/clock.rs", false).is_some());
    assert!(
        bad_link(readme, "docs/design.md", true).is_some(),
        "relative, on the crate's page"
    );
    let repo = |path: &str| format!("{REPOSITORY}{path}");
    assert!(bad_link(readme, &repo("/blob/main/docs/gone.md"), true).is_some());
    assert!(
        bad_link(
            readme,
            &repo("/blob/main/docs/design.md#no-such-heading"),
            true
        )
        .is_some()
    );
    assert!(bad_link(readme, &repo("/blob/other/docs/design.md"), true).is_some());
    assert!(bad_link(readme, &repo("/blob/main/docs/design.md"), true).is_none());
    assert!(names_a_path("tests/ready.rs") && resolve_span(&root(), "tests/ready.rs").is_none());
    assert!(names_a_path("registry/") && resolve_span(&root(), "registry/").is_some());
    assert!(!names_a_path("tokio::time") && !names_a_path("cargo test") && !names_a_path("/"));
    assert_eq!(
        slug("The drain delay, against the load balancer"),
        "the-drain-delay-against-the-load-balancer"
    );
    // Read as Markdown: a reference link, a code span across lines, an
    // HTML link, and a heading with code.
    let page = read_page(
        "# A `b` c\n\nSee [x][r] and `docs/\ngone.md`, <a href=\"y.md\">y</a>.\n\n[r]: z.md\n",
    );
    let links: Vec<&str> = page.links.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(links, ["z.md", "y.md"]);
    assert_eq!(page.code_spans[1].1, "docs/ gone.md");
    assert!(page.anchors.contains("a-b-c"));
}

/// Whether `block`'s lines appear in `source` one after another, each the
/// same but for its indentation (blank lines aside).
fn appears_in(block: &str, source: &str) -> bool {
    let wanted: Vec<&str> = block
        .lines()
        .map(str::trim)
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
    let text = std::fs::read_to_string(root().join("docs/integrations.md")).expect("the page");
    let page = read_page(&text);
    let rust = page
        .blocks
        .iter()
        .filter(|(_, info, ..)| info.starts_with("rust"));
    let mut checked = 0;
    for (line, _, block, file) in rust {
        let at = format!("docs/integrations.md:{line}");
        let file = file
            .as_deref()
            .unwrap_or_else(|| panic!("{at}: a rust block without `<!-- snippet: FILE -->`"));
        assert!(
            file.starts_with("examples/") && file.ends_with(".rs"),
            "{at}: a snippet comes from an example, not {file}"
        );
        let source = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|e| panic!("{at}: {file}: {e}"));
        assert!(
            appears_in(block, &source),
            "{at}: the snippet is not in {file} as it stands; copy it from there again:\n{block}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "the page's snippets were not found");
    // The check itself: a changed line is noticed.
    let source = "fn f() {\n    let a = 1;\n\n    let b = 2;\n}\n";
    assert!(appears_in("let a = 1;\n  let b = 2;", source));
    assert!(!appears_in("let a = 1;\nlet b = 3;", source));
}
