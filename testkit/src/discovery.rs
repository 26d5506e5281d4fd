//! Checks JSON against a Google discovery document kept in `pipeline/tests/contracts/` (copies
//! with their provenance and revision in `pipeline/tests/contracts/PROVENANCE.md`): every field name must be known,
//! every enum value listed, every JSON type right (int64 as a string).

use std::path::PathBuf;

use serde_json::Value;

pub struct Discovery {
    doc: Value,
}

impl Discovery {
    /// Loads `tests/contracts/{file}`.
    pub fn load(file: &str) -> Self {
        let path = contracts_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    /// The violation of a request line, if no method of the document has this HTTP method and
    /// a `flatPath` this URL path matches (`{x}` is one non-empty segment; a path's `:verb`
    /// suffix must be the method's).
    pub fn check_path(&self, method: &str, path: &str) -> Option<String> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut methods = Vec::new();
        collect_methods(&self.doc, &mut methods);
        let matched = methods
            .iter()
            .any(|(m, flat)| m.eq_ignore_ascii_case(method) && flat_path_matches(flat, path));
        (!matched)
            .then(|| format!("{method} /{path}: no method of the discovery document has this path"))
    }

    /// The URL of the document's endpoint for `location` (`endpoints[].endpointUrl`), or its
    /// `rootUrl` for `global`.
    pub fn endpoint_url(&self, location: &str) -> Option<String> {
        if location == "global" {
            return self.doc["rootUrl"].as_str().map(str::to_owned);
        }
        self.doc["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["location"] == location)
            .and_then(|e| e["endpointUrl"].as_str().map(str::to_owned))
    }

    /// All violations of `value` against schema `name`, as `path: problem` lines.
    pub fn check(&self, name: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let schema = &self.doc["schemas"][name];
        assert!(
            schema.is_object(),
            "no schema {name} in the discovery document"
        );
        self.walk(schema, value, "$", &mut errors);
        errors
    }

    fn walk(&self, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            return self.walk(&self.doc["schemas"][r], value, path, errors);
        }
        let ty = schema["type"].as_str().unwrap_or("any");
        match ty {
            "object" => {
                let Some(obj) = value.as_object() else {
                    return errors.push(format!("{path}: expected an object, got {value}"));
                };
                for (k, v) in obj {
                    let p = format!("{path}.{k}");
                    if let Some(prop) = schema["properties"].get(k) {
                        self.walk(prop, v, &p, errors);
                    } else if let Some(extra) = schema.get("additionalProperties") {
                        self.walk(extra, v, &p, errors);
                    } else {
                        errors.push(format!("{p}: unknown field"));
                    }
                }
            }
            "array" => match value.as_array() {
                Some(items) => {
                    for (i, v) in items.iter().enumerate() {
                        self.walk(&schema["items"], v, &format!("{path}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{path}: expected an array, got {value}")),
            },
            "string" => {
                let Some(s) = value.as_str() else {
                    return errors.push(format!("{path}: expected a string, got {value}"));
                };
                if let Some(options) = schema["enum"].as_array()
                    && !options.iter().any(|o| o == s)
                {
                    errors.push(format!("{path}: {s:?} is not one of the enum values"));
                }
                if matches!(schema["format"].as_str(), Some("int64" | "uint64"))
                    && s.parse::<i128>().is_err()
                {
                    errors.push(format!("{path}: {s:?} is not an int64 string"));
                }
            }
            "integer" if !value.is_i64() && !value.is_u64() => {
                errors.push(format!("{path}: expected an integer, got {value}"));
            }
            "number" if !value.is_number() => {
                errors.push(format!("{path}: expected a number, got {value}"));
            }
            "boolean" if !value.is_boolean() => {
                errors.push(format!("{path}: expected a boolean, got {value}"));
            }
            _ => {}
        }
    }
}

fn collect_methods(resource: &Value, out: &mut Vec<(String, String)>) {
    for m in resource["methods"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        if let (Some(method), Some(flat)) = (m["httpMethod"].as_str(), m["flatPath"].as_str()) {
            out.push((method.to_owned(), flat.to_owned()));
        }
    }
    for r in resource["resources"]
        .as_object()
        .into_iter()
        .flat_map(|r| r.values())
    {
        collect_methods(r, out);
    }
}

/// Whether `path` (no leading slash) matches `flat` (`v1/projects/{projectsId}/…:verb`).
fn flat_path_matches(flat: &str, path: &str) -> bool {
    // A custom verb follows a `:` in the last segment.
    let split = |s: &str| -> (String, Option<String>) {
        let (head, last) = s.rsplit_once('/').unwrap_or(("", s));
        match last.split_once(':') {
            Some((segment, verb)) if head.is_empty() => (segment.to_owned(), Some(verb.to_owned())),
            Some((segment, verb)) => (format!("{head}/{segment}"), Some(verb.to_owned())),
            None => (s.to_owned(), None),
        }
    };
    let (flat_base, flat_verb) = split(flat);
    let (path_base, path_verb) = split(path);
    if flat_verb != path_verb {
        return false;
    }
    let f: Vec<&str> = flat_base.split('/').collect();
    let p: Vec<&str> = path_base.split('/').collect();
    f.len() == p.len()
        && f.iter().zip(&p).all(|(f, p)| {
            if f.starts_with('{') && f.ends_with('}') {
                !p.is_empty()
            } else {
                f == p
            }
        })
}

/// `AUTOTUNE_CONTRACTS`, else the repository's copies in `pipeline/tests/contracts/`.
#[must_use]
pub fn contracts_dir() -> PathBuf {
    if let Ok(p) = std::env::var("AUTOTUNE_CONTRACTS") {
        return PathBuf::from(p);
    }
    crate::workspace().join("pipeline/tests/contracts")
}
