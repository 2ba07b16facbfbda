//! The public API is a deliberate list: `tests/public-api.txt` holds every public declaration
//! reachable through a public module path (`pub` items, their `pub` methods and fields, and the
//! `pub use` re-exports), as read from the source. A change to it fails here until the list is
//! updated with it, so nothing becomes public, or stops being public, unnoticed:
//!
//! ```text
//! UPDATE_PUBLIC_API=1 cargo test --all-features --test public_api
//! ```
//!
//! The listing is of a build with every feature (the `[[test]]` entry requires them).

use std::path::{Path, PathBuf};

#[path = "support/source.rs"]
mod source;
use source::without_unit_tests;

const SNAPSHOT: &str = "tests/public-api.txt";

/// The file of module `name` declared in `dir` (the directory its parent's children live in).
fn module_file(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        return Some((flat, dir.join(name)));
    }
    let nested = dir.join(name).join("mod.rs");
    nested.exists().then(|| (nested, dir.join(name)))
}

/// A declaration's first line, without its body or trailing punctuation.
fn head(line: &str) -> String {
    let line = line.trim();
    let cut = line
        .find(" {")
        .or_else(|| line.find(" where"))
        .unwrap_or(line.len());
    line[..cut]
        .trim_end_matches([';', ',', '{', ' '])
        .to_owned()
}

/// The name a declaration line declares (`pub struct Name<T>` -> `Name`).
fn declared_name(decl: &str) -> Option<&str> {
    // `pub [unsafe|async|const|extern]* <kind> <name>`: the name is the first word that is
    // not a keyword (`pub const fn f`, `pub const C: u8`, `pub struct S<T>`).
    const KEYWORDS: [&str; 13] = [
        "unsafe", "async", "const", "extern", "fn", "struct", "enum", "trait", "type", "static",
        "mod", "use", "union",
    ];
    let name = decl
        .split_whitespace()
        .skip(1)
        .find(|w| !KEYWORDS.contains(w))?;
    name.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .filter(|n| !n.is_empty())
}

/// Where a `pub use` path's module is, when it is one of this crate's: (file, children dir) of
/// the module holding the named items. `None` for another crate's path.
fn resolve_use(src: &Path, children: &Path, segments: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let (mut file, mut dir) = (PathBuf::new(), children.to_path_buf());
    let mut segments = segments;
    if segments.first() == Some(&"crate") {
        dir = src.to_path_buf();
        segments = &segments[1..];
    }
    if segments.is_empty() {
        return None;
    }
    for seg in segments {
        let (f, d) = module_file(&dir, seg)?;
        file = f;
        dir = d;
    }
    Some((file, dir))
}

/// The public declarations of the module in `file` (path `path`), and of its public submodules;
/// with `only`, just the declarations (and members) of those names (a re-export from a private
/// module).
fn scan(path: &str, file: &Path, children: &Path, out: &mut Vec<String>) {
    scan_filtered(path, file, children, None, out)
}

fn scan_filtered(
    path: &str,
    file: &Path,
    children: &Path,
    only: Option<&[String]>,
    out: &mut Vec<String>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wanted = |name: Option<&str>| match (only, name) {
        (None, _) => true,
        (Some(names), Some(n)) => names.iter().any(|w| w == n),
        (Some(_), None) => false,
    };
    let text = without_unit_tests(&std::fs::read_to_string(file).expect("a source file"));
    // The enclosing blocks: (its name for the listing, or None for a block whose `pub`s are not
    // API (a trait impl, a function body), its brace depth).
    let mut stack: Vec<(Option<String>, usize)> = Vec::new();
    let mut depth = 0usize;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let code = trimmed.split("//").next().unwrap_or("");
        let context = stack.last().map(|(name, _)| name.clone());
        let public_here = matches!(context, None | Some(Some(_)));
        let opens = code.matches('{').count();
        let closes = code.matches('}').count();
        let owner_name = context.clone().flatten();
        let member_of_wanted = owner_name.as_deref().is_some_and(|o| {
            wanted(
                o.trim_start_matches("impl ")
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .find(|w| !w.is_empty() && !["pub", "struct", "enum", "trait"].contains(w)),
            )
        });
        let top = stack.is_empty();
        let decl = head(trimmed);
        // A re-export is wanted when it re-exports a wanted name.
        let reexports_wanted = decl.strip_prefix("pub use ").is_some_and(|used| {
            used.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '*'))
                .any(|n| !n.is_empty() && wanted(Some(n)))
        });
        let listed = public_here
            && (trimmed.starts_with("pub ") || trimmed.starts_with("pub unsafe "))
            && (only.is_none()
                || (top && (wanted(declared_name(&decl)) || reexports_wanted))
                || (!top && member_of_wanted));
        if listed {
            let owner = owner_name.map(|c| format!("{c}: ")).unwrap_or_default();
            out.push(format!("{path}: {owner}{}", head(trimmed)));
            // A re-export from a private module of this crate: its items are API too.
            if let Some(used) = head(trimmed).strip_prefix("pub use ") {
                let (module, names): (&str, Vec<String>) = match used.split_once("::{") {
                    Some((m, rest)) => (
                        m,
                        rest.trim_end_matches('}')
                            .split(',')
                            .map(|n| n.trim().rsplit(" as ").last().unwrap_or("").to_owned())
                            .filter(|n| !n.is_empty())
                            .collect(),
                    ),
                    None => match used.rsplit_once("::") {
                        Some((m, n)) => (m, vec![n.trim().to_owned()]),
                        None => ("", Vec::new()),
                    },
                };
                let segments: Vec<&str> = module.split("::").collect();
                if let Some((f, d)) = resolve_use(&src, children, &segments) {
                    let glob = names.iter().any(|n| n == "*");
                    // Through a filtered re-export, only the names wanted here go on.
                    let names: Vec<String> = names
                        .into_iter()
                        .filter(|n| n != "*" && wanted(Some(n)))
                        .collect();
                    let filter = match (glob, only) {
                        (true, None) => None,
                        (true, Some(outer)) => Some(outer),
                        (false, _) => Some(names.as_slice()),
                    };
                    scan_filtered(&format!("{path} (from {module})"), &f, &d, filter, out);
                }
            }
            // A public submodule in its own file.
            if let Some(name) = trimmed
                .strip_prefix("pub mod ")
                .and_then(|r| r.strip_suffix(';'))
            {
                let (sub, subdir) =
                    module_file(children, name).unwrap_or_else(|| panic!("module {path}::{name}"));
                scan_filtered(&format!("{path}::{name}"), &sub, &subdir, None, out);
            }
        }
        if opens > closes {
            // What the new block is: an inherent impl or a public type lists its members.
            let name = if let Some(rest) = code.strip_prefix("impl") {
                (!rest.contains(" for ")).then(|| {
                    let ty = rest.trim_start_matches(|c| c != ' ').trim();
                    format!("impl {}", ty.trim_end_matches('{').trim())
                })
            } else if code.starts_with("pub struct ")
                || code.starts_with("pub enum ")
                || code.starts_with("pub trait ")
                || code.starts_with("pub mod ")
            {
                Some(head(code))
            } else {
                None
            };
            // Inside a block that is not API, everything nested is not API either.
            let name = if public_here { name } else { None };
            for _ in 0..opens - closes {
                depth += 1;
                stack.push((name.clone(), depth));
            }
        } else {
            for _ in 0..closes - opens {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
        }
    }
}

fn listing() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    scan("crate", &root.join("lib.rs"), &root, &mut out);
    out.join("\n") + "\n"
}

#[test]
fn the_public_api_is_the_committed_list() {
    let now = listing();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    if std::env::var_os("UPDATE_PUBLIC_API").is_some() {
        std::fs::write(&file, &now).expect("the snapshot is writable");
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    if committed != now {
        let old: std::collections::BTreeSet<&str> = committed.lines().collect();
        let new: std::collections::BTreeSet<&str> = now.lines().collect();
        let added: Vec<_> = new.difference(&old).collect();
        let removed: Vec<_> = old.difference(&new).collect();
        panic!(
            "the public API changed; if that is meant, run UPDATE_PUBLIC_API=1 cargo test \
             --all-features --test public_api and commit {SNAPSHOT}\nadded: {added:#?}\nremoved: {removed:#?}"
        );
    }
}

/// The scanner sees what it must: a public item, an inherent method, a field; not a trait
/// impl's method, a `pub(crate)` item, or anything in a unit test module.
#[test]
fn the_scanner_reads_declarations() {
    let dir = tempfile_dir();
    let file = dir.join("lib.rs");
    std::fs::write(
        &file,
        "pub struct A {\n    pub x: u8,\n    y: u8,\n}\nimpl A {\n    pub fn new() -> Self {\n        A { x: 0, y: 0 }\n    }\n    pub(crate) fn hidden() {}\n}\nimpl Clone for A {\n    fn clone(&self) -> Self { todo!() }\n}\npub(crate) fn internal() {}\n#[cfg(test)]\nmod tests {\n    pub fn t() {}\n}\npub use std::fmt::Debug;\n",
    )
    .unwrap();
    let mut out = Vec::new();
    scan("crate", &file, &dir, &mut out);
    assert_eq!(
        out,
        [
            "crate: pub struct A",
            "crate: pub struct A: pub x: u8",
            "crate: impl A: pub fn new() -> Self",
            "crate: pub use std::fmt::Debug",
        ]
    );
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("public-api-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
