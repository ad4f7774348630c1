//! Spellings of frameworks and requirement ids, brought to one form so that the three sources that name
//! them (a scanner's compliance metadata, the catalog's crosswalks, the tools' check → requirement files)
//! can be joined.
//!
//! The join is derived from the data: a framework name is compared by its letters and digits alone
//! (`NIST-CSF-2.0`, `nist_csf_2.0` and `nist-csf-2.0` are one framework), and a requirement id by its
//! segments with the leading zeros of numbers dropped (Prowler's `GV.RM-1` is the catalog's `GV.RM-01`).
//! Only what the data cannot say is a table: [`FRAMEWORK_ALIASES`], facts about framework names.

/// Framework names that differ in more than punctuation but name the same requirement set, as
/// (compact spelling, compact canonical spelling). Facts about the frameworks, not catalog content.
pub const FRAMEWORK_ALIASES: &[(&str, &str)] = &[
    // CIS Critical Security Controls v8.1 keeps v8's safeguard numbers; catalogs and crosswalks call it
    // `cis_csc_8.1` or `cis-controls-v8`, Prowler `CIS-Controls-8.1` (older builds `CIS-8.1`).
    ("ciscsc81", "ciscontrolsv8"),
    ("ciscontrols81", "ciscontrolsv8"),
    ("ciscontrolsv81", "ciscontrolsv8"),
    ("cis81", "ciscontrolsv8"),
    ("ciscsc8", "ciscontrolsv8"),
    ("ciscontrols8", "ciscontrolsv8"),
    // PCI DSS 4.0 as the crosswalk files spell it (`pcidss-4_0`) and as people do.
    ("pcidssv40", "pcidss40"),
];

/// Requirements one framework lists under another's numbers, as (framework key, requirement prefix,
/// framework key): ISO/IEC 27001:2022 Annex A lists the controls of ISO/IEC 27002:2022 by their numbers
/// (`A.8.3` is 27002's `8.3`), and some catalogs map only 27002's. Tried when the id itself has no
/// crosswalk.
pub const REQUIREMENT_ALIASES: &[(&str, &str, &str)] = &[("iso270012022", "A.", "iso270022022")];

/// The other (framework key, requirement) a requirement goes by, per [`REQUIREMENT_ALIASES`].
pub fn requirement_alias(framework_key: &str, requirement: &str) -> Option<(String, String)> {
    let upper = requirement.trim().to_ascii_uppercase();
    REQUIREMENT_ALIASES.iter().find_map(|(fk, prefix, to)| {
        (*fk == framework_key)
            .then(|| upper.strip_prefix(prefix).map(|rest| (to.to_string(), rest.to_string())))
            .flatten()
    })
}

/// The comparison form of a framework name: its ASCII letters and digits, lower case, then aliased.
pub fn framework_key(name: &str) -> String {
    let compact: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    match FRAMEWORK_ALIASES.iter().find(|(from, _)| *from == compact) {
        Some((_, to)) => (*to).to_string(),
        None => compact,
    }
}

/// The comparison form of a requirement id: upper case, surrounding blanks dropped, and every run of
/// digits without its leading zeros (`GV.RM-01` and `gv.rm-1` are `GV.RM-1`; `1.10` stays `1.10`).
pub fn requirement_key(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            let trimmed = digits.trim_start_matches('0');
            out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
            digits.clear();
        }
    };
    for c in id.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.extend(c.to_uppercase());
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Whether a string has the shape of an SCF control id: 2–5 capital letters, `-`, two digits, then
/// optional `.n` enhancements (`ABC-06`, `XYZ-01.1`). A format check, not a list of controls.
pub fn is_scf_id(id: &str) -> bool {
    let Some((domain, rest)) = id.split_once('-') else { return false };
    if !(2..=5).contains(&domain.len()) || !domain.bytes().all(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let mut parts = rest.split('.');
    let Some(base) = parts.next() else { return false };
    if base.len() != 2 || !base.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An SCF id as the catalog writes it, from any case (`abc-06` → `ABC-06`).
pub fn scf_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_ascii_uppercase();
    is_scf_id(&id).then_some(id)
}

/// The domain code of an SCF id (`ABC-06.1` → `ABC`).
pub fn domain_code(scf_id: &str) -> &str {
    scf_id.split('-').next().unwrap_or(scf_id)
}

/// Orders SCF ids as people read them: `ABC-06` before `ABC-06.1` before `ABC-10`.
pub fn scf_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(id: &str) -> (&str, Vec<u32>) {
        let (d, rest) = id.split_once('-').unwrap_or((id, ""));
        (d, rest.split('.').map(|p| p.parse().unwrap_or(u32::MAX)).collect())
    }
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prowler_and_catalog_spellings_of_one_requirement_meet() {
        assert_eq!(requirement_key("GV.RM-1"), requirement_key("GV.RM-01"));
        assert_eq!(requirement_key("gv.rm-01"), "GV.RM-1");
        assert_eq!(requirement_key(" A.8.3 "), requirement_key("a.8.3"));
        assert_ne!(requirement_key("1.1"), requirement_key("1.10"), "a trailing zero is significant");
        assert_eq!(requirement_key("PR.AA-00"), "PR.AA-0");
        assert_eq!(requirement_key("10.2(a)"), "10.2(A)");
    }

    #[test]
    fn framework_names_are_compared_by_letters_and_digits() {
        let nist = framework_key("NIST-CSF-2.0");
        assert_eq!(nist, framework_key("nist_csf_2.0"));
        assert_eq!(nist, framework_key("nist-csf-2.0"));
        assert_eq!(framework_key("ISO27001-2022"), framework_key("iso_27001_2022"));
        assert_eq!(framework_key("iso27001-2022"), framework_key("ISO27001-2022"));
        assert_eq!(framework_key("CIS-Controls-8.1"), framework_key("cis-controls-v8"));
        assert_eq!(framework_key("cis_csc_8.1"), framework_key("cis-controls-v8"));
        assert_eq!(framework_key("pcidss-4_0"), "pcidss40");
        // A CIS benchmark (Prowler's `CIS-5.0` is the AWS Foundations Benchmark) is not the Controls.
        assert_ne!(framework_key("CIS-5.0"), framework_key("cis-controls-v8"));
        assert_ne!(framework_key("cis_csc_8.1_ig1"), framework_key("cis_csc_8.1"));
    }

    #[test]
    fn iso_27001_annex_a_goes_by_27002_numbers() {
        let fk = framework_key("ISO27001-2022");
        assert_eq!(requirement_alias(&fk, "A.8.3"), Some((framework_key("iso_27002_2022"), "8.3".into())));
        assert_eq!(requirement_alias(&fk, "5.1"), None, "a clause is not an Annex A control");
        assert_eq!(requirement_alias(&framework_key("NIST-CSF-2.0"), "A.1"), None);
    }

    #[test]
    fn scf_ids_are_recognised_by_shape() {
        for ok in ["ABC-06", "XYZ-01.1", "QRS-10.12", "LMN-04.1.2"] {
            assert!(is_scf_id(ok), "{ok}");
        }
        for bad in ["", "ABC", "ABC-6", "abc-06", "I-06", "ABC-06.", "ABC-06.x", "GV.RM-01", "TOOLONG-01"] {
            assert!(!is_scf_id(bad), "{bad}");
        }
        assert_eq!(scf_id(" abc-06.1 ").as_deref(), Some("ABC-06.1"));
        assert_eq!(domain_code("ABC-06.1"), "ABC");
    }

    #[test]
    fn scf_ids_sort_as_people_read_them() {
        let mut ids = vec!["ABC-10", "ABC-06.1", "XYZ-01", "ABC-06", "ABC-06.10", "ABC-06.2"];
        ids.sort_by(|a, b| scf_order(a, b));
        assert_eq!(ids, vec!["ABC-06", "ABC-06.1", "ABC-06.2", "ABC-06.10", "ABC-10", "XYZ-01"]);
    }
}
