//! Output formats of hook tools: `smart` (default), `json`, `yaml` (juju/cmd `output.go`).
//!
//! Owns: rendering a [`serde_json::Value`] the way Juju prints tool output.
//!
//! smart: a string is printed raw, a list of strings one per line, a bool as `True`/`False`,
//! null as nothing, anything else as YAML. json: compact JSON plus newline (`null` for nil).

use serde_json::Value;

/// A tool's `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Smart,
    Json,
    Yaml,
}

impl Format {
    /// Parse a `--format` value; the error is Juju's flag error text.
    pub fn parse(s: Option<&str>) -> Result<Format, String> {
        match s {
            None | Some("smart") => Ok(Format::Smart),
            Some("json") => Ok(Format::Json),
            Some("yaml") => Ok(Format::Yaml),
            Some(other) => Err(format!(
                "invalid value {other:?} for option --format: unknown format {other:?}"
            )),
        }
    }
}

/// Render `v` in `format`, newline-terminated (empty for smart null).
pub fn render(v: &Value, format: Format) -> String {
    match format {
        Format::Json => format!("{v}\n"),
        Format::Yaml => yaml(v),
        Format::Smart => match v {
            Value::Null => String::new(),
            Value::String(s) => format!("{s}\n"),
            Value::Bool(true) => "True\n".into(),
            Value::Bool(false) => "False\n".into(),
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| format!("{s}\n"))
                .collect(),
            other => yaml(other),
        },
    }
}

fn yaml(v: &Value) -> String {
    match v {
        Value::Null => "null\n".into(),
        _ => {
            let s = serde_yaml::to_string(v).unwrap_or_default();
            if s.ends_with('\n') {
                s
            } else {
                s + "\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn smart_rules() {
        assert_eq!(render(&json!("a b"), Format::Smart), "a b\n");
        assert_eq!(render(&json!(true), Format::Smart), "True\n");
        assert_eq!(render(&json!(["x", "y"]), Format::Smart), "x\ny\n");
        assert_eq!(render(&Value::Null, Format::Smart), "");
        assert_eq!(render(&json!({"k": "v"}), Format::Smart), "k: v\n");
    }

    #[test]
    fn json_rules() {
        assert_eq!(render(&Value::Null, Format::Json), "null\n");
        assert_eq!(render(&json!({"k": "v"}), Format::Json), "{\"k\":\"v\"}\n");
    }

    #[test]
    fn bad_format() {
        assert!(Format::parse(Some("xml")).is_err());
    }
}
