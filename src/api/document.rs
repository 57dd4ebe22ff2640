//! App files as the API reads and writes them. The file is the source of truth: the API's
//! view of an app's spec is the file turned into JSON (same keys, same nesting), a create
//! writes a new file from JSON, and an update is a JSON merge patch (RFC 7396) applied to the
//! file with `toml_edit`, so comments and layout written by hand survive an API update.
//!
//! Every file has a version: a hash of its bytes. An update or delete that names a version
//! (`If-Match`) applies only to that version of the file.

use serde_json::Value as Json;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

/// The version of a file's contents: 128 bits of its SHA-256, in hex.
pub fn version(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    crate::random::hex(&digest.as_ref()[..16])
}

/// Whether an `If-Match` value names `version` (or is `*`).
pub fn matches(if_match: &str, version: &str) -> bool {
    if_match
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == "*" || tag == version)
}

/// The file's contents as JSON, with the keys as written.
pub fn to_json(text: &str) -> Result<Json, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

/// A new app file from a JSON object.
pub fn from_json(spec: &Json) -> Result<String, String> {
    let mut document = DocumentMut::new();
    merge(document.as_table_mut(), spec, 0)?;
    Ok(document.to_string())
}

/// Applies a JSON merge patch to the file's text: members set keys (objects merge into
/// tables), `null` removes a key.
pub fn patch(text: &str, patch: &Json) -> Result<String, String> {
    let mut document: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        format!("the app file does not parse: {}", e.message())
    })?;
    merge(document.as_table_mut(), patch, 0)?;
    Ok(document.to_string())
}

/// Merges `patch` into `table`; `depth` 0 is the file's top level, whose objects become
/// `[sections]` (and arrays of objects `[[sections]]`), as in hand-written files; deeper
/// objects (`env`) become inline tables.
fn merge(table: &mut dyn toml_edit::TableLike, patch: &Json, depth: usize) -> Result<(), String> {
    let Json::Object(members) = patch else {
        return Err("expected a JSON object".into());
    };
    for (key, value) in members {
        match value {
            Json::Null => {
                table.remove(key);
            }
            Json::Object(_) => {
                let existing = table.get_mut(key).and_then(Item::as_table_like_mut);
                match existing {
                    Some(inner) => merge(inner, value, depth + 1)?,
                    None => {
                        let item = if depth == 0 {
                            let mut section = Table::new();
                            merge(&mut section, value, depth + 1)?;
                            Item::Table(section)
                        } else {
                            let mut inline = InlineTable::new();
                            merge(&mut inline, value, depth + 1)?;
                            Item::Value(Value::InlineTable(inline))
                        };
                        table.insert(key, item);
                    }
                }
            }
            Json::Array(items)
                if depth == 0 && items.iter().all(Json::is_object) && !items.is_empty() =>
            {
                let mut sections = ArrayOfTables::new();
                for item in items {
                    let mut section = Table::new();
                    merge(&mut section, item, depth + 1)?;
                    sections.push(section);
                }
                table.insert(key, Item::ArrayOfTables(sections));
            }
            other => {
                table.insert(key, Item::Value(scalar(other)?));
            }
        }
    }
    Ok(())
}

/// A JSON value as a TOML value (objects inside arrays as inline tables).
fn scalar(value: &Json) -> Result<Value, String> {
    Ok(match value {
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => return Err(format!("{n} is not a number TOML can hold")),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(scalar(item)?);
            }
            Value::Array(array)
        }
        Json::Object(_) => {
            let mut inline = InlineTable::new();
            merge(&mut inline, value, 1)?;
            Value::InlineTable(inline)
        }
        Json::Null => return Err("null is only allowed to remove a key".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_keeps_the_comments_and_sets_and_removes_keys() {
        let text = "# the demo app\nname = \"hello\"\nproject = \"demo\"\n\n[run]\ncommand = [\"tidegate\", \"demo-app\"]\nenv = { GREETING = \"hello\", OLD = \"x\" } # greeting\n\n[scale]\nmax_scale = 5\n";
        let patched = patch(
            text,
            &json!({"run": {"env": {"NEW": "1", "OLD": null}}, "scale": {"min_scale": 1}, "visibility": "private"}),
        )
        .unwrap();
        assert!(patched.starts_with("# the demo app\n"), "{patched}");
        assert!(patched.contains("# greeting"), "{patched}");
        let value = to_json(&patched).unwrap();
        assert_eq!(
            value["run"]["env"],
            json!({"GREETING": "hello", "NEW": "1"})
        );
        assert_eq!(value["scale"], json!({"max_scale": 5, "min_scale": 1}));
        assert_eq!(value["visibility"], "private");
        assert_ne!(version(text), version(&patched));
    }

    #[test]
    fn a_new_file_looks_hand_written() {
        let text = from_json(&json!({
            "name": "web", "project": "p",
            "run": {"command": ["srv", "--port", "8080"], "env": {"A": "1"}},
            "traffic": [{"revision": "web-00001", "percent": 50}, {"revision": "latest", "percent": 50}]
        }))
        .unwrap();
        assert!(text.contains("[run]\n"), "{text}");
        assert!(text.contains("env = { A = \"1\" }"), "{text}");
        assert!(text.contains("[[traffic]]\n"), "{text}");
        assert_eq!(to_json(&text).unwrap()["traffic"][1]["percent"], 50);
    }

    #[test]
    fn if_match_names_a_version() {
        assert!(matches("\"abc\"", "abc"));
        assert!(matches("W/\"x\", \"abc\"", "abc"));
        assert!(matches("*", "abc"));
        assert!(!matches("\"abd\"", "abc"));
    }
}
