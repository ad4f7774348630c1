//! A small JSON Schema validator, driven by the schema CISA publishes with the KEV catalog
//! (`catalog_schema.json`, a copy of `known_exploited_vulnerabilities_schema.json`).
//!
//! It understands the keywords that schema uses (`type`, `properties`, `required`, `items`, `$ref` into
//! `$defs`, `pattern`, `format` `date` and `date-time`) and a few more that a new revision is likely to
//! add (`enum`, `minLength`, `minItems`, `minimum`). A keyword it does not know is refused when the
//! schema is compiled, never ignored: a revision that tightens the rules must fail a test here rather
//! than be silently half-applied. The general validators on crates.io cost a dozen crates (a second
//! regex engine, URL and IDNA handling) for one 80-line schema; patterns run on the DFA engine already
//! in the tree.

use regex_automata::dfa::regex::Regex;
use serde_json::Value;

/// Deepest `$ref` chain followed while compiling (the schema is not recursive; this bounds a bad one).
const MAX_DEPTH: usize = 32;

/// Keywords that only describe.
const ANNOTATIONS: &[&str] =
    &["$schema", "$id", "$comment", "title", "description", "url", "examples", "default", "$defs", "definitions"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    String,
    Integer,
    Number,
    Object,
    Array,
    Boolean,
    Null,
}

impl JsonType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => JsonType::String,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "boolean" => JsonType::Boolean,
            "null" => JsonType::Null,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "a string",
            JsonType::Integer => "an integer",
            JsonType::Number => "a number",
            JsonType::Object => "an object",
            JsonType::Array => "an array",
            JsonType::Boolean => "a boolean",
            JsonType::Null => "null",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            JsonType::String => v.is_string(),
            JsonType::Integer => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            JsonType::Number => v.is_number(),
            JsonType::Object => v.is_object(),
            JsonType::Array => v.is_array(),
            JsonType::Boolean => v.is_boolean(),
            JsonType::Null => v.is_null(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Date,
    DateTime,
}

/// One compiled (sub)schema.
#[derive(Debug, Default)]
struct Node {
    types: Vec<JsonType>,
    required: Vec<String>,
    properties: Vec<(String, Node)>,
    items: Option<Box<Node>>,
    pattern: Option<(String, Regex)>,
    format: Option<Format>,
    enumeration: Option<Vec<Value>>,
    min_length: Option<u64>,
    min_items: Option<u64>,
    minimum: Option<f64>,
}

/// One way a document breaks the schema: where (a JSON Pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "the catalog" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    root: Node,
}

impl Schema {
    /// Compiles a schema document; refuses keywords and formats it does not implement.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        Ok(Self { root: compile_node(schema, schema, "#", 0)? })
    }

    /// Every violation of `doc` (object members in the order of the schema's properties, array items in
    /// order); at most `limit` are kept, and the second value counts them all.
    pub fn validate(&self, doc: &Value, limit: usize) -> (Vec<Violation>, usize) {
        let mut out = Found { kept: Vec::new(), total: 0, limit };
        let mut path = String::new();
        check(&self.root, doc, &mut path, &mut out);
        (out.kept, out.total)
    }
}

fn compile_node(node: &Value, root: &Value, at: &str, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: `$ref` nests deeper than {MAX_DEPTH} levels"));
    }
    let obj = node.as_object().ok_or_else(|| format!("{at}: a schema must be an object"))?;
    if let Some(r) = obj.get("$ref") {
        if obj.keys().any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str())) {
            return Err(format!("{at}: keywords beside `$ref` are not supported"));
        }
        let r = r.as_str().ok_or_else(|| format!("{at}/$ref: must be a string"))?;
        let target = resolve(root, r).ok_or_else(|| format!("{at}/$ref: `{r}` does not name a definition"))?;
        return compile_node(target, root, r, depth + 1);
    }
    let mut n = Node::default();
    for (key, value) in obj {
        let here = format!("{at}/{key}");
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for name in names {
                    let t = name.as_str().and_then(JsonType::parse).ok_or_else(|| format!("{here}: unknown type"))?;
                    n.types.push(t);
                }
            }
            "required" => {
                let list = value.as_array().ok_or_else(|| format!("{here}: must be an array"))?;
                for name in list {
                    n.required.push(name.as_str().ok_or_else(|| format!("{here}: names must be strings"))?.into());
                }
            }
            "properties" => {
                let props = value.as_object().ok_or_else(|| format!("{here}: must be an object"))?;
                for (name, sub) in props {
                    n.properties.push((name.clone(), compile_node(sub, root, &format!("{here}/{name}"), depth)?));
                }
            }
            "items" => n.items = Some(Box::new(compile_node(value, root, &here, depth)?)),
            "pattern" => {
                let p = value.as_str().ok_or_else(|| format!("{here}: must be a string"))?;
                let re = Regex::new(p).map_err(|e| format!("{here}: `{p}` is not a supported pattern: {e}"))?;
                n.pattern = Some((p.to_string(), re));
            }
            "format" => {
                n.format = Some(match value.as_str() {
                    Some("date") => Format::Date,
                    Some("date-time") => Format::DateTime,
                    other => return Err(format!("{here}: format {other:?} is not supported")),
                })
            }
            "enum" => {
                n.enumeration = Some(value.as_array().ok_or_else(|| format!("{here}: must be an array"))?.clone())
            }
            "minLength" => n.min_length = Some(value.as_u64().ok_or_else(|| format!("{here}: must be a count"))?),
            "minItems" => n.min_items = Some(value.as_u64().ok_or_else(|| format!("{here}: must be a count"))?),
            "minimum" => n.minimum = Some(value.as_f64().ok_or_else(|| format!("{here}: must be a number"))?),
            other => return Err(format!("{at}: the keyword `{other}` is not supported by this validator")),
        }
    }
    Ok(n)
}

/// `#/$defs/name` (or `#/definitions/name`, or any JSON Pointer into the schema).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

struct Found {
    kept: Vec<Violation>,
    total: usize,
    limit: usize,
}

impl Found {
    fn push(&mut self, path: &str, message: String) {
        self.total += 1;
        if self.kept.len() < self.limit {
            self.kept.push(Violation { path: path.to_string(), message });
        }
    }
}

fn check(n: &Node, v: &Value, path: &mut String, out: &mut Found) {
    if !n.types.is_empty() && !n.types.iter().any(|t| t.matches(v)) {
        let names: Vec<&str> = n.types.iter().map(|t| t.name()).collect();
        out.push(path, format!("must be {}, not {}", names.join(" or "), describe(v)));
        return;
    }
    if let Some(allowed) = &n.enumeration
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(path, format!("{} is not one of {}", short(v), list.join(", ")));
    }
    match v {
        Value::String(s) => {
            if let Some(min) = n.min_length
                && (s.chars().count() as u64) < min
            {
                out.push(path, format!("must be at least {min} characters long"));
            }
            if let Some((p, re)) = &n.pattern
                && !re.is_match(s.as_str())
            {
                out.push(path, format!("{} does not match the pattern {p}", short(v)));
            }
            match n.format {
                Some(Format::Date) if !is_date(s) => out.push(path, format!("{} is not a date (YYYY-MM-DD)", short(v))),
                Some(Format::DateTime) if !is_date_time(s) => {
                    out.push(path, format!("{} is not an RFC 3339 date-time", short(v)))
                }
                _ => {}
            }
        }
        Value::Number(x) => {
            if let (Some(min), Some(f)) = (n.minimum, x.as_f64())
                && f < min
            {
                out.push(path, format!("must be at least {min}"));
            }
        }
        Value::Object(map) => {
            for name in &n.required {
                if !map.contains_key(name) {
                    out.push(path, format!("the required field `{name}` is missing"));
                }
            }
            for (name, sub) in &n.properties {
                if let Some(child) = map.get(name) {
                    let len = path.len();
                    path.push('/');
                    push_pointer_token(path, name);
                    check(sub, child, path, out);
                    path.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = n.min_items
                && (items.len() as u64) < min
            {
                out.push(path, format!("must hold at least {min} item(s)"));
            }
            if let Some(sub) = &n.items {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    check(sub, item, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn push_pointer_token(path: &mut String, name: &str) {
    for c in name.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => format!("the number {v}"),
        Value::String(_) => format!("the string {}", short(v)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A value as JSON, cut to a readable length (messages quote what they refuse).
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 60 { text } else { format!("{}…", text.chars().take(60).collect::<String>()) }
}

fn digits(s: &str) -> Option<u32> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
}

/// `YYYY-MM-DD`, a day that exists (RFC 3339 `full-date`).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (digits(&s[0..4]), digits(&s[5..7]), digits(&s[8..10])) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_date_time(s: &str) -> bool {
    let Some((date, time)) = s.split_once(['T', 't']) else { return false };
    if !is_date(date) {
        return false;
    }
    let (clock, zone) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, None)
    } else {
        match time.rfind(['+', '-']) {
            Some(at) => (&time[..at], Some(&time[at + 1..])),
            None => return false,
        }
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let hms_ok = match hms.split(':').collect::<Vec<_>>().as_slice() {
        [h, m, sec] if h.len() == 2 && m.len() == 2 && sec.len() == 2 => {
            matches!((digits(h), digits(m), digits(sec)), (Some(h), Some(m), Some(sec)) if h < 24 && m < 60 && sec <= 60)
        }
        _ => false,
    };
    let zone_ok = match zone {
        None => true,
        Some(z) => match z.split_once(':') {
            Some((h, m)) if h.len() == 2 && m.len() == 2 => {
                matches!((digits(h), digits(m)), (Some(h), Some(m)) if h < 24 && m < 60)
            }
            _ => false,
        },
    };
    hms_ok && zone_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "required": ["id", "when"],
            "properties": {
                "id": { "type": "string", "pattern": "^CVE-[0-9]{4}-[0-9]{4,19}$" },
                "when": { "type": "string", "format": "date" },
                "list": { "type": "array", "items": { "$ref": "#/$defs/item" } }
            },
            "$defs": { "item": { "type": "integer", "minimum": 1 } }
        }))
        .expect("compiles")
    }

    #[test]
    fn violations_name_the_path_and_the_rule() {
        let s = schema();
        assert_eq!(s.validate(&json!({ "id": "CVE-2021-44228", "when": "2021-12-10" }), 10).1, 0);
        let (found, total) = s.validate(&json!({ "id": "CVE-21-1", "when": "2021-02-30", "list": [1, "x", 0] }), 10);
        assert_eq!(total, 4, "{found:?}");
        let paths: Vec<&str> = found.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/id", "/list/1", "/list/2", "/when"]);
        assert!(found[0].message.contains("pattern"), "{found:?}");
        assert!(found[3].message.contains("not a date"), "{found:?}");
        let (found, _) = s.validate(&json!({}), 10);
        assert!(found[0].message.contains("`id` is missing"), "{found:?}");
        let (kept, total) = s.validate(&json!({ "list": [0, 0, 0, 0] }), 2);
        assert_eq!((kept.len(), total), (2, 6));
    }

    #[test]
    fn unknown_keywords_and_formats_are_refused_not_ignored() {
        assert!(Schema::compile(&json!({ "type": "object", "maxProperties": 3 })).is_err());
        assert!(Schema::compile(&json!({ "type": "string", "format": "email" })).is_err());
        assert!(Schema::compile(&json!({ "$ref": "#/$defs/missing" })).is_err());
        assert!(Schema::compile(&json!({ "$ref": "#/$defs/a", "$defs": { "a": { "$ref": "#/$defs/a" } } })).is_err());
    }

    #[test]
    fn dates_and_date_times_follow_rfc_3339() {
        for ok in ["2024-02-29", "2025-08-25"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in ["2023-02-29", "2025-13-01", "2025-8-25", "25-08-2025", "2025-08-25T00:00:00Z"] {
            assert!(!is_date(bad), "{bad}");
        }
        for ok in ["2025-08-25T17:04:19.9796Z", "2025-08-25T17:04:19Z", "2025-08-25T17:04:19+02:00"] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in ["2025-08-25", "2025-08-25T25:00:00Z", "2025-08-25T17:04:19", "2025-08-25T17:04:19.Z"] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }
}
