//! Schedules: when a scan fires (a cron expression in UTC, every N hours, or once), and the pure rules
//! around a fire: the next fire time, catch-up after downtime, the skip window of account scans.
//!
//! Nothing here reads the clock: every function takes `now` (or the time to start from), so the rules
//! are tested with controlled time and every scheduler replica computes the same answer from the same
//! stored state.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::time::Timestamp;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far ahead a cron expression is searched for its next fire (leap days repeat every 4 years; 8
/// covers the years divisible by 100 that are not leap years).
const SEARCH_DAYS: i64 = 366 * 8 + 2;

/// A standard five-field cron expression (minute, hour, day of month, month, day of week), evaluated in
/// UTC. Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, and month and day
/// names (`JAN`, `SUN`); day of week is 0–7 with both 0 and 7 meaning Sunday. When both the day of month and
/// the day of week are restricted, a day matching either fires (the classic cron rule). `@hourly`,
/// `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

const MONTH_NAMES: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let text = expression.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            _ if text.starts_with('@') => return Err(format!("`{text}` is not a known cron macro")),
            _ => text.to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; a cron expression has five: minute hour day-of-month month day-of-week (UTC)",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])? as u32;
        let days_of_month = field(fields[2], "day of month", 1, 31, &[])? as u32;
        let months = field(fields[3], "month", 1, 12, &MONTH_NAMES)? as u16;
        let dow = field(fields[4], "day of week", 0, 7, &DAY_NAMES)?;
        // 7 is Sunday too.
        let days_of_week = ((dow & 0x7f) | ((dow >> 7) & 1)) as u8;
        let cron = Self {
            text: text.to_string(),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_restricted: !fields[2].starts_with('*'),
            dow_restricted: !fields[4].starts_with('*'),
        };
        // A date that never exists (`0 0 31 2 *`) would make the schedule silently dead.
        if cron.next_after(Timestamp::from_millis(0)).is_none() {
            return Err(format!("`{text}` never fires (no such date)"));
        }
        Ok(cron)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << u8::from(date.month())) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().number_days_from_sunday()) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first fire strictly after `t` (minute resolution), or `None` if there is none in the
    /// search horizon (only for expressions naming dates that do not exist).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = (t.millis().div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let first_day = start.div_euclid(DAY_MS);
        let start_minute_of_day = (start - first_day * DAY_MS) / MINUTE_MS;
        for day in first_day..first_day + SEARCH_DAYS {
            let date = date_of_day(day)?;
            if !self.day_matches(date) {
                continue;
            }
            let from = if day == first_day { start_minute_of_day } else { 0 };
            for minute_of_day in from..1440 {
                let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                if self.hours & (1 << h) != 0 && self.minutes & (1 << m) != 0 {
                    return Some(Timestamp::from_millis(day * DAY_MS + minute_of_day * MINUTE_MS));
                }
            }
        }
        None
    }
}

fn date_of_day(day: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?).ok().map(|t| t.date())
}

/// One cron field as a bit set of the allowed values.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            // Month names start at 1, day names at 0 (Sunday).
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{name} `{s}` is not a number"))?;
        if v < min || v > max {
            return Err(format!("{name} {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("{name} step `{s}` is not a number"))?;
                if step == 0 || step > max {
                    return Err(format!("{name} step {step} is outside 1-{max}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{name} range {a}-{b} is backwards"));
            }
            (a, b)
        } else if range.is_empty() {
            return Err(format!("{name} has an empty list item in `{text}`"));
        } else {
            let a = value(range)?;
            // `a/n` means from a to the end in steps of n.
            (a, if step > 1 { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({})", self.text)
    }
}

impl FromStr for Cron {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cron::parse(s)
    }
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// A cron expression in UTC (`0 2 * * *`: every day at 02:00).
    Cron { expression: String },
    /// Every `hours` hours from `anchor` (the schedule's creation unless given).
    Interval { hours: u32, anchor: Timestamp },
    /// Once, at `at`.
    Once { at: Timestamp },
}

/// The longest interval a schedule may have (a year).
pub const MAX_INTERVAL_HOURS: u32 = 24 * 366;

impl Trigger {
    /// Checks the trigger (a cron expression that parses and fires, an interval in range).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Trigger::Cron { expression } => Cron::parse(expression).map(|_| ()),
            Trigger::Interval { hours, .. } if *hours == 0 || *hours > MAX_INTERVAL_HOURS => {
                Err(format!("interval hours must be 1-{MAX_INTERVAL_HOURS}"))
            }
            Trigger::Interval { .. } | Trigger::Once { .. } => Ok(()),
        }
    }

    /// The first fire strictly after `t`; `None` when the trigger fires no more.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Trigger::Cron { expression } => Cron::parse(expression).ok()?.next_after(t),
            Trigger::Interval { hours, anchor } => {
                let period = i64::from((*hours).max(1)) * 3_600_000;
                if t < *anchor {
                    return Some(*anchor);
                }
                let k = (t.millis() - anchor.millis()) / period + 1;
                Some(Timestamp::from_millis(anchor.millis() + k * period))
            }
            Trigger::Once { at } => (t < *at).then_some(*at),
        }
    }

    /// The first fire at or after `t` (the first fire of a new schedule).
    pub fn first_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.next_after(t.minus(Duration::from_millis(1)))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Cron { .. } => "cron",
            Trigger::Interval { .. } => "interval",
            Trigger::Once { .. } => "once",
        }
    }
}

/// What a fire does when the previous scan of its target is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// The fire is recorded as skipped.
    #[default]
    Skip,
    /// The fire waits until the previous scan ends, then starts (one waiting fire per schedule).
    Queue,
    /// The previous scan is cancelled; the fire starts when it has stopped.
    CancelPrevious,
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Queue => "queue",
            OverlapPolicy::CancelPrevious => "cancel_previous",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "queue" => Ok(Self::Queue),
            "cancel_previous" => Ok(Self::CancelPrevious),
            other => Err(format!("`{other}` is not an overlap policy (skip, queue, cancel_previous)")),
        }
    }
}

/// What the scheduler does with a schedule whose stored next fire is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Not due yet.
    NotYet,
    /// Fire once, for `fire_at` (the latest fire time that has passed), after `missed` earlier fire
    /// times that were not fired (downtime); `next` is the fire after now.
    Fire { fire_at: Timestamp, missed: u32, next: Option<Timestamp> },
    /// Every passed fire time is older than the catch-up window: nothing fires (`missed` of them are
    /// recorded as missed); `next` is the fire after now.
    Missed { missed: u32, next: Option<Timestamp> },
}

/// Passed fire times counted one by one before `due` stops counting (the count is then a lower bound).
const MAX_COUNTED_MISSES: u32 = 10_000;

/// The catch-up policy. A schedule whose stored next fire `stored_next` is due fires at most ONCE, for
/// the latest fire time that has passed, and only if that time is within `catch_up_window` of `now`;
/// earlier fire times missed during downtime are counted, not run. The next fire is the first after
/// `now`, so a scheduler that was down for a week starts one scan per schedule, not seven.
pub fn due(trigger: &Trigger, stored_next: Timestamp, now: Timestamp, catch_up_window: Duration) -> Due {
    if stored_next > now {
        return Due::NotYet;
    }
    let mut latest = stored_next;
    let mut passed: u32 = 1;
    // Interval and once triggers answer arithmetically; cron steps are bounded by the window walk.
    let next = trigger.next_after(now);
    match trigger {
        Trigger::Interval { hours, .. } => {
            let period = i64::from((*hours).max(1)) * 3_600_000;
            let steps = (now.millis() - stored_next.millis()) / period;
            latest = Timestamp::from_millis(stored_next.millis() + steps * period);
            passed = u32::try_from(steps + 1).unwrap_or(u32::MAX);
        }
        Trigger::Once { .. } => {}
        Trigger::Cron { expression } => {
            // Parsed once for the walk below (`Trigger::next_after` parses at every call).
            let Ok(cron) = Cron::parse(expression) else { return Due::Missed { missed: 1, next: None } };
            // Count the passed fires one by one up to a cap (a minutely cron down for a month has
            // 43,200); beyond it, walk only the catch-up window to find the latest.
            let mut t = stored_next;
            let mut steps: u32 = 0;
            while let Some(n) = cron.next_after(t).filter(|n| *n <= now) {
                if steps == MAX_COUNTED_MISSES {
                    let mut w = now.minus(catch_up_window).max(t);
                    let mut found = false;
                    while let Some(n) = cron.next_after(w).filter(|n| *n <= now) {
                        w = n;
                        found = true;
                    }
                    if found {
                        t = w;
                    } else {
                        t = n;
                    }
                    break;
                }
                t = n;
                steps += 1;
            }
            latest = t;
            passed = steps + 1;
        }
    }
    let missed = passed.saturating_sub(1);
    if now.since(latest) <= catch_up_window {
        Due::Fire { fire_at: latest, missed, next }
    } else {
        Due::Missed { missed: passed, next }
    }
}

/// The default skip window of a scheduled account scan of this type: a scheduled incremental scan is
/// skipped when the account was scanned (any type) within 22 hours; a full one when it had a full scan
/// within 6 days.
pub fn default_skip_window(scan_type: crate::domain::scan::ScanType) -> Option<Duration> {
    use crate::domain::scan::ScanType;
    match scan_type {
        ScanType::Incremental => Some(Duration::from_secs(22 * 3600)),
        ScanType::Full => Some(Duration::from_secs(6 * 86_400)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::from_millis(bson::DateTime::parse_rfc3339_str(s).expect("rfc3339").timestamp_millis())
    }

    fn next(expr: &str, from: &str) -> String {
        Cron::parse(expr).expect("parses").next_after(at(from)).expect("fires").to_rfc3339()
    }

    #[test]
    fn daily_and_weekly_defaults_fire_at_their_utc_times() {
        // 2026-12-02 is a Wednesday.
        assert_eq!(next("0 2 * * *", "2026-12-02T01:59:59Z"), "2026-12-02T02:00:00Z");
        assert_eq!(next("0 2 * * *", "2026-12-02T02:00:00Z"), "2026-12-03T02:00:00Z");
        assert_eq!(next("0 3 * * 0", "2026-12-02T10:00:00Z"), "2026-12-06T03:00:00Z");
        assert_eq!(next("0 3 * * 7", "2026-12-02T10:00:00Z"), "2026-12-06T03:00:00Z");
        assert_eq!(next("0 3 * * SUN", "2026-12-06T03:00:00Z"), "2026-12-13T03:00:00Z");
    }

    #[test]
    fn fields_take_ranges_steps_lists_and_names() {
        assert_eq!(next("*/15 * * * *", "2026-12-02T10:07:00Z"), "2026-12-02T10:15:00Z");
        assert_eq!(next("5/20 * * * *", "2026-12-02T10:26:00Z"), "2026-12-02T10:45:00Z");
        assert_eq!(next("0 9-17/4 * * MON-FRI", "2026-12-04T17:01:00Z"), "2026-12-07T09:00:00Z");
        assert_eq!(next("30 1 1,15 * *", "2026-12-02T00:00:00Z"), "2026-12-15T01:30:00Z");
        assert_eq!(next("0 0 1 jan *", "2026-12-02T00:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(next("@weekly", "2026-12-02T00:00:00Z"), "2026-12-06T00:00:00Z");
        // Both day fields restricted: either matches (the 13th, or any Friday).
        assert_eq!(next("0 0 13 * 5", "2026-12-02T00:00:00Z"), "2026-12-04T00:00:00Z");
        // Leap day.
        assert_eq!(next("0 0 29 2 *", "2026-12-02T00:00:00Z"), "2028-02-29T00:00:00Z");
    }

    #[test]
    fn the_next_fire_is_strictly_after_the_last_one_even_when_a_timer_wakes_early() {
        let c = Cron::parse("0 2 * * *").expect("parses");
        let fire = at("2026-12-02T02:00:00Z");
        // Woken 1 ms early, or exactly on time, or a little late: the same next fire, never the same one twice.
        assert_eq!(c.next_after(fire.minus(Duration::from_millis(1))), Some(fire));
        assert_eq!(c.next_after(fire), Some(at("2026-12-03T02:00:00Z")));
        assert_eq!(c.next_after(fire.plus(Duration::from_millis(900))), Some(at("2026-12-03T02:00:00Z")));
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for (expr, needle) in [
            ("0 2 * *", "five"),
            ("0 0 2 * * *", "five"),
            ("60 * * * *", "minute 60"),
            ("0 24 * * *", "hour 24"),
            ("0 0 0 * *", "day of month 0"),
            ("0 0 * 13 *", "month 13"),
            ("0 0 * * 8", "day of week 8"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
            ("1,,2 * * * *", "empty"),
            ("0 0 31 2 *", "never fires"),
            ("@often", "macro"),
        ] {
            let err = Cron::parse(expr).expect_err(expr);
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn intervals_and_one_time_triggers() {
        let anchor = at("2026-12-01T00:00:00Z");
        let every6 = Trigger::Interval { hours: 6, anchor };
        assert_eq!(every6.next_after(at("2026-11-30T00:00:00Z")), Some(anchor));
        assert_eq!(every6.next_after(anchor), Some(at("2026-12-01T06:00:00Z")));
        assert_eq!(every6.next_after(at("2026-12-01T05:59:59Z")), Some(at("2026-12-01T06:00:00Z")));
        assert_eq!(every6.first_at_or_after(anchor), Some(anchor));
        let once = Trigger::Once { at: anchor };
        assert_eq!(once.first_at_or_after(anchor), Some(anchor));
        assert_eq!(once.next_after(anchor), None);
        assert!(Trigger::Interval { hours: 0, anchor }.validate().is_err());
        assert!(Trigger::Cron { expression: "0 2 * * *".into() }.validate().is_ok());
    }

    #[test]
    fn downtime_gives_at_most_one_catch_up_fire_for_the_latest_missed_time() {
        let daily = Trigger::Cron { expression: "0 2 * * *".into() };
        let window = Duration::from_secs(24 * 3600);
        let stored = at("2026-12-01T02:00:00Z");
        // On time.
        assert_eq!(
            due(&daily, stored, at("2026-12-01T02:00:03Z"), window),
            Due::Fire { fire_at: stored, missed: 0, next: Some(at("2026-12-02T02:00:00Z")) }
        );
        assert_eq!(due(&daily, stored, at("2026-12-01T01:59:59Z"), window), Due::NotYet);
        // Down from Dec 1 01:00 to Dec 4 10:00: three fire times passed; one catch-up for Dec 4 02:00.
        assert_eq!(
            due(&daily, stored, at("2026-12-04T10:00:00Z"), window),
            Due::Fire { fire_at: at("2026-12-04T02:00:00Z"), missed: 3, next: Some(at("2026-12-05T02:00:00Z")) }
        );
        // A weekly schedule whose only missed fire is older than the window: nothing runs now.
        let weekly = Trigger::Cron { expression: "0 3 * * 0".into() };
        assert_eq!(
            due(&weekly, at("2026-11-29T03:00:00Z"), at("2026-12-02T10:00:00Z"), window),
            Due::Missed { missed: 1, next: Some(at("2026-12-06T03:00:00Z")) }
        );
        // Intervals count arithmetically.
        let every2 = Trigger::Interval { hours: 2, anchor: at("2026-12-01T00:00:00Z") };
        assert_eq!(
            due(&every2, at("2026-12-01T02:00:00Z"), at("2026-12-01T09:30:00Z"), window),
            Due::Fire { fire_at: at("2026-12-01T08:00:00Z"), missed: 3, next: Some(at("2026-12-01T10:00:00Z")) }
        );
        // A one-time schedule fires late within the window, and never again.
        let once = Trigger::Once { at: at("2026-12-01T12:00:00Z") };
        assert_eq!(
            due(&once, at("2026-12-01T12:00:00Z"), at("2026-12-01T18:00:00Z"), window),
            Due::Fire { fire_at: at("2026-12-01T12:00:00Z"), missed: 0, next: None }
        );
        // A minutely cron down for a month is bounded and still fires once.
        let minutely = Trigger::Cron { expression: "* * * * *".into() };
        match due(&minutely, at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:30Z"), window) {
            Due::Fire { fire_at, next, .. } => {
                assert_eq!(fire_at, at("2026-12-01T00:00:00Z"));
                assert_eq!(next, Some(at("2026-12-01T00:01:00Z")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlap_policies_parse() {
        for p in [OverlapPolicy::Skip, OverlapPolicy::Queue, OverlapPolicy::CancelPrevious] {
            assert_eq!(p.as_str().parse::<OverlapPolicy>(), Ok(p));
        }
        assert!("later".parse::<OverlapPolicy>().is_err());
    }
}
