//! Checks of the guide (`guide/src`) and README.md that mdBook does not make:
//!
//! - every relative markdown link points at a file that exists and, with `#anchor`, at a
//!   heading of that file; links from the guide stay inside the book;
//! - every chapter is listed in SUMMARY.md;
//! - every `{{#include file:anchor}}` names a file that exists and has that anchor;
//! - every Rust code block is compiled: either it is made of `{{#include}}` lines only (the
//!   included code is compiled where it lives), or its chapter is a doc test in
//!   `src/guide_doctests.rs`;
//! - the README's first screen gives the two commands a newcomer needs, and its benchmark
//!   table agrees with `benches/README.md`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The markdown files checked: README.md and every chapter.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    docs.extend(chapters());
    docs
}

fn chapters() -> Vec<PathBuf> {
    let dir = root().join("guide/src");
    let mut chapters: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    chapters.sort();
    chapters
}

/// One fenced code block: its info string and its lines.
struct CodeBlock {
    info: String,
    line: usize,
    body: Vec<String>,
}

/// Split a markdown text into its prose lines (numbered from 1) and its fenced code blocks.
fn split(text: &str) -> (Vec<(usize, String)>, Vec<CodeBlock>) {
    let mut prose = Vec::new();
    let mut blocks = Vec::new();
    let mut open: Option<CodeBlock> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(CodeBlock { info: info.trim().to_string(), line: i + 1, body: Vec::new() })
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.body.push(line.to_string()),
            (None, None) => prose.push((i + 1, line.to_string())),
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    (prose, blocks)
}

/// Remove inline code spans, whose brackets are not links.
fn strip_inline_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = strip_inline_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

/// The anchor mdBook (and GitHub) gives a heading: lowercase, spaces to dashes, other
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

fn heading_slugs(path: &Path) -> BTreeSet<String> {
    let (prose, _) = split(&read(path));
    prose
        .iter()
        .filter_map(|(_, l)| l.strip_prefix('#').map(|h| h.trim_start_matches('#')))
        .map(|h| slug(&h.replace('`', "")))
        .collect()
}

/// `path` with `.` and `..` resolved, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Every broken link of `doc`, described.
fn broken_links(doc: &Path) -> Vec<String> {
    let dir = doc.parent().unwrap_or(Path::new("."));
    let in_guide = doc.starts_with(root().join("guide"));
    let book = root().join("guide/src");
    let (prose, _) = split(&read(doc));
    let mut broken = Vec::new();
    for (n, line) in &prose {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() { doc.to_path_buf() } else { normalize(&dir.join(file)) };
            let at = format!("{}:{n}: `{target}`", doc.display());
            if !path.exists() {
                broken.push(format!("{at}: {} does not exist", path.display()));
                continue;
            }
            if in_guide && !path.starts_with(&book) {
                broken.push(format!("{at}: leads out of the book (name files outside guide/src as code, not links)"));
                continue;
            }
            if let Some(anchor) = anchor {
                if !heading_slugs(&path).contains(anchor) {
                    broken.push(format!("{at}: no heading `#{anchor}` in {}", path.display()));
                }
            }
        }
    }
    broken
}

#[test]
fn links_lead_to_files_and_headings_that_exist() {
    let broken: Vec<String> = documents().iter().flat_map(|d| broken_links(d)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_in_the_summary() {
    let summary = read(&root().join("guide/src/SUMMARY.md"));
    let listed: BTreeSet<String> = summary.lines().flat_map(link_targets).collect();
    let missing: Vec<String> = chapters()
        .iter()
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .filter(|f| f != "SUMMARY.md" && !listed.contains(f))
        .collect();
    assert!(missing.is_empty(), "chapters missing from SUMMARY.md: {missing:?}");
}

/// The `{{#include path:anchor}}` directives of a code block, as (path, anchor).
fn includes(block: &CodeBlock) -> Vec<(String, Option<String>)> {
    block
        .body
        .iter()
        .filter_map(|l| l.trim().strip_prefix("{{#include ")?.strip_suffix("}}").map(str::trim))
        .map(|spec| match spec.split_once(':') {
            Some((p, a)) => (p.to_string(), Some(a.to_string())),
            None => (spec.to_string(), None),
        })
        .collect()
}

#[test]
fn includes_name_files_and_anchors_that_exist() {
    let mut broken = Vec::new();
    for doc in chapters() {
        let dir = doc.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (_, blocks) = split(&read(&doc));
        for block in &blocks {
            for (file, anchor) in includes(block) {
                let path = normalize(&dir.join(&file));
                let at = format!("{}:{}: {{{{#include {file}}}}}", doc.display(), block.line);
                let Ok(text) = fs::read_to_string(&path) else {
                    broken.push(format!("{at}: no file {}", path.display()));
                    continue;
                };
                if let Some(a) = anchor {
                    let has = |marker: &str| text.lines().any(|l| l.trim_end().ends_with(&format!("{marker}: {a}")));
                    if !has("ANCHOR") || !has("ANCHOR_END") {
                        broken.push(format!("{at}: no ANCHOR/ANCHOR_END `{a}` in {}", path.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken includes:\n{}", broken.join("\n"));
}

fn is_rust(info: &str) -> bool {
    info.split(',').next().is_some_and(|lang| lang.trim() == "rust")
}

#[test]
fn every_rust_block_is_compiled() {
    let doctests = read(&root().join("src/guide_doctests.rs"));
    let doctested = |name: &str| doctests.contains(&format!("include_str!(\"../guide/src/{name}\")"));
    let mut problems = Vec::new();
    for doc in chapters() {
        let name = doc.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let (_, blocks) = split(&read(&doc));
        for block in blocks.iter().filter(|b| is_rust(&b.info)) {
            let at = format!("{}:{}", doc.display(), block.line);
            if block.info.contains("ignore") {
                problems.push(format!("{at}: an `ignore`d Rust block is not compiled"));
            }
            let code_lines = block.body.iter().filter(|l| !l.trim().is_empty());
            let only_includes = code_lines.clone().all(|l| l.trim().starts_with("{{#include "));
            let any_include = code_lines.clone().any(|l| l.trim().starts_with("{{#include "));
            match (doctested(&name), only_includes, any_include) {
                (true, _, true) => {
                    problems.push(format!("{at}: a doc-tested chapter cannot use {{{{#include}}}} in Rust blocks"))
                }
                (false, false, _) => {
                    problems.push(format!("{at}: Rust code that nothing compiles: add {name} to src/guide_doctests.rs"))
                }
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_first_screen_gives_the_two_commands() {
    let readme = read(&root().join("README.md"));
    let first_screen: Vec<&str> = readme.lines().take(24).collect();
    for command in ["cargo run --release -p raft-kv -- demo", "cargo test --all-features"] {
        assert!(
            first_screen.iter().any(|l| l.trim() == command),
            "README.md's first 24 lines must give `{command}` on a line of its own"
        );
    }
}

/// The rows of the first table whose header starts with `header_start`, as cells.
fn table_rows(text: &str, header_start: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header_start)).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        let Some(inner) = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')) else { break };
        rows.push(inner.split('|').map(|c| c.trim().replace(' ', "")).collect());
    }
    rows
}

#[test]
fn readme_benchmark_table_agrees_with_benches_readme() {
    let readme = table_rows(&read(&root().join("README.md")), "| clients | quorate ops/s");
    let benches = table_rows(&read(&root().join("benches/README.md")), "| clients | quorate ops/s");
    assert!(!readme.is_empty() && !benches.is_empty(), "both READMEs have a results table");
    assert_eq!(readme.len(), benches.len(), "the same client counts in both tables");
    let round = |s: &str| s.parse::<f64>().map(|v| v.round() as i64).ok();
    for (r, b) in readme.iter().zip(&benches) {
        // README: clients, quorate ops/s, openraft ops/s, ratio, quorate p50, openraft p50.
        // benches: clients, quorate ops/s, openraft ops/s, ratio, paired ratio, quorate p50,
        // openraft p50, ...
        assert_eq!(r[..4], b[..4], "README.md row {r:?} differs from benches/README.md row {b:?}");
        assert_eq!(round(&r[4]), round(&b[5]), "quorate p50 in row {r:?}");
        assert_eq!(round(&r[5]), round(&b[6]), "openraft p50 in row {r:?}");
    }
}

#[test]
fn slugs_follow_mdbook() {
    assert_eq!(slug("The storage conformance suite"), "the-storage-conformance-suite");
    assert_eq!(slug("Network: replication and stream_append"), "network-replication-and-stream_append");
    assert_eq!(slug("Reads: consistency levels"), "reads-consistency-levels");
}
