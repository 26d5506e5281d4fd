//! Checks JSON against a Google discovery document kept in `tests/contracts/` (copies with their
//! provenance and revision in `tests/contracts/PROVENANCE.md`): every field name must be known,
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

pub fn contracts_dir() -> PathBuf {
    if let Ok(p) = std::env::var("AUTOTUNE_CONTRACTS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contracts")
}
