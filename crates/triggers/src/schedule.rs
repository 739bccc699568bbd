//! TimeTrigger schedules, parsed as Fission's timer parses them (robfig/cron with
//! `SecondOptional | Minute | Hour | Dom | Month | Dow | Descriptor`): 5 fields, or 6 with
//! seconds first, descriptors (`@hourly`, `@daily`, …) and `@every <Go duration>`.

use std::time::Duration;

use chrono::{DateTime, TimeZone};

/// A cron expression Fission would refuse.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron spec '{spec}': {reason}")]
pub struct ScheduleError {
    /// The expression as given.
    pub spec: String,
    /// Why it is refused.
    pub reason: String,
}

/// When a time trigger fires.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per time trigger, parsed once; boxing the cron buys nothing"
)]
pub enum Schedule {
    /// A cron pattern (optional seconds field, descriptors).
    Cron(croner::Cron),
    /// `@every <duration>`: a constant delay, whole seconds (robfig rounds down, at least 1 s).
    Every(Duration),
}

impl Schedule {
    /// Parse `spec` the way Fission's timer does.
    pub fn parse(spec: &str) -> Result<Self, ScheduleError> {
        let trimmed = spec.trim();
        let err = |reason: String| ScheduleError {
            spec: spec.to_owned(),
            reason,
        };
        if let Some(rest) = trimmed.strip_prefix("@every") {
            let d = parse_go_duration(rest.trim()).map_err(err)?;
            // robfig: "delays of less than a second are not supported (will round up to 1 second)";
            // anything else is truncated to whole seconds.
            let secs = d.as_secs().max(1);
            return Ok(Self::Every(Duration::from_secs(secs)));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(err(format!("expected 5 to 6 fields, found {fields}")));
        }
        if trimmed.starts_with('@') && !DESCRIPTORS.contains(&trimmed.to_ascii_lowercase().as_str())
        {
            return Err(err(format!("unrecognized descriptor: {trimmed}")));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        parser
            .parse(trimmed)
            .map(Self::Cron)
            .map_err(|e| err(e.to_string()))
    }

    /// The first fire strictly after `after`, if there is one.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Self::Cron(c) => c.find_next_occurrence(after, false).ok(),
            Self::Every(d) => {
                // robfig's ConstantDelaySchedule: t + delay, with t's sub-second part dropped.
                let delay = chrono::Duration::from_std(*d).ok()?;
                let nanos = chrono::Timelike::nanosecond(after);
                Some(after.clone() + delay - chrono::Duration::nanoseconds(i64::from(nanos)))
            }
        }
    }

    /// The next `n` fires after `after` (`fission tt showschedule`).
    pub fn upcoming<Tz: TimeZone>(&self, after: &DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after.clone();
        while out.len() < n {
            match self.next_after(&t) {
                Some(next) => {
                    t = next.clone();
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }
}

/// The descriptors robfig/cron accepts besides `@every`.
const DESCRIPTORS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units ns, us/µs, ms, s, m, h
/// (`1h30m`, `1.5h`, `300ms`). Negative durations are refused: a schedule cannot run backwards.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("@every needs a duration, like '@every 1h30m'".to_owned());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s}"))?;
        if num_len == 0 {
            return Err(format!("invalid duration {s}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s}")),
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("invalid duration {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn next3(spec: &str, from: &str) -> Vec<String> {
        Schedule::parse(spec)
            .expect("valid")
            .upcoming(&at(from), 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_fire_on_minutes() {
        assert_eq!(
            next3("30 * * * *", "2026-01-01T10:15:00Z"),
            [
                "2026-01-01T10:30:00+00:00",
                "2026-01-01T11:30:00+00:00",
                "2026-01-01T12:30:00+00:00"
            ]
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        assert_eq!(
            next3("*/20 * * * * *", "2026-01-01T10:15:05Z"),
            [
                "2026-01-01T10:15:20+00:00",
                "2026-01-01T10:15:40+00:00",
                "2026-01-01T10:16:00+00:00"
            ]
        );
    }

    #[test]
    fn every_adds_the_delay_to_whole_seconds() {
        assert_eq!(
            next3("@every 1h30m", "2026-01-01T10:00:00.750Z"),
            [
                "2026-01-01T11:30:00+00:00",
                "2026-01-01T13:00:00+00:00",
                "2026-01-01T14:30:00+00:00"
            ]
        );
        assert!(matches!(
            Schedule::parse("@every 300ms").expect("valid"),
            Schedule::Every(d) if d == Duration::from_secs(1)
        ));
    }

    #[test]
    fn descriptors_are_accepted() {
        assert_eq!(
            next3("@hourly", "2026-01-01T10:15:00Z")[0],
            "2026-01-01T11:00:00+00:00"
        );
        assert_eq!(
            next3("@daily", "2026-01-01T10:15:00Z")[0],
            "2026-01-02T00:00:00+00:00"
        );
    }

    #[test]
    fn malformed_specs_are_refused_with_the_spec_named() {
        for bad in [
            "",
            "* * * *",
            "* * * * * * *",
            "@every",
            "@every 5x",
            "@fortnightly",
            "61 * * * *",
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }
}
