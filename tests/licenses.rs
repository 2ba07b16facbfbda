//! The licence check of the dependency tree: every package in `cargo metadata`'s resolve must be
//! licensed under an expression that `deny.toml`'s allow-list satisfies. This runs everywhere,
//! offline, on exactly the packages that `cargo test` itself fetched: the resolve is filtered to
//! the host platform (`--filter-platform`), because an unfiltered `cargo metadata` needs the
//! manifests of every platform's crates (`android_system_properties`, `windows-*`), which only a
//! cargo cache that once fetched them has. When `cargo-deny` is installed, `cargo deny --offline
//! check licenses` must pass too, with the same `deny.toml` (it covers every platform).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn allowed() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deny.toml"))
        .expect("deny.toml");
    let v: toml::Value = toml::from_str(&text).expect("deny.toml parses");
    v["licenses"]["allow"]
        .as_array()
        .expect("licenses.allow")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Evaluates an SPDX expression (`OR`, `AND`, `WITH`, parentheses, and the legacy `/` for OR)
/// against the allowed identifiers.
fn satisfied(expr: &str, allow: &BTreeSet<String>) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = or_expr(&tokens, &mut pos, allow);
    ok && pos == tokens.len()
}

fn or_expr(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> bool {
    let mut v = and_expr(t, pos, allow);
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        let rhs = and_expr(t, pos, allow);
        v = v || rhs;
    }
    v
}

fn and_expr(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> bool {
    let mut v = term(t, pos, allow);
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        let rhs = term(t, pos, allow);
        v = v && rhs;
    }
    v
}

fn term(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> bool {
    match t.get(*pos) {
        Some(&"(") => {
            *pos += 1;
            let v = or_expr(t, pos, allow);
            if t.get(*pos) == Some(&")") {
                *pos += 1;
                v
            } else {
                false
            }
        }
        Some(id) => {
            *pos += 1;
            let mut id = (*id).to_owned();
            if t.get(*pos) == Some(&"WITH") {
                id = format!("{id} WITH {}", t.get(*pos + 1).copied().unwrap_or(""));
                *pos += 2;
            }
            allow.contains(&id)
        }
        None => false,
    }
}

#[test]
fn the_spdx_evaluator_reads_expressions_as_cargo_deny_does() {
    let allow: BTreeSet<String> = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(satisfied("MIT OR Apache-2.0", &allow));
    assert!(satisfied("MIT/Apache-2.0", &allow));
    assert!(satisfied("(MIT OR GPL-3.0) AND Apache-2.0", &allow));
    assert!(satisfied(
        "Apache-2.0 WITH LLVM-exception OR GPL-2.0",
        &allow
    ));
    assert!(!satisfied("GPL-3.0", &allow));
    assert!(!satisfied("MIT AND GPL-3.0", &allow));
    assert!(!satisfied("LGPL-2.1-or-later", &allow));
    assert!(!satisfied("(MIT", &allow));
}

/// The platform this test runs on, as `rustc -vV` names it (`x86_64-unknown-linux-gnu`).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .trim()
        .to_owned()
}

#[test]
fn every_dependency_is_under_an_allowed_licence() {
    let allow = allowed();
    let host = host_triple();
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--all-features",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let resolved: BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let mut checked = 0;
    let mut refused = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        if !resolved.contains(p["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let name = format!("{} {}", p["name"], p["version"]);
        match p["license"].as_str() {
            Some(expr) if satisfied(expr, &allow) => checked += 1,
            Some(expr) => refused.push(format!("{name}: {expr}")),
            None => refused.push(format!("{name}: no licence expression")),
        }
    }
    assert!(
        refused.is_empty(),
        "licences outside deny.toml's allow-list:\n{}",
        refused.join("\n")
    );
    assert!(checked > 100, "only {checked} packages checked");
    eprintln!("{checked} packages, every licence allowed by deny.toml");

    // The same policy through cargo-deny, when it is installed.
    match Command::new(env!("CARGO"))
        .args(["deny", "--offline", "check", "licenses"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("no such command") => {
            eprintln!("NOTICE: cargo-deny is not installed; the cargo-metadata check above ran");
        }
        // cargo-deny reads every platform's manifests; offline, on a cargo cache that never
        // fetched them, it cannot. The host-platform check above has run.
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("failed to download") => {
            eprintln!(
                "NOTICE: cargo deny needs crates this cargo cache has not fetched (other \
                 platforms'); run `cargo fetch` for the all-platform check"
            );
        }
        Ok(o) => assert!(
            o.status.success(),
            "cargo deny check licenses failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("NOTICE: cargo deny did not run ({e})"),
    }
}
