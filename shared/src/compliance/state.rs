//! A team's control states and the scores they add up to: pure functions, tested on their own.
//!
//! A finding is evidence for the controls it maps to. What it says about a control depends on where it
//! is in its lifecycle:
//!
//! | finding | evidence |
//! |---|---|
//! | `open`, `reopened` | failing |
//! | `passed`, or `resolved` by a passing check | passing |
//! | `manual` (the tool cannot decide) | undecided |
//! | `resolved` without a passing check (no longer reported, or by a person), `suppressed` | unverified |
//!
//! A control's derived state: any failing evidence → `not_implemented` (or `partial` with passing
//! evidence too); only passing evidence → `implemented`; passing and unverified evidence → `partial`
//! (a check that disappeared without passing proves nothing); no passing or failing evidence →
//! `not_assessed`. A person's override wins over the derived state and is never changed by a sync.
//!
//! Scores: implemented 1.0, partial 0.5, not implemented or not assessed *with evidence* 0.25, anything
//! else 0; not applicable controls leave the denominator. Findings only change through scans that
//! completed (a failed SubJob stores nothing and resolves nothing; a report that examined nothing
//! resolves nothing), and a failing check that merely disappears becomes unverified, not passing: so a
//! failed, empty or incomplete scan can lower a score but never raise it (the tests check this for every
//! evidence mix).

use serde::{Deserialize, Serialize};

use crate::domain::finding::{FindingStatus, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ControlState {
    Implemented,
    Partial,
    NotImplemented,
    NotAssessed,
    NotApplicable,
}

impl ControlState {
    pub const ALL: [ControlState; 5] = [
        ControlState::Implemented,
        ControlState::Partial,
        ControlState::NotImplemented,
        ControlState::NotAssessed,
        ControlState::NotApplicable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Implemented => "implemented",
            ControlState::Partial => "partial",
            ControlState::NotImplemented => "not_implemented",
            ControlState::NotAssessed => "not_assessed",
            ControlState::NotApplicable => "not_applicable",
        }
    }

    /// What the control adds to its frameworks' scores; `None`: it leaves the denominator.
    pub fn weight(self, has_evidence: bool) -> Option<f64> {
        match self {
            ControlState::Implemented => Some(1.0),
            ControlState::Partial => Some(0.5),
            ControlState::NotImplemented | ControlState::NotAssessed if has_evidence => Some(0.25),
            ControlState::NotImplemented | ControlState::NotAssessed => Some(0.0),
            ControlState::NotApplicable => None,
        }
    }
}

impl std::fmt::Display for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ControlState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ControlState::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("unknown control state `{s}` (expected implemented, partial, not_implemented, not_assessed or not_applicable)")
        })
    }
}

/// What one finding says about a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    Failing,
    Passing,
    Undecided,
    Unverified,
}

impl EvidenceKind {
    /// Classifies a finding by its lifecycle state and its last verdict (see the module table).
    pub fn of(status: FindingStatus, verdict: Verdict) -> EvidenceKind {
        match status {
            FindingStatus::Open | FindingStatus::Reopened => EvidenceKind::Failing,
            FindingStatus::Passed => EvidenceKind::Passing,
            FindingStatus::Resolved if verdict == Verdict::Pass => EvidenceKind::Passing,
            FindingStatus::Manual => EvidenceKind::Undecided,
            FindingStatus::Resolved | FindingStatus::Suppressed => EvidenceKind::Unverified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Failing => "failing",
            EvidenceKind::Passing => "passing",
            EvidenceKind::Undecided => "undecided",
            EvidenceKind::Unverified => "unverified",
        }
    }
}

/// The evidence of one control, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tally {
    pub failing: i64,
    pub passing: i64,
    pub undecided: i64,
    pub unverified: i64,
}

impl Tally {
    pub fn add(&mut self, kind: EvidenceKind) {
        match kind {
            EvidenceKind::Failing => self.failing += 1,
            EvidenceKind::Passing => self.passing += 1,
            EvidenceKind::Undecided => self.undecided += 1,
            EvidenceKind::Unverified => self.unverified += 1,
        }
    }

    pub fn total(&self) -> i64 {
        self.failing + self.passing + self.undecided + self.unverified
    }

    /// The derived state and a sentence saying why.
    pub fn derive(&self) -> (ControlState, String) {
        let n = |k: i64, what: &str| format!("{k} {what} finding{}", if k == 1 { "" } else { "s" });
        match (self.failing, self.passing, self.unverified) {
            (0, 0, _) if self.total() == 0 => (ControlState::NotAssessed, "no finding maps to this control".into()),
            (0, 0, _) => (
                ControlState::NotAssessed,
                format!(
                    "only undecided or unverified evidence ({}, {})",
                    n(self.undecided, "manual"),
                    n(self.unverified, "unverified")
                ),
            ),
            (f, 0, _) => (ControlState::NotImplemented, format!("{} and none passing", n(f, "failing"))),
            (f, p, _) if f > 0 => (ControlState::Partial, format!("{} and {}", n(f, "failing"), n(p, "passing"))),
            (_, p, 0) => (ControlState::Implemented, format!("{} and none failing", n(p, "passing"))),
            (_, p, u) => (
                ControlState::Partial,
                format!(
                    "{} but {} without a passing check (a check that stopped reporting proves nothing)",
                    n(p, "passing"),
                    n(u, "resolved or suppressed")
                ),
            ),
        }
    }
}

/// One control as the score sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub state: ControlState,
    pub has_evidence: bool,
}

/// A framework's score over its controls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FrameworkScore {
    /// Percent, two decimals; `None` when every control is not applicable.
    pub score: Option<f64>,
    pub points: f64,
    /// Controls in the denominator (not applicable ones are not).
    pub denominator: i64,
    pub controls: i64,
    pub implemented: i64,
    pub partial: i64,
    pub not_implemented: i64,
    pub not_assessed: i64,
    pub not_applicable: i64,
    pub with_evidence: i64,
}

pub fn score<'a>(controls: impl IntoIterator<Item = &'a Scored>) -> FrameworkScore {
    let mut s = FrameworkScore::default();
    for c in controls {
        s.controls += 1;
        if c.has_evidence {
            s.with_evidence += 1;
        }
        match c.state {
            ControlState::Implemented => s.implemented += 1,
            ControlState::Partial => s.partial += 1,
            ControlState::NotImplemented => s.not_implemented += 1,
            ControlState::NotAssessed => s.not_assessed += 1,
            ControlState::NotApplicable => s.not_applicable += 1,
        }
        if let Some(w) = c.state.weight(c.has_evidence) {
            s.points += w;
            s.denominator += 1;
        }
    }
    s.score = (s.denominator > 0).then(|| (s.points / s.denominator as f64 * 10_000.0).round() / 100.0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(state: ControlState, has_evidence: bool) -> Scored {
        Scored { state, has_evidence }
    }

    #[test]
    fn the_score_follows_the_weights() {
        use ControlState::*;
        let controls = [
            scored(Implemented, true),
            scored(Partial, true),
            scored(NotImplemented, true),
            scored(NotAssessed, true),
            scored(NotAssessed, false),
            scored(NotImplemented, false),
            scored(NotApplicable, true),
            scored(NotApplicable, false),
        ];
        let s = score(&controls);
        // (1 + 0.5 + 0.25 + 0.25 + 0 + 0) / 6 = 33.33 %; both not-applicable controls leave the denominator.
        assert_eq!(s.denominator, 6);
        assert_eq!(s.points, 2.0);
        assert_eq!(s.score, Some(33.33));
        assert_eq!(s.not_applicable, 2);
        assert_eq!(score(&[scored(NotApplicable, false)]).score, None);
        assert_eq!(score(&[scored(Implemented, true)]).score, Some(100.0));
    }

    #[test]
    fn states_are_derived_from_the_evidence() {
        let t = |failing, passing, undecided, unverified| Tally { failing, passing, undecided, unverified }.derive().0;
        use ControlState::*;
        assert_eq!(t(0, 0, 0, 0), NotAssessed);
        assert_eq!(t(0, 0, 2, 1), NotAssessed);
        assert_eq!(t(1, 0, 0, 0), NotImplemented);
        assert_eq!(t(1, 3, 0, 0), Partial);
        assert_eq!(t(0, 3, 1, 0), Implemented, "a manual check does not hold a control back");
        assert_eq!(t(0, 3, 0, 1), Partial, "a check that disappeared is not a pass");
    }

    #[test]
    fn lifecycle_states_classify_as_evidence() {
        use EvidenceKind::*;
        assert_eq!(EvidenceKind::of(FindingStatus::Open, Verdict::Fail), Failing);
        assert_eq!(EvidenceKind::of(FindingStatus::Reopened, Verdict::Fail), Failing);
        assert_eq!(EvidenceKind::of(FindingStatus::Passed, Verdict::Pass), Passing);
        assert_eq!(EvidenceKind::of(FindingStatus::Resolved, Verdict::Pass), Passing);
        assert_eq!(EvidenceKind::of(FindingStatus::Resolved, Verdict::Fail), Unverified);
        assert_eq!(EvidenceKind::of(FindingStatus::Suppressed, Verdict::Fail), Unverified);
        assert_eq!(EvidenceKind::of(FindingStatus::Manual, Verdict::Manual), Undecided);
    }

    /// What a failed, empty or incomplete scan can do to a control's evidence: nothing (failed SubJob,
    /// zero-findings guard), or turn failing findings it no longer reports into resolved-unseen ones.
    #[test]
    fn a_failed_or_empty_scan_never_raises_a_score() {
        let weight = |t: &Tally| {
            let (state, _) = t.derive();
            state.weight(t.total() > 0).unwrap_or(0.0)
        };
        for failing in 0..4 {
            for passing in 0..4 {
                for undecided in 0..3 {
                    for unverified in 0..3 {
                        let before = Tally { failing, passing, undecided, unverified };
                        // A failed scan or an empty report leaves the findings as they are; an incomplete
                        // report no longer reports some of the failing findings.
                        for gone in 0..=failing {
                            let after = Tally { failing: failing - gone, unverified: unverified + gone, ..before };
                            assert!(
                                weight(&after) <= weight(&before),
                                "{before:?} → {after:?} raised {} → {}",
                                weight(&before),
                                weight(&after)
                            );
                        }
                    }
                }
            }
        }
    }
}
