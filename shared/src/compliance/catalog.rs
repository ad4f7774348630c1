//! The operator's SCF catalog, parsed from the files they upload, validated, and assembled into one
//! version: controls, crosswalks (framework requirement → SCF control) and the tools' check →
//! requirement files.
//!
//! Two layouts are understood, and may be combined:
//! - the YAML catalog (a library whose `objects.framework.requirement_nodes` are the domains at depth 1
//!   and the controls below them) with its STRM crosswalks (libraries of `requirement_mapping_sets`);
//! - the JSON catalog (`{"controls": [{id, domain, name, description, weight, framework_mappings}]}`)
//!   with its reverse index (`{framework: {requirement: [scf ids]}}`).
//!
//! Nothing of a catalog is in this repository: every control, every mapping and every keyword comes from
//! the files at run time. Files are deserialised straight into the typed shapes below (no value tree),
//! from a body whose size the API bounds; a file that does not fit is refused naming the file and, where
//! the parser knows it, the line.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::normalize::{self, framework_key, requirement_key};

/// Why an upload is not a catalog. The message names the file and says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

fn fail<T>(file: &str, msg: impl std::fmt::Display) -> Result<T, CatalogError> {
    Err(CatalogError(format!("{file}: {msg}")))
}

/// What an uploaded file is for (the name of its form field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// The catalog of controls (YAML or JSON).
    Catalog,
    /// A crosswalk: a YAML STRM mapping library or the JSON framework → SCF index.
    Crosswalk,
    /// A tool's check → requirement file (Prowler's `compliance/*.json`).
    CheckMapping,
}

impl PartKind {
    pub fn from_field(name: &str) -> Option<Self> {
        match name {
            "catalog" => Some(PartKind::Catalog),
            "crosswalk" | "crosswalks" | "mapping" => Some(PartKind::Crosswalk),
            "check_mapping" | "check_mappings" => Some(PartKind::CheckMapping),
            _ => None,
        }
    }
}

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct Upload {
    pub kind: PartKind,
    /// The file name the client gave (for messages and the catalog's record).
    pub name: String,
    pub bytes: Vec<u8>,
}

/// One SCF control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub scf_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: String,
    /// The control's question (YAML `annotation`).
    #[serde(default)]
    pub question: Option<String>,
    pub domain: String,
    /// The catalog's weighting (1–10), where it has one.
    #[serde(default)]
    pub weight: Option<i32>,
}

/// One crosswalk pair: a framework requirement that an SCF control covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrosswalkPair {
    /// The framework as the catalog names it (`nist_csf_2.0`, `nist-csf-2.0`).
    pub framework: String,
    /// The requirement as the catalog writes it (`GV.RM-01`).
    pub requirement: String,
    pub scf_id: String,
    /// STRM relationship (`equal`, `subset`, `superset`, `intersect`), when the crosswalk has one.
    #[serde(default)]
    pub relationship: Option<String>,
    /// The file it came from.
    pub source: String,
}

/// One requirement of a tool's check → requirement file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequirement {
    /// The framework key the tool writes in its findings (`NIST-CSF-2.0`, `ISO27001-2022`).
    pub framework: String,
    /// The tool's id of the requirement (`A.8.3`, Prowler's NIST `oc_1`).
    pub id: String,
    /// The requirement's name when it has the shape of an id (Prowler's NIST `GV.OC-1`).
    #[serde(default)]
    pub name: Option<String>,
    pub checks: Vec<String>,
    pub source: String,
}

/// A file of the version, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceFile {
    pub field: String,
    pub name: String,
    /// `scf-yaml`, `scf-json`, `strm-yaml`, `framework-index-json`, `prowler-compliance-json`.
    pub format: String,
    pub bytes: i64,
    pub sha256: String,
}

/// A validated catalog version, ready to be stored.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The release the files name (`scf-2025.2.2`), when they name one.
    pub release: Option<String>,
    pub controls: Vec<Control>,
    pub crosswalk: Vec<CrosswalkPair>,
    pub checks: Vec<CheckRequirement>,
    pub files: Vec<SourceFile>,
    /// What was accepted but is worth knowing (mappings to controls the catalog does not have).
    pub warnings: Vec<String>,
}

impl Catalog {
    pub fn domains(&self) -> BTreeSet<&str> {
        self.controls.iter().map(|c| c.domain.as_str()).collect()
    }

    /// (framework as first named, distinct requirements, distinct controls) per framework.
    pub fn framework_summary(&self) -> Vec<(String, usize, usize)> {
        let mut by_key: BTreeMap<String, (String, HashSet<String>, HashSet<&str>)> = BTreeMap::new();
        for p in &self.crosswalk {
            let e = by_key
                .entry(framework_key(&p.framework))
                .or_insert_with(|| (p.framework.clone(), HashSet::new(), HashSet::new()));
            e.1.insert(requirement_key(&p.requirement));
            e.2.insert(&p.scf_id);
        }
        by_key.into_values().map(|(name, r, c)| (name, r.len(), c.len())).collect()
    }
}

/// Parses and validates a set of uploaded files into one catalog version. Exactly one `catalog` file is
/// needed (a second one of the other layout may add titles and questions: see [`merge_controls`]).
pub fn assemble(uploads: &[Upload]) -> Result<Catalog, CatalogError> {
    let mut catalog = Catalog::default();
    let mut control_sets: Vec<(String, Vec<Control>)> = Vec::new();
    let mut raw_pairs: Vec<RawPair> = Vec::new();
    for u in uploads {
        let text_start = u.bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if text_start.is_none() {
            return fail(&u.name, "the file is empty");
        }
        let is_json = text_start == Some(b'{') || text_start == Some(b'[');
        let format = match (u.kind, is_json) {
            (PartKind::Catalog, true) => {
                let (controls, pairs) = parse_json_catalog(&u.name, &u.bytes)?;
                control_sets.push((u.name.clone(), controls));
                raw_pairs.extend(pairs);
                "scf-json"
            }
            (PartKind::Catalog, false) => {
                let (release, controls) = parse_yaml_catalog(&u.name, &u.bytes)?;
                catalog.release = catalog.release.or(release);
                control_sets.push((u.name.clone(), controls));
                "scf-yaml"
            }
            (PartKind::Crosswalk, true) => {
                raw_pairs.extend(parse_framework_index(&u.name, &u.bytes)?);
                "framework-index-json"
            }
            (PartKind::Crosswalk, false) => {
                raw_pairs.extend(parse_yaml_crosswalk(&u.name, &u.bytes)?);
                "strm-yaml"
            }
            (PartKind::CheckMapping, true) => {
                catalog.checks.extend(parse_check_mapping(&u.name, &u.bytes)?);
                "prowler-compliance-json"
            }
            (PartKind::CheckMapping, false) => {
                return fail(&u.name, "a check mapping must be a JSON file (Prowler's compliance/*.json)");
            }
        };
        catalog.files.push(SourceFile {
            field: match u.kind {
                PartKind::Catalog => "catalog",
                PartKind::Crosswalk => "crosswalk",
                PartKind::CheckMapping => "check_mapping",
            }
            .into(),
            name: u.name.clone(),
            format: format.into(),
            bytes: u.bytes.len() as i64,
            sha256: hex::encode(Sha256::digest(&u.bytes)),
        });
    }
    if control_sets.is_empty() {
        return Err(CatalogError(
            "no catalog: send the SCF catalog file in a form field named `catalog` (YAML or JSON)".into(),
        ));
    }
    if control_sets.len() > 2 {
        return Err(CatalogError("at most two `catalog` files (one YAML, one JSON) may be combined".into()));
    }
    catalog.controls = merge_controls(control_sets, &mut catalog.warnings)?;
    let known: HashSet<&str> = catalog.controls.iter().map(|c| c.scf_id.as_str()).collect();
    catalog.crosswalk = resolve_pairs(raw_pairs, &known, &mut catalog.warnings);
    catalog
        .crosswalk
        .sort_by_cached_key(|p| (framework_key(&p.framework), requirement_key(&p.requirement), p.scf_id.clone()));
    Ok(catalog)
}

/// Combines the controls of one or two catalog files. With two (a YAML and a JSON one), the first file's
/// controls are the catalog and the other fills what they lack (titles, questions, weights) for the same
/// ids; controls only the second file has are added.
pub fn merge_controls(
    mut sets: Vec<(String, Vec<Control>)>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Control>, CatalogError> {
    let (first_name, first) = sets.remove(0);
    let mut by_id: BTreeMap<String, Control> = BTreeMap::new();
    for c in first {
        if by_id.contains_key(&c.scf_id) {
            return fail(&first_name, format!("control {} appears twice", c.scf_id));
        }
        by_id.insert(c.scf_id.clone(), c);
    }
    for (name, more) in sets {
        let mut seen = HashSet::new();
        let mut added = 0usize;
        for c in more {
            if !seen.insert(c.scf_id.clone()) {
                return fail(&name, format!("control {} appears twice", c.scf_id));
            }
            match by_id.get_mut(&c.scf_id) {
                Some(existing) => {
                    existing.title = existing.title.take().or(c.title);
                    existing.question = existing.question.take().or(c.question);
                    existing.weight = existing.weight.or(c.weight);
                    if existing.description.is_empty() {
                        existing.description = c.description;
                    }
                }
                None => {
                    added += 1;
                    by_id.insert(c.scf_id.clone(), c);
                }
            }
        }
        if added > 0 {
            warnings.push(format!("{name}: {added} control(s) not in {first_name} were added"));
        }
    }
    let mut controls: Vec<Control> = by_id.into_values().collect();
    controls.sort_by(|a, b| normalize::scf_order(&a.scf_id, &b.scf_id));
    Ok(controls)
}

/// A crosswalk pair before its direction is known (a STRM library holds both directions).
#[derive(Debug, Clone)]
struct RawPair {
    /// (framework, requirement) of each side; `None` framework: the side is an SCF control.
    left: (Option<String>, String),
    right: (Option<String>, String),
    relationship: Option<String>,
    source: String,
    /// Whether this pair is written framework → SCF (preferred for its relationship).
    forward: bool,
}

fn resolve_pairs(raw: Vec<RawPair>, known: &HashSet<&str>, warnings: &mut Vec<String>) -> Vec<CrosswalkPair> {
    let mut out: Vec<CrosswalkPair> = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut unknown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Framework → SCF pairs first, so that their relationship is the one kept.
    let (forward, backward): (Vec<RawPair>, Vec<RawPair>) = raw.into_iter().partition(|p| p.forward);
    for p in forward.into_iter().chain(backward) {
        // The SCF side: the one without a framework (JSON layouts), else the one whose id is a control of
        // the catalog (a STRM library names both sides' frameworks).
        let (fw_side, scf_side) = match (&p.left, &p.right) {
            (_, (None, r)) => (&p.left, r),
            ((None, l), _) => (&p.right, l),
            ((_, l), (_, r)) if is_known(r, known) && !is_known(l, known) => (&p.left, r),
            ((_, l), (_, r)) if is_known(l, known) && !is_known(r, known) => (&p.right, l),
            ((_, l), (_, r)) => {
                // Neither side is a control of this catalog: an SCF id of another release, most likely.
                if let Some(id) = [l, r].into_iter().find(|id| normalize::scf_id(id).is_some()) {
                    unknown.entry(p.source.clone()).or_default().insert(id.to_ascii_uppercase());
                }
                continue;
            }
        };
        if !is_known(scf_side, known) {
            unknown.entry(p.source.clone()).or_default().insert(scf_side.to_ascii_uppercase());
            continue;
        }
        let scf_side = scf_side.clone();
        let Some(framework) = fw_side.0.clone() else { continue };
        let scf_id = normalize::scf_id(&scf_side).unwrap_or(scf_side);
        let key = (framework_key(&framework), requirement_key(&fw_side.1), scf_id.clone());
        if index.contains_key(&key) {
            continue;
        }
        index.insert(key, out.len());
        out.push(CrosswalkPair {
            framework,
            requirement: fw_side.1.clone(),
            scf_id,
            relationship: p.relationship.clone(),
            source: p.source.clone(),
        });
    }
    for (source, ids) in unknown {
        let sample: Vec<&String> = ids.iter().take(5).collect();
        warnings.push(format!(
            "{source}: {} mapped SCF id(s) are not controls of this catalog and were skipped (e.g. {sample:?})",
            ids.len()
        ));
    }
    out
}

fn is_known(id: &str, known: &HashSet<&str>) -> bool {
    normalize::scf_id(id).is_some_and(|id| known.contains(id.as_str()))
}

// ---------------------------------------------------------------------------------------------------
// YAML catalog and crosswalks

#[derive(Deserialize)]
struct YamlLibrary {
    #[serde(default)]
    ref_id: Option<String>,
    #[serde(default)]
    objects: Option<YamlObjects>,
}

#[derive(Deserialize)]
struct YamlObjects {
    #[serde(default)]
    framework: Option<YamlFramework>,
    #[serde(default)]
    requirement_mapping_sets: Option<Vec<YamlMappingSet>>,
}

#[derive(Deserialize)]
struct YamlFramework {
    #[serde(default)]
    ref_id: Option<String>,
    #[serde(default)]
    requirement_nodes: Vec<YamlNode>,
}

#[derive(Deserialize)]
struct YamlNode {
    urn: String,
    #[serde(default)]
    ref_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    annotation: Option<String>,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    parent_urn: Option<String>,
}

#[derive(Deserialize)]
struct YamlMappingSet {
    #[serde(default)]
    requirement_mappings: Vec<YamlMapping>,
}

#[derive(Deserialize)]
struct YamlMapping {
    source_requirement_urn: String,
    target_requirement_urn: String,
    #[serde(default)]
    relationship: Option<String>,
}

fn yaml<T: for<'de> Deserialize<'de>>(file: &str, bytes: &[u8]) -> Result<T, CatalogError> {
    serde_saphyr::from_slice(bytes).or_else(|e| {
        let at = e.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default();
        // The first line of the message: the rest is a rendering of the surrounding text.
        let msg = e.to_string();
        let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("malformed YAML").trim().to_string();
        fail(file, format!("not a valid YAML library{at}: {}", clip(&first, 300)))
    })
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn parse_yaml_catalog(file: &str, bytes: &[u8]) -> Result<(Option<String>, Vec<Control>), CatalogError> {
    let lib: YamlLibrary = yaml(file, bytes)?;
    let Some(fw) = lib.objects.and_then(|o| o.framework) else {
        return fail(
            file,
            "not an SCF catalog: `objects.framework` is missing (is this a crosswalk? send it as `crosswalk`)",
        );
    };
    let release = fw.ref_id.or(lib.ref_id);
    let domains: HashMap<&str, &str> = fw
        .requirement_nodes
        .iter()
        .filter(|n| n.depth == Some(1))
        .filter_map(|n| n.name.as_deref().map(|name| (n.urn.as_str(), name)))
        .collect();
    let mut controls = Vec::new();
    for n in &fw.requirement_nodes {
        if n.depth == Some(1) {
            continue;
        }
        let Some(raw_id) = n.ref_id.as_deref() else { continue };
        let Some(scf_id) = normalize::scf_id(raw_id) else {
            return fail(
                file,
                format!("`{}` is not an SCF control id (expected e.g. ABC-01 or ABC-01.1)", clip(raw_id, 40)),
            );
        };
        let domain = n.parent_urn.as_deref().and_then(|p| domains.get(p)).copied();
        let Some(domain) = domain else {
            return fail(file, format!("control {scf_id} has no domain (its parent_urn names no depth-1 node)"));
        };
        controls.push(Control {
            scf_id,
            title: n.name.clone().filter(|s| !s.trim().is_empty()),
            description: n.description.clone().unwrap_or_default(),
            question: n.annotation.clone().filter(|s| !s.trim().is_empty()),
            domain: domain.to_string(),
            weight: None,
        });
    }
    if controls.is_empty() {
        return fail(file, "the catalog holds no controls (no requirement node below depth 1 with a ref_id)");
    }
    Ok((release, controls))
}

/// `urn:…:req_node:<framework>:<requirement>` → (framework, requirement).
fn split_urn(urn: &str) -> Option<(&str, &str)> {
    let mut parts = urn.rsplitn(3, ':');
    let req = parts.next()?;
    let fw = parts.next()?;
    (!req.is_empty() && !fw.is_empty()).then_some((fw, req))
}

fn parse_yaml_crosswalk(file: &str, bytes: &[u8]) -> Result<Vec<RawPair>, CatalogError> {
    let lib: YamlLibrary = yaml(file, bytes)?;
    let Some(sets) = lib.objects.and_then(|o| o.requirement_mapping_sets) else {
        return fail(
            file,
            "not a crosswalk: `objects.requirement_mapping_sets` is missing (is this the catalog? send it as `catalog`)",
        );
    };
    let mut out = Vec::new();
    for set in sets {
        for m in set.requirement_mappings {
            let (Some((sf, sr)), Some((tf, tr))) =
                (split_urn(&m.source_requirement_urn), split_urn(&m.target_requirement_urn))
            else {
                return fail(file, format!("`{}` is not a requirement URN", clip(&m.source_requirement_urn, 80)));
            };
            // Which side is SCF is decided against the catalog (`resolve_pairs`); a side whose id has
            // the shape of an SCF id is a candidate.
            let left_scf = normalize::scf_id(sr).is_some();
            let right_scf = normalize::scf_id(tr).is_some();
            out.push(RawPair {
                left: (Some(sf.to_string()), sr.to_string()),
                right: (Some(tf.to_string()), tr.to_string()),
                relationship: m.relationship,
                source: file.to_string(),
                forward: right_scf && !left_scf,
            });
        }
    }
    if out.is_empty() {
        return fail(file, "the crosswalk holds no requirement mappings");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// JSON catalog and framework index

#[derive(Deserialize)]
struct JsonCatalog {
    controls: Vec<JsonControl>,
}

#[derive(Deserialize)]
struct JsonControl {
    id: String,
    domain: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default, deserialize_with = "non_null_lists")]
    framework_mappings: Vec<(String, Vec<String>)>,
}

/// A map of framework → requirement list that keeps only the non-empty lists (most are `null`).
fn non_null_lists<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<String>)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, Vec<String>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of framework → list of requirement ids (or null)")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                if let Some(list) = map.next_value::<Option<Vec<String>>>()?
                    && !list.is_empty()
                {
                    out.push((k, list));
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

fn json_error(file: &str, e: serde_json::Error, what: &str) -> CatalogError {
    CatalogError(format!(
        "{file}: not {what} (line {}, column {}): {}",
        e.line(),
        e.column(),
        clip(&e.to_string(), 300)
    ))
}

fn parse_json_catalog(file: &str, bytes: &[u8]) -> Result<(Vec<Control>, Vec<RawPair>), CatalogError> {
    let cat: JsonCatalog = serde_json::from_slice(bytes)
        .map_err(|e| json_error(file, e, "an SCF JSON catalog ({\"controls\": [...]})"))?;
    if cat.controls.is_empty() {
        return fail(file, "the catalog holds no controls");
    }
    let mut controls = Vec::with_capacity(cat.controls.len());
    let mut pairs = Vec::new();
    for c in cat.controls {
        let Some(scf_id) = normalize::scf_id(&c.id) else {
            return fail(
                file,
                format!("`{}` is not an SCF control id (expected e.g. ABC-01 or ABC-01.1)", clip(&c.id, 40)),
            );
        };
        if c.domain.trim().is_empty() {
            return fail(file, format!("control {scf_id} has no domain"));
        }
        for (framework, reqs) in c.framework_mappings {
            for r in reqs {
                pairs.push(RawPair {
                    left: (Some(framework.clone()), r),
                    right: (None, scf_id.clone()),
                    relationship: None,
                    source: file.to_string(),
                    forward: true,
                });
            }
        }
        let weight = c.weight.filter(|w| w.is_finite() && (0.0..=100.0).contains(w)).map(|w| w.round() as i32);
        // In this layout `name` repeats the description; titles come from the YAML catalog.
        let description = c.description.or(c.name).unwrap_or_default();
        controls.push(Control { scf_id, title: None, description, question: None, domain: c.domain, weight });
    }
    Ok((controls, pairs))
}

fn parse_framework_index(file: &str, bytes: &[u8]) -> Result<Vec<RawPair>, CatalogError> {
    let index: BTreeMap<String, BTreeMap<String, Vec<String>>> = serde_json::from_slice(bytes).map_err(|e| {
        json_error(file, e, "a framework → SCF index ({\"framework\": {\"requirement\": [\"ABC-01\"]}})")
    })?;
    let mut out = Vec::new();
    for (framework, reqs) in index {
        for (req, ids) in reqs {
            for id in ids {
                if normalize::scf_id(&id).is_none() {
                    return fail(file, format!("{framework} {req}: `{}` is not an SCF control id", clip(&id, 40)));
                }
                out.push(RawPair {
                    left: (Some(framework.clone()), req.clone()),
                    right: (None, id),
                    relationship: None,
                    source: file.to_string(),
                    forward: true,
                });
            }
        }
    }
    if out.is_empty() {
        return fail(file, "the index holds no mappings");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Tools' check → requirement files

/// Prowler's compliance file, in its two spellings (`Framework`/`Requirements` and the newer lower case).
#[derive(Deserialize)]
struct CheckFile {
    #[serde(alias = "Framework")]
    framework: String,
    #[serde(default, alias = "Version")]
    version: Option<String>,
    #[serde(alias = "Requirements")]
    requirements: Vec<CheckFileRequirement>,
}

#[derive(Deserialize)]
struct CheckFileRequirement {
    #[serde(alias = "Id")]
    id: String,
    #[serde(default, alias = "Name")]
    name: Option<String>,
    #[serde(default, alias = "Checks")]
    checks: Checks,
}

/// A list of checks, or checks per provider.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Checks {
    #[default]
    None,
    List(Vec<String>),
    ByProvider(BTreeMap<String, Vec<String>>),
    #[allow(dead_code)]
    Other(IgnoredAny),
}

fn parse_check_mapping(file: &str, bytes: &[u8]) -> Result<Vec<CheckRequirement>, CatalogError> {
    let f: CheckFile = serde_json::from_slice(bytes).map_err(|e| {
        json_error(
            file,
            e,
            "a check → requirement file ({\"Framework\", \"Version\", \"Requirements\": [{\"Id\", \"Checks\"}]})",
        )
    })?;
    // The key the tool writes in its findings: `Framework-Version` (Prowler: `NIST-CSF-2.0`).
    let framework = match f.version.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => format!("{}-{v}", f.framework.trim()),
        None => f.framework.trim().to_string(),
    };
    let mut out = Vec::new();
    for r in f.requirements {
        let checks: Vec<String> = match r.checks {
            Checks::List(l) => l,
            Checks::ByProvider(m) => m.into_values().flatten().collect(),
            Checks::None | Checks::Other(_) => Vec::new(),
        };
        let mut checks: Vec<String> = checks.into_iter().filter(|c| !c.trim().is_empty()).collect();
        checks.sort();
        checks.dedup();
        // A name is kept when it looks like an id (it has digits and no blanks): Prowler's NIST CSF file
        // has ids like `oc_1` and the requirement (`GV.OC-1`) as its name.
        let name = r.name.filter(|n| n.len() <= 32 && !n.contains(' ') && n.bytes().any(|b| b.is_ascii_digit()));
        out.push(CheckRequirement { framework: framework.clone(), id: r.id, name, checks, source: file.to_string() });
    }
    if out.iter().all(|r| r.checks.is_empty()) {
        return fail(file, "no requirement of the file names a check");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixtures_dir;

    fn upload(kind: PartKind, rel: &str) -> Upload {
        let path = fixtures_dir().join(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Upload { kind, name: rel.rsplit('/').next().unwrap_or(rel).to_string(), bytes }
    }

    fn yaml_uploads() -> Vec<Upload> {
        let mut v = vec![upload(PartKind::Catalog, "scf/ciso-assistant/scf-2025.2.2.yaml")];
        for fw in ["nist-csf-2.0", "iso27001-2022", "cis-controls-v8", "pcidss-4_0"] {
            v.push(upload(PartKind::Crosswalk, &format!("scf/ciso-assistant/mapping-{fw}-and-scf-2025.2.2.yaml")));
        }
        v
    }

    #[test]
    fn the_yaml_catalog_and_its_crosswalks_parse() {
        let c = assemble(&yaml_uploads()).expect("assembles");
        assert!(c.controls.len() > 1000, "{}", c.controls.len());
        assert!(c.controls.iter().all(|x| !x.domain.is_empty() && x.title.is_some()));
        assert!(c.domains().len() > 20);
        assert!(c.release.as_deref().is_some_and(|r| r.starts_with("scf-")), "{:?}", c.release);
        let fws: Vec<String> = c.framework_summary().into_iter().map(|(n, _, _)| framework_key(&n)).collect();
        for fw in ["NIST-CSF-2.0", "ISO27001-2022", "CIS-Controls-8.1"] {
            assert!(fws.contains(&framework_key(fw)), "{fw} in {fws:?}");
        }
        // Each STRM library holds both directions; a pair is kept once.
        let keys: HashSet<_> = c
            .crosswalk
            .iter()
            .map(|p| (framework_key(&p.framework), requirement_key(&p.requirement), p.scf_id.clone()))
            .collect();
        assert_eq!(keys.len(), c.crosswalk.len());
        assert!(c.crosswalk.iter().all(|p| normalize::is_scf_id(&p.scf_id)));
        assert!(c.crosswalk.iter().all(|p| p.relationship.is_some()));
        assert_eq!(c.files.len(), 5);
    }

    #[test]
    fn the_json_catalog_and_its_index_parse() {
        let c = assemble(&[
            upload(PartKind::Catalog, "scf/security-controls-mcp/scf-controls.json"),
            upload(PartKind::Crosswalk, "scf/security-controls-mcp/framework-to-scf.json"),
        ])
        .expect("assembles");
        assert_eq!(c.controls.len(), 1451);
        assert!(c.controls.iter().all(|x| x.weight.is_some() && !x.description.is_empty()));
        let nist = framework_key("NIST-CSF-2.0");
        assert!(c.crosswalk.iter().any(|p| framework_key(&p.framework) == nist));
        assert!(c.framework_summary().len() > 200);
    }

    #[test]
    fn both_layouts_combine_titles_from_yaml() {
        let mut ups = vec![upload(PartKind::Catalog, "scf/security-controls-mcp/scf-controls.json")];
        ups.extend(yaml_uploads());
        let c = assemble(&ups).expect("assembles");
        assert_eq!(c.controls.len(), 1451);
        let titled = c.controls.iter().filter(|x| x.title.is_some()).count();
        assert!(titled > 1000, "{titled}");
    }

    #[test]
    fn prowler_check_files_parse_in_both_spellings() {
        for f in ["nist_csf_2.0_aws", "iso27001_2022_aws", "cis_5.0_aws", "cis_controls_8.1"] {
            let u = upload(PartKind::CheckMapping, &format!("prowler/compliance/{f}.json"));
            let reqs = parse_check_mapping(&u.name, &u.bytes).expect("parses");
            assert!(reqs.iter().any(|r| !r.checks.is_empty()), "{f}");
        }
        let u = upload(PartKind::CheckMapping, "prowler/compliance/nist_csf_2.0_aws.json");
        let reqs = parse_check_mapping(&u.name, &u.bytes).expect("parses");
        assert_eq!(reqs[0].framework, "NIST-CSF-2.0");
        assert!(reqs.iter().all(|r| r.name.as_deref().is_some_and(|n| n.contains('.'))), "NIST names are ids");
        let u = upload(PartKind::CheckMapping, "prowler/compliance/cis_controls_8.1.json");
        let reqs = parse_check_mapping(&u.name, &u.bytes).expect("parses");
        assert_eq!(framework_key(&reqs[0].framework), framework_key("cis-controls-v8"));
    }

    #[test]
    fn malformed_input_is_refused_naming_the_file_and_the_place() {
        let bad = |kind, name: &str, text: &str| {
            assemble(&[Upload { kind, name: name.into(), bytes: text.as_bytes().to_vec() }]).expect_err(name).0
        };
        let e = bad(PartKind::Catalog, "broken.yaml", "objects:\n  framework: [unclosed\n");
        assert!(e.starts_with("broken.yaml: not a valid YAML library"), "{e}");
        assert!(e.contains("line"), "{e}");
        let e = bad(PartKind::Catalog, "cut.json", "{\"controls\": [{\"id\": \"XYZ-01\", \"dom");
        assert!(e.contains("cut.json") && e.contains("line 1"), "{e}");
        let e = bad(PartKind::Catalog, "ids.json", r#"{"controls":[{"id":"not an id","domain":"D"}]}"#);
        assert!(e.contains("not an SCF control id"), "{e}");
        let e = bad(PartKind::Catalog, "empty.json", "  ");
        assert!(e.contains("empty"), "{e}");
        let e = bad(PartKind::Catalog, "x.yaml", "objects:\n  requirement_mapping_sets: []\n");
        assert!(e.contains("objects.framework"), "{e}");
        let e = bad(PartKind::Crosswalk, "only.yaml", "objects: {}\n");
        assert!(e.contains("no catalog") || e.contains("requirement_mapping_sets"), "{e}");
        let twice = r#"{"controls":[{"id":"ABC-01","domain":"D"},{"id":"ABC-01","domain":"D"}]}"#;
        assert!(bad(PartKind::Catalog, "twice.json", twice).contains("twice"));
    }
}
