//! Validation of OCSF events against the compiled schema (`ocsf-<version>.export.json`, as served by
//! schema.ocsf.io `/export/schema`), read at run time from the operator's or the tests' copy.
//!
//! Checked: the class exists; every attribute the class (or a nested object) requires is present, except
//! attributes of profiles the event does not declare in `metadata.profiles`; no attribute is unknown;
//! every value has its attribute's type (objects recursively, arrays where the schema says so); enum
//! attributes hold a listed value; `at_least_one` / `just_one` constraints hold; `type_uid` is
//! `class_uid × 100 + activity_id`. Not checked: the regular expressions of string types.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

/// A loaded schema.
pub struct OcsfSchema {
    version: String,
    classes: HashMap<u64, Value>,
    objects: Map<String, Value>,
    /// Scalar type name → its base type (`email_t` → `string_t`).
    base_types: HashMap<String, String>,
}

impl std::fmt::Debug for OcsfSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OcsfSchema({}, {} classes)", self.version, self.classes.len())
    }
}

impl OcsfSchema {
    pub fn load(path: &Path) -> Result<Self, String> {
        let file =
            std::fs::File::open(path).map_err(|e| format!("cannot read the OCSF schema {}: {e}", path.display()))?;
        let export: Value = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| format!("{}: not an OCSF schema export: {e}", path.display()))?;
        Self::from_export(export)
    }

    pub fn from_export(mut export: Value) -> Result<Self, String> {
        let version = export["version"].as_str().unwrap_or_default().to_string();
        let Some(classes) = export["classes"].as_object_mut().map(std::mem::take) else {
            return Err("the schema export has no classes".into());
        };
        let objects = export["objects"].as_object_mut().map(std::mem::take).unwrap_or_default();
        let mut base_types = HashMap::new();
        if let Some(types) = export["types"].as_object() {
            for (name, t) in types {
                let base = t["type"].as_str().unwrap_or(name).to_string();
                base_types.insert(name.clone(), base);
            }
        }
        let classes = classes.into_iter().filter_map(|(_, c)| c["uid"].as_u64().map(|uid| (uid, c))).collect();
        Ok(Self { version, classes, objects, base_types })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every problem of the event, each with its JSON path; empty when the event is valid.
    pub fn validate(&self, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(obj) = event.as_object() else {
            return vec!["$: an event is a JSON object".into()];
        };
        let Some(class_uid) = obj.get("class_uid").and_then(Value::as_u64) else {
            return vec!["$.class_uid: missing or not an integer".into()];
        };
        let Some(class) = self.classes.get(&class_uid) else {
            return vec![format!("$.class_uid: {class_uid} is not a class of OCSF {}", self.version)];
        };
        let profiles: HashSet<String> = obj
            .get("metadata")
            .and_then(|m| m.get("profiles"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if let (Some(t), Some(a)) =
            (obj.get("type_uid").and_then(Value::as_u64), obj.get("activity_id").and_then(Value::as_u64))
            && t != class_uid * 100 + a
        {
            errors.push(format!("$.type_uid: {t} is not class_uid × 100 + activity_id ({})", class_uid * 100 + a));
        }
        self.check_object(class, obj, "$", &profiles, &mut errors);
        errors
    }

    fn check_object(
        &self,
        def: &Value,
        obj: &Map<String, Value>,
        path: &str,
        profiles: &HashSet<String>,
        errors: &mut Vec<String>,
    ) {
        let empty = Map::new();
        let attributes = def["attributes"].as_object().unwrap_or(&empty);
        for (name, attr) in attributes {
            let required = attr["requirement"].as_str() == Some("required");
            let in_profile = attr["profile"].as_str().is_none_or(|p| profiles.contains(p));
            if required && in_profile && obj.get(name).is_none_or(Value::is_null) {
                errors.push(format!("{path}.{name}: required"));
            }
        }
        for (name, value) in obj {
            let here = format!("{path}.{name}");
            match attributes.get(name) {
                None => errors
                    .push(format!("{here}: not an attribute of {}", def["name"].as_str().unwrap_or("this object"))),
                Some(_) if value.is_null() => {}
                Some(attr) => self.check_value(attr, value, &here, profiles, errors),
            }
        }
        if let Some(c) = def.get("constraints") {
            let present = |keys: &Value| {
                keys.as_array()
                    .map(|k| {
                        k.iter()
                            .filter(|k| k.as_str().is_some_and(|k| obj.get(k).is_some_and(|v| !v.is_null())))
                            .count()
                    })
                    .unwrap_or(0)
            };
            if let Some(keys) = c.get("at_least_one")
                && present(keys) == 0
            {
                errors.push(format!("{path}: needs at least one of {keys}"));
            }
            if let Some(keys) = c.get("just_one")
                && present(keys) != 1
            {
                errors.push(format!("{path}: needs exactly one of {keys}"));
            }
        }
    }

    fn check_value(
        &self,
        attr: &Value,
        value: &Value,
        path: &str,
        profiles: &HashSet<String>,
        errors: &mut Vec<String>,
    ) {
        if attr["is_array"].as_bool() == Some(true) {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_scalar_or_object(attr, item, &format!("{path}[{i}]"), profiles, errors);
                    }
                }
                None => errors.push(format!("{path}: must be an array")),
            }
        } else {
            self.check_scalar_or_object(attr, value, path, profiles, errors);
        }
    }

    fn check_scalar_or_object(
        &self,
        attr: &Value,
        value: &Value,
        path: &str,
        profiles: &HashSet<String>,
        errors: &mut Vec<String>,
    ) {
        let ty = attr["type"].as_str().unwrap_or("string_t");
        if ty == "object_t" {
            let name = attr["object_type"].as_str().unwrap_or_default();
            if name == "object" {
                // The generic object (`unmapped`, `data`): any keys.
                if !value.is_object() {
                    errors.push(format!("{path}: must be an object"));
                }
                return;
            }
            match (self.objects.get(name), value.as_object()) {
                (Some(def), Some(obj)) => self.check_object(def, obj, path, profiles, errors),
                (None, _) => errors.push(format!("{path}: unknown object type `{name}` in the schema")),
                (_, None) => errors.push(format!("{path}: must be an object ({name})")),
            }
            return;
        }
        let base = self.base_types.get(ty).map(String::as_str).unwrap_or(ty);
        let ok = match base {
            "string_t" => value.is_string(),
            "integer_t" | "long_t" => value.is_i64() || value.is_u64(),
            "float_t" => value.is_number(),
            "boolean_t" => value.is_boolean(),
            "json_t" => true,
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: must be of type {ty}"));
            return;
        }
        if let Some(values) = attr["enum"].as_object() {
            let key = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !values.contains_key(&key) {
                errors.push(format!("{path}: {key} is not one of the values the schema lists"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> OcsfSchema {
        OcsfSchema::load(&crate::testing::fixtures_dir().join("ocsf/compiled/ocsf-1.4.0.export.json")).expect("schema")
    }

    fn minimal() -> Value {
        json!({
            "activity_id": 1, "category_uid": 2, "class_uid": 2004, "type_uid": 200401, "severity_id": 1,
            "time": 1_700_000_000_000_i64,
            "metadata": { "version": "1.4.0", "product": { "name": "x" } },
            "finding_info": { "uid": "f1", "title": "t" },
        })
    }

    #[test]
    fn a_minimal_detection_finding_is_valid() {
        assert_eq!(schema().validate(&minimal()), Vec::<String>::new());
    }

    #[test]
    fn the_validator_finds_what_is_wrong() {
        let s = schema();
        let mut e = minimal();
        e["finding_info"].as_object_mut().expect("object").remove("uid");
        e["severity_id"] = json!(42);
        e["colour"] = json!("red");
        e["resources"] = json!({ "uid": "not an array" });
        e["type_uid"] = json!(200402);
        e["metadata"]["product"] = json!("a string");
        let errors = s.validate(&e);
        for needle in [
            "finding_info.uid: required",
            "severity_id: 42",
            "colour: not an attribute",
            "resources: must be an array",
            "type_uid",
            "product: must be an object",
        ] {
            assert!(errors.iter().any(|m| m.contains(needle)), "{needle} not in {errors:?}");
        }
    }

    #[test]
    fn profile_attributes_are_required_only_with_their_profile() {
        let s = schema();
        let mut e = minimal();
        e["metadata"]["profiles"] = json!(["cloud"]);
        assert!(s.validate(&e).iter().any(|m| m.contains("$.cloud: required")));
        e["cloud"] = json!({ "provider": "aws" });
        assert_eq!(s.validate(&e), Vec::<String>::new());
    }

    #[test]
    fn prowler_examples_validate() {
        let s = schema();
        for cloud in ["aws", "azure", "gcp", "kubernetes"] {
            let path =
                crate::testing::fixtures_dir().join(format!("prowler/examples/example_output_{cloud}.ocsf.json"));
            let events: Vec<Value> =
                serde_json::from_reader(std::fs::File::open(path).expect("fixture")).expect("json");
            for e in &events {
                let errors = s.validate(e);
                assert!(errors.is_empty(), "{cloud}: {errors:?}");
            }
        }
    }
}
