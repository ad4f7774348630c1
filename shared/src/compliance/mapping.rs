//! From a finding to the SCF controls it is evidence for, and why.
//!
//! Three paths, tried in order, each recorded with the mapping so that the API can explain it:
//! 1. **crosswalk**: the finding's framework requirements — its own compliance metadata (Prowler's
//!    `unmapped.compliance`) and, for a tool's check, the requirements the tool's check → requirement
//!    files list for it — joined with the catalog's crosswalks (framework names and requirement ids
//!    compared in their normalised forms, `crate::compliance::normalize`);
//! 2. **keyword**: the finding's title, rule and service scored against the controls' terms, which were
//!    computed from the catalog's text when it was imported;
//! 3. **domain**: a weak keyword match names the domain instead, and the finding is attached to the
//!    domain's first control.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::CheckRequirement;
use super::keywords::{KeywordMatch, Matcher, Term};
use super::normalize::{self, framework_key, requirement_key};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingPath {
    Crosswalk,
    Keyword,
    Domain,
}

impl MappingPath {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingPath::Crosswalk => "crosswalk",
            MappingPath::Keyword => "keyword",
            MappingPath::Domain => "domain",
        }
    }
}

/// One control a finding maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Index into the mapper's controls.
    pub control: usize,
    pub path: MappingPath,
    /// How: the requirement chain, or the shared terms.
    pub explanation: String,
}

/// A control as the mapper needs it.
#[derive(Debug, Clone)]
pub struct MapperControl {
    pub scf_id: String,
    pub domain: String,
    pub terms: Vec<Term>,
    /// (framework, requirement, relationship) as the catalog writes them.
    pub crosswalk: Vec<(String, String, Option<String>)>,
}

/// What the mapper reads of a finding.
#[derive(Debug, Clone)]
pub struct FindingText<'a> {
    pub tool: &'a str,
    pub rule_id: &'a str,
    pub title: &'a str,
    pub service: Option<&'a str>,
    pub compliance: &'a BTreeMap<String, Vec<String>>,
}

/// A requirement of a tool's check file: the framework as the tool writes it, the id, the file.
struct CheckRef {
    framework: String,
    id: String,
    source: String,
}

struct Target {
    control: usize,
    framework: String,
    requirement: String,
    relationship: Option<String>,
}

/// The catalog, indexed for mapping findings. Built once per sync.
pub struct Mapper {
    pub controls: Vec<MapperControl>,
    crosswalk: HashMap<(String, String), Vec<Target>>,
    /// Tool check → the requirements the tool's files list for it.
    checks: HashMap<String, Vec<CheckRef>>,
    /// (framework key, requirement key of the tool's id) → the requirement's name (Prowler NIST ids).
    names: HashMap<(String, String), String>,
    matcher: Matcher,
    memo: HashMap<u64, Arc<Vec<Mapping>>>,
}

/// Findings that map alike are mapped once; the memo is cleared when it grows past this.
const MEMO_LIMIT: usize = 50_000;

impl Mapper {
    pub fn new(controls: Vec<MapperControl>, checks: &[CheckRequirement]) -> Self {
        let mut crosswalk: HashMap<(String, String), Vec<Target>> = HashMap::new();
        for (i, c) in controls.iter().enumerate() {
            for (fw, req, rel) in &c.crosswalk {
                crosswalk.entry((framework_key(fw), requirement_key(req))).or_default().push(Target {
                    control: i,
                    framework: fw.clone(),
                    requirement: req.clone(),
                    relationship: rel.clone(),
                });
            }
        }
        let mut by_check: HashMap<String, Vec<CheckRef>> = HashMap::new();
        let mut names = HashMap::new();
        for r in checks {
            if let Some(name) = &r.name {
                names.insert((framework_key(&r.framework), requirement_key(&r.id)), name.clone());
            }
            for c in &r.checks {
                by_check.entry(c.clone()).or_default().push(CheckRef {
                    framework: r.framework.clone(),
                    id: r.id.clone(),
                    source: r.source.clone(),
                });
            }
        }
        let matcher = Matcher::new(&controls.iter().map(|c| (c.domain.clone(), c.terms.clone())).collect::<Vec<_>>());
        Self { controls, crosswalk, checks: by_check, names, matcher, memo: HashMap::new() }
    }

    /// The controls a finding maps to (each once, by the first path that reached it).
    pub fn map(&mut self, f: &FindingText<'_>) -> Arc<Vec<Mapping>> {
        let key = memo_key(f);
        if let Some(m) = self.memo.get(&key) {
            return m.clone();
        }
        let mapped = Arc::new(self.map_uncached(f));
        if self.memo.len() >= MEMO_LIMIT {
            self.memo.clear();
        }
        self.memo.insert(key, mapped.clone());
        mapped
    }

    fn map_uncached(&self, f: &FindingText<'_>) -> Vec<Mapping> {
        let mut out: Vec<Mapping> = Vec::new();
        let mut seen: HashSet<usize> = HashSet::new();
        // (framework, requirement, where the requirement came from)
        let mut reqs: Vec<(String, String, String)> = Vec::new();
        for (fw, ids) in f.compliance {
            for id in ids {
                reqs.push((fw.clone(), id.clone(), "the finding's compliance metadata".into()));
            }
        }
        if let Some(list) = self.checks.get(f.rule_id) {
            for c in list {
                reqs.push((c.framework.clone(), c.id.clone(), format!("{} (check {})", c.source, f.rule_id)));
            }
        }
        let mut tried: HashSet<(String, String)> = HashSet::new();
        for (fw, id, origin) in &reqs {
            let fk = framework_key(fw);
            // The id itself, then its name when the tool's file gives one (Prowler's NIST `oc_1` is
            // `GV.OC-1`).
            let mut spellings = vec![(fk.clone(), id.clone())];
            if let Some(name) = self.names.get(&(fk.clone(), requirement_key(id))) {
                spellings.push((fk.clone(), name.clone()));
            }
            // Then what the requirement goes by in another framework (ISO 27001 Annex A = ISO 27002).
            if let Some(alias) = normalize::requirement_alias(&fk, id) {
                spellings.push(alias);
            }
            let mut hit = false;
            for (sfk, spelling) in spellings {
                if hit && sfk != fk {
                    break;
                }
                let rk = requirement_key(&spelling);
                if !tried.insert((sfk.clone(), rk.clone())) {
                    continue;
                }
                let Some(targets) = self.crosswalk.get(&(sfk, rk)) else { continue };
                hit = true;
                for t in targets {
                    if !seen.insert(t.control) {
                        continue;
                    }
                    let via = if spelling == *id { String::new() } else { format!(" (as {spelling})") };
                    let rel = t.relationship.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
                    out.push(Mapping {
                        control: t.control,
                        path: MappingPath::Crosswalk,
                        explanation: format!(
                            "{fw} {id}{via} from {origin} → crosswalk {} {}{rel} → {}",
                            t.framework, t.requirement, self.controls[t.control].scf_id
                        ),
                    });
                }
            }
        }
        if !out.is_empty() {
            return out;
        }
        let text = format!("{} {} {}", f.title, f.rule_id.replace(['_', '.', '-'], " "), f.service.unwrap_or(""));
        match self.matcher.correlate(&text) {
            KeywordMatch::Controls(list) => {
                for (i, score, terms) in list {
                    out.push(Mapping {
                        control: i,
                        path: MappingPath::Keyword,
                        explanation: format!(
                            "no crosswalked requirement; the finding shares the terms {terms:?} with {} (score {score})",
                            self.controls[i].scf_id
                        ),
                    });
                }
            }
            KeywordMatch::Domain { domain, anchor, score, terms } => out.push(Mapping {
                control: anchor,
                path: MappingPath::Domain,
                explanation: format!(
                    "no control matched strongly; the terms {terms:?} point at the domain {domain} (score {score}), attached to its first control {}",
                    self.controls[anchor].scf_id
                ),
            }),
            KeywordMatch::None => {}
        }
        out
    }
}

fn memo_key(f: &FindingText<'_>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.tool.hash(&mut h);
    f.rule_id.hash(&mut h);
    f.title.hash(&mut h);
    f.service.hash(&mut h);
    f.compliance.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::keywords::control_terms;

    // Invented controls and framework ids (not catalog content).
    fn mapper() -> Mapper {
        let texts = vec![
            ("Access reviews".to_string(), "Accounts are reviewed periodically by owners.".to_string()),
            ("Volume encryption".to_string(), "Storage volumes are encrypted at rest.".to_string()),
        ];
        let terms = control_terms(&texts);
        let controls = vec![
            MapperControl {
                scf_id: "ABC-01".into(),
                domain: "Alpha".into(),
                terms: terms[0].clone(),
                crosswalk: vec![("nist_csf_2.0".into(), "GV.RM-01".into(), None)],
            },
            MapperControl {
                scf_id: "XYZ-02".into(),
                domain: "Omega".into(),
                terms: terms[1].clone(),
                crosswalk: vec![("iso27001-2022".into(), "a.8.3".into(), Some("intersect".into()))],
            },
        ];
        let checks = vec![CheckRequirement {
            framework: "ISO27001-2022".into(),
            id: "A.8.3".into(),
            name: None,
            checks: vec!["some_check".into()],
            source: "iso.json".into(),
        }];
        Mapper::new(controls, &checks)
    }

    #[test]
    fn a_finding_requirement_meets_the_crosswalk_through_normalised_ids() {
        let mut m = mapper();
        let compliance = BTreeMap::from([("NIST-CSF-2.0".to_string(), vec!["GV.RM-1".to_string()])]);
        let f = FindingText { tool: "prowler", rule_id: "other", title: "t", service: None, compliance: &compliance };
        let got = m.map(&f);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].control, 0);
        assert_eq!(got[0].path, MappingPath::Crosswalk);
        assert!(got[0].explanation.contains("GV.RM-1") && got[0].explanation.contains("GV.RM-01"), "{got:?}");
    }

    #[test]
    fn a_check_is_joined_through_the_tools_check_file() {
        let mut m = mapper();
        let none = BTreeMap::new();
        let f = FindingText { tool: "prowler", rule_id: "some_check", title: "t", service: None, compliance: &none };
        let got = m.map(&f);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].control, 1);
        assert!(got[0].explanation.contains("iso.json"), "{got:?}");
    }

    #[test]
    fn iso_27001_annex_a_meets_a_catalog_that_maps_27002_only() {
        let controls = vec![MapperControl {
            scf_id: "ABC-03".into(),
            domain: "Alpha".into(),
            terms: Vec::new(),
            crosswalk: vec![("iso_27002_2022".into(), "8.3".into(), None)],
        }];
        let mut m = Mapper::new(controls, &[]);
        let compliance = BTreeMap::from([("ISO27001-2022".to_string(), vec!["A.8.3".to_string()])]);
        let f = FindingText { tool: "prowler", rule_id: "c", title: "t", service: None, compliance: &compliance };
        let got = m.map(&f);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].explanation.contains("iso_27002_2022 8.3"), "{got:?}");
    }

    #[test]
    fn without_a_requirement_the_keywords_decide() {
        let mut m = mapper();
        let none = BTreeMap::new();
        let f = FindingText {
            tool: "trivy",
            rule_id: "AVD-1",
            title: "Storage volume is not encrypted at rest",
            service: None,
            compliance: &none,
        };
        let got = m.map(&f);
        assert_eq!(got.first().map(|g| (g.control, g.path)), Some((1, MappingPath::Keyword)), "{got:?}");
        let f = FindingText { tool: "nmap", rule_id: "x", title: "zzz qqq", service: None, compliance: &none };
        assert!(m.map(&f).is_empty());
    }
}
