//! The house's map holds (issue 21): `src/lib.rs` declares the modules bottom-up, and no module
//! imports one declared after it (so no import cycle between modules). Read from the sources,
//! as a newcomer would; test modules (`#[cfg(test)] mod tests`) and comments are left out.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules `lib.rs` declares, in its order.
fn declared() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The files of module `m`: `m.rs`, or every file under `m/`.
fn files_of(m: &str) -> Vec<PathBuf> {
    let dir = src().join(m);
    if !dir.is_dir() {
        return vec![src().join(format!("{m}.rs"))];
    }
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The production code of a file: up to its test module, without comment lines.
fn production(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a text names after `crate::`, in paths and in `use crate::{…}`
/// groups.
fn named(text: &str, modules: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // The group's first-level names: each item's first word.
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => return true,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(group.len(), |(j, _)| j);
            let mut items = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..j]);
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            items.push(&group[start..end]);
            items
                .into_iter()
                .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        out.extend(
            words
                .into_iter()
                .filter(|w| modules.iter().any(|m| m == w))
                .map(str::to_owned),
        );
    }
    out
}

#[test]
fn no_module_imports_one_above_it_in_the_map() {
    let modules = declared();
    assert!(modules.len() > 20, "lib.rs declares {modules:?}");
    let mut upward = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        for file in files_of(m) {
            for x in named(&production(&file), &modules) {
                let j = modules.iter().position(|n| *n == x).unwrap();
                if j > i {
                    upward.push(format!(
                        "{} ({m}) imports {x}, declared after it",
                        file.strip_prefix(src()).unwrap().display()
                    ));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "{}", upward.join("\n"));
}

/// The checker finds what it looks for: paths and `use` groups, nested ones too.
#[test]
fn the_checker_sees_paths_and_groups() {
    let modules: Vec<String> = ["storage", "run", "summary"].map(str::to_owned).to_vec();
    let text = "use crate::{storage::{self, Store}, run::Job};\nlet x = crate::summary::render();";
    let mut found = named(text, &modules);
    found.sort();
    assert_eq!(found, ["run", "storage", "summary"]);
}
