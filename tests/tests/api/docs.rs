//! The documentation stays true: every configuration key of every binary is in docs/configuration.md
//! with its default.

use cspm_shared::config::KeySpec;

#[test]
fn every_configuration_key_is_documented_with_its_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md")).expect("docs");
    let keys: Vec<KeySpec> = cspm_api::config::all_keys()
        .into_iter()
        .chain(cspm_worker::config::all_keys())
        .chain(cspm_scheduler::config::all_keys())
        .collect();
    for k in keys {
        let line = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", k.name)))
            .unwrap_or_else(|| panic!("{} is not documented in docs/configuration.md", k.name));
        if let Some(d) = k.default.filter(|d| !d.is_empty()) {
            assert!(line.contains(&format!("`{d}`")), "{}: the documented default is not `{d}`: {line}", k.name);
        }
        if k.required {
            assert!(line.contains("required"), "{} is required: {line}", k.name);
        }
    }
}

/// Every route of the route table is in the route index of docs/api.md, with its method.
#[test]
fn every_route_is_in_the_api_reference() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).expect("docs");
    let index: Vec<&str> =
        doc.lines().filter(|l| l.starts_with("| GET") || l.starts_with("| P") || l.starts_with("| DELETE")).collect();
    let mut missing = Vec::new();
    for e in cspm_api::routes::table(1 << 20) {
        let method = format!("| {} |", e.method);
        // A trailing-slash alias is documented on its route's row ("also `/api/…/`").
        let path = format!("`{}`", e.path);
        if !index.iter().any(|l| l.starts_with(&method) && l.contains(&path)) {
            missing.push(format!("{} {}", e.method, e.path));
        }
    }
    assert!(missing.is_empty(), "routes missing from the route index of docs/api.md: {missing:?}");
}
