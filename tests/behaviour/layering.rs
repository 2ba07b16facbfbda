//! The module layering of docs/architecture.md holds: no module of `src/` imports from a layer
//! above its own, and every top-level module has its place in the documented order.

use std::collections::BTreeMap;
use std::path::Path;

/// The documented layers, lowest first, from docs/architecture.md's "Layers, lowest first:" line.
fn documented_layers() -> Vec<String> {
    let doc = std::fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let line = doc
        .lines()
        .find_map(|l| l.strip_prefix("Layers, lowest first:"))
        .expect("docs/architecture.md states the layers");
    line.split('→').map(|m| m.trim().to_owned()).collect()
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and the binary).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "bin").then_some(name)
}

/// Every `crate::<module>` a file names outside its unit tests, with the line it is on.
fn crate_paths(text: &str) -> Vec<(String, usize)> {
    let library = crate::support::source::without_unit_tests(text);
    let mut found = Vec::new();
    for (n, line) in library.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            // `telemetry_gateway::` or `$crate::` are not this form.
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() {
                found.push((name, n + 1));
            }
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").to_owned();
                    if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                        found.push((name, n + 1));
                    }
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let layers = documented_layers();
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    assert_eq!(
        rank.len(),
        layers.len(),
        "a module is listed twice: {layers:?}"
    );

    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    files.sort();
    let mut modules = std::collections::BTreeSet::new();
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix("src").expect("under src/");
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(&own) = rank.get(module.as_str()) else {
            panic!(
                "module `{module}` ({}) has no layer in docs/architecture.md",
                file.display()
            );
        };
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).expect("a source file");
        for (target, line) in crate_paths(&text) {
            if target == module {
                continue;
            }
            // Names that are not modules (`crate::FastMap`'s lower-case cousins, macros) are
            // items of lib.rs, below every module.
            if let Some(&theirs) = rank.get(target.as_str()) {
                if theirs > own {
                    upward.push(format!(
                        "{}:{line}: `{module}` (layer {own}) imports `{target}` (layer {theirs})",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layering:\n{}",
        upward.join("\n")
    );
    // The documented order names every module there is (and none that is gone), except
    // `integration_guide`, which is a document.
    let listed: std::collections::BTreeSet<String> = layers.iter().cloned().collect();
    assert_eq!(
        listed, modules,
        "docs/architecture.md's layers and src/'s modules differ"
    );
}

/// The checker itself finds an upward import (so the test above cannot pass vacuously).
#[test]
fn the_checker_sees_imports() {
    let text = "use crate::export::sink::X;\nuse crate::{config::A, routing::B};\nlet t = telemetry_gateway::start;\n// crate::actors in a comment\n#[cfg(test)]\nmod tests {\n    use crate::runtime::X;\n    fn f() {}\n}\nuse crate::actors::Y;\n";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(found, ["export", "config", "routing", "actors"]);
}
