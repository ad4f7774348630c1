//! Keyword correlation, computed from the catalog's own text at run time: each control's distinctive
//! terms (stems weighted by how rare they are across the catalog), and a matcher that scores a finding's
//! words against them, falling back to the domain whose controls share the most terms.
//!
//! No word list of any catalog is written here: the only list is a handful of English function words,
//! and those would be discarded by their frequency anyway.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// Terms kept per control.
pub const TERMS_PER_CONTROL: usize = 16;
/// A term found in more than this share of the controls says nothing about any of them.
const MAX_DOCUMENT_SHARE: f64 = 0.04;
/// A control matches when the finding shares at least this many distinct terms with it and their
/// weights add up to at least [`MIN_CONTROL_SCORE`].
const MIN_SHARED_TERMS: usize = 2;
const MIN_CONTROL_SCORE: f64 = 7.0;
/// Controls within this share of the best score are kept too (at most [`MAX_MATCHES`]).
const NEAR_BEST: f64 = 0.85;
const MAX_MATCHES: usize = 3;
/// The domain fallback needs at least this score.
const MIN_DOMAIN_SCORE: f64 = 3.0;

const FUNCTION_WORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "are", "was", "were", "has", "have", "not", "all", "any",
    "its", "into", "onto", "their", "there", "which", "who", "whom", "when", "where", "what", "been", "being", "than",
    "then", "such", "other", "each", "per", "via", "does", "should", "must", "may", "can", "will", "shall", "is", "be",
    "by", "of", "to", "in", "on", "or", "an", "as", "at", "it", "no", "if",
];

/// The stem of a word: lower case, a plural or verb ending dropped, a doubled final consonant undone,
/// then at most five characters ("stem-style prefix matching": `encrypted`, `encryption` → `encry`).
pub fn stem(word: &str) -> Option<String> {
    let w = word.to_ascii_lowercase();
    if w.len() < 3 || w.bytes().all(|b| b.is_ascii_digit()) || FUNCTION_WORDS.contains(&w.as_str()) {
        return None;
    }
    let mut s = w.as_str();
    for suffix in ["ings", "ing", "ions", "ion", "ies", "ied", "es", "ed", "e", "s"] {
        if let Some(rest) = s.strip_suffix(suffix)
            && rest.len() >= 3
            && !(suffix == "s" && rest.ends_with('s'))
        {
            s = rest;
            break;
        }
    }
    let b = s.as_bytes();
    if b.len() >= 4 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiou".contains(&b[b.len() - 1]) {
        s = &s[..s.len() - 1];
    }
    Some(s.chars().take(5).collect())
}

/// The stems of a text, in order, with repeats.
pub fn stems(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).filter_map(stem)
}

/// A control's distinctive terms, with their weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub stem: String,
    pub weight: f64,
}

/// Computes every control's terms from its title, description and question: term frequency (the title
/// counted three times) times inverse document frequency over the catalog; the most common terms of the
/// catalog are dropped. `texts` is (title, body) per control; the result is in the same order.
pub fn control_terms(texts: &[(String, String)]) -> Vec<Vec<Term>> {
    let n = texts.len().max(1) as f64;
    let per_control: Vec<HashMap<String, f64>> = texts
        .iter()
        .map(|(title, body)| {
            let mut tf: HashMap<String, f64> = HashMap::new();
            for s in stems(title) {
                *tf.entry(s).or_default() += 3.0;
            }
            for s in stems(body) {
                *tf.entry(s).or_default() += 1.0;
            }
            tf
        })
        .collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for tf in &per_control {
        for s in tf.keys() {
            *df.entry(s.as_str()).or_default() += 1;
        }
    }
    per_control
        .iter()
        .map(|tf| {
            let mut terms: Vec<Term> = tf
                .iter()
                .filter_map(|(s, &f)| {
                    let d = *df.get(s.as_str()).unwrap_or(&1) as f64;
                    if d / n > MAX_DOCUMENT_SHARE && d > 3.0 {
                        return None;
                    }
                    let idf = (n / d).ln() + 1.0;
                    Some(Term { stem: s.clone(), weight: (f.sqrt() * idf * 100.0).round() / 100.0 })
                })
                .collect();
            terms.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.stem.cmp(&b.stem)));
            terms.truncate(TERMS_PER_CONTROL);
            terms
        })
        .collect()
}

/// How a finding's words matched.
#[derive(Debug, Clone, PartialEq)]
pub enum KeywordMatch {
    /// Controls (index into the matcher's control list) with their scores and the shared stems.
    Controls(Vec<(usize, f64, Vec<String>)>),
    /// No control matched well enough; the domain (its anchor control's index) with the shared stems.
    Domain {
        domain: String,
        anchor: usize,
        score: f64,
        terms: Vec<String>,
    },
    None,
}

/// An inverted index over the controls' terms.
pub struct Matcher {
    postings: HashMap<String, Vec<(usize, f64)>>,
    domains: Vec<String>,
    /// Per domain, the control the domain fallback attaches to (its first control in id order).
    anchors: BTreeMap<String, usize>,
}

impl Matcher {
    /// `controls`: (domain, terms) per control, in id order (the first of a domain is its anchor).
    pub fn new(controls: &[(String, Vec<Term>)]) -> Self {
        let mut postings: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
        let mut anchors = BTreeMap::new();
        for (i, (domain, terms)) in controls.iter().enumerate() {
            anchors.entry(domain.clone()).or_insert(i);
            for t in terms {
                postings.entry(t.stem.clone()).or_default().push((i, t.weight));
            }
        }
        Self { postings, domains: controls.iter().map(|(d, _)| d.clone()).collect(), anchors }
    }

    /// Scores a finding's text (title, rule id, service...) against the controls.
    pub fn correlate(&self, text: &str) -> KeywordMatch {
        let words: HashSet<String> = stems(text).collect();
        let mut scores: HashMap<usize, (f64, Vec<String>)> = HashMap::new();
        for w in &words {
            if let Some(list) = self.postings.get(w) {
                for &(i, weight) in list {
                    let e = scores.entry(i).or_default();
                    e.0 += weight;
                    e.1.push(w.clone());
                }
            }
        }
        if scores.is_empty() {
            return KeywordMatch::None;
        }
        let mut ranked: Vec<(usize, f64, Vec<String>)> = scores.into_iter().map(|(i, (s, t))| (i, s, t)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let best = ranked[0].1;
        let strong: Vec<(usize, f64, Vec<String>)> = ranked
            .iter()
            .filter(|(_, s, t)| t.len() >= MIN_SHARED_TERMS && *s >= MIN_CONTROL_SCORE && *s >= best * NEAR_BEST)
            .take(MAX_MATCHES)
            .cloned()
            .map(|(i, s, mut t)| {
                t.sort();
                (i, (s * 100.0).round() / 100.0, t)
            })
            .collect();
        if !strong.is_empty() {
            return KeywordMatch::Controls(strong);
        }
        // The domain fallback: the domain whose controls share the most weight with the finding.
        let mut by_domain: BTreeMap<&str, (f64, HashSet<String>)> = BTreeMap::new();
        for (i, s, t) in &ranked {
            let e = by_domain.entry(self.domains[*i].as_str()).or_default();
            e.0 += s;
            e.1.extend(t.iter().cloned());
        }
        let Some((domain, (score, terms))) =
            by_domain.into_iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0).then_with(|| b.0.cmp(a.0)))
        else {
            return KeywordMatch::None;
        };
        if score < MIN_DOMAIN_SCORE {
            return KeywordMatch::None;
        }
        let Some(&anchor) = self.anchors.get(domain) else { return KeywordMatch::None };
        let mut terms: Vec<String> = terms.into_iter().collect();
        terms.sort();
        KeywordMatch::Domain { domain: domain.to_string(), anchor, score: (score * 100.0).round() / 100.0, terms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_meet_across_word_forms() {
        assert_eq!(stem("Encrypted"), stem("encryption"));
        assert_eq!(stem("encrypt"), stem("encryption"));
        assert_eq!(stem("logging"), stem("log"));
        assert_eq!(stem("passwords"), stem("password"));
        assert_eq!(stem("policies"), stem("policy"));
        assert_eq!(stem("access").as_deref(), Some("acces"));
        assert_eq!(stem("the"), None);
        assert_eq!(stem("42"), None);
    }

    // Invented texts (not catalog content): the matcher's behaviour on a tiny catalog.
    fn tiny() -> Vec<(String, Vec<Term>)> {
        let texts = vec![
            ("Disk encryption".to_string(), "Storage volumes are encrypted at rest with managed keys.".to_string()),
            ("Key rotation".to_string(), "Cryptographic keys are rotated on a schedule.".to_string()),
            ("Audit logging".to_string(), "Audit logs are collected and retained.".to_string()),
            ("Badge readers".to_string(), "Doors are opened with badges.".to_string()),
        ];
        let domains = ["Crypto", "Crypto", "Monitoring", "Physical"];
        let terms = control_terms(&texts);
        domains.iter().map(|d| d.to_string()).zip(terms).collect()
    }

    #[test]
    fn a_finding_matches_the_control_sharing_its_distinctive_words() {
        let controls = tiny();
        let m = Matcher::new(&controls);
        match m.correlate("EBS volume encryption at rest is not enabled (ec2_ebs_volume_encryption)") {
            KeywordMatch::Controls(c) => {
                assert_eq!(c[0].0, 0, "{c:?}");
                assert!(c[0].2.contains(&"encry".to_string()), "{c:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.correlate("nothing in common here"), KeywordMatch::None);
    }

    #[test]
    fn a_weak_match_falls_back_to_the_domain_anchor() {
        let controls = tiny();
        let m = Matcher::new(&controls);
        match m.correlate("cloudtrail audit disabled") {
            KeywordMatch::Domain { domain, anchor, terms, .. } => {
                assert_eq!(domain, "Monitoring");
                assert_eq!(anchor, 2);
                assert_eq!(terms, vec!["audit".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }
}
