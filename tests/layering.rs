//! The layers of DESIGN.md, checked: the pure Engine, the protocol types and the traits users
//! implement (storage, network) never import the runtime above them (the `Raft` handle in
//! `src/raft`, RaftCore in `src/core`, the replication tasks in `src/replication`).

use std::fs;
use std::path::Path;

/// Folders that must not depend on the runtime, and the module paths they must not import.
const LOWER: [&str; 4] = ["src/engine", "src/types", "src/storage", "src/network"];
const UPPER: [&str; 3] = ["crate::raft", "crate::core", "crate::replication"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn lower_layers_do_not_import_the_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The Engine's model checker (test code) restarts nodes with RaftCore's own `load_state`,
    // on purpose: a crash-restart must go through exactly what a real node does.
    let exempt = root.join("src/engine/model");
    let mut violations = Vec::new();
    for dir in LOWER {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in files.into_iter().filter(|f| !f.starts_with(&exempt)) {
            let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            for (n, line) in text.lines().enumerate() {
                // Doc links name items for readers; only code imports count.
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                if UPPER.iter().any(|upper| code.contains(upper)) {
                    violations.push(format!(
                        "{}:{}: {}",
                        file.strip_prefix(root).unwrap_or(&file).display(),
                        n + 1,
                        code
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "lower layers import the runtime:\n{}", violations.join("\n"));
}
