//! Triggers: `manual`, `immediate`, `every <duration>`, `cron <5 fields>` (UTC).

use std::fmt;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

/// When a rule runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Only by `regctl replicate run`.
    Manual,
    /// On the source registry's push and delete notifications (`serve`), plus one catch-up
    /// run when `serve` starts.
    Immediate,
    /// Every interval, the first run when `serve` starts.
    Every(Duration),
    /// On a cron schedule, in UTC.
    Cron(Cron),
}

impl Trigger {
    /// Parses `manual`, `immediate`, `every 10m` (units `s`, `m`, `h`, `d`, combinable:
    /// `1h30m`) or `cron 0 */2 * * *`.
    ///
    /// # Errors
    /// A reason, naming the part that does not parse.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        match s {
            "manual" => return Ok(Self::Manual),
            "immediate" => return Ok(Self::Immediate),
            _ => {}
        }
        if let Some(d) = s.strip_prefix("every ") {
            let d = parse_duration(d.trim())?;
            if d < Duration::from_secs(1) {
                return Err("an interval of at least 1s".into());
            }
            return Ok(Self::Every(d));
        }
        if let Some(c) = s.strip_prefix("cron ") {
            return Ok(Self::Cron(Cron::parse(c)?));
        }
        Err(format!(
            "{s:?} is not a trigger: \"manual\", \"immediate\", \"every 10m\" or \"cron 0 */2 * * *\""
        ))
    }

    /// The next scheduled run strictly after `after`; `None` for manual and immediate rules
    /// (and a cron expression that never fires, such as `0 0 30 2 *`).
    #[must_use]
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        match self {
            Self::Manual | Self::Immediate => None,
            Self::Every(d) => after.checked_add(*d),
            Self::Cron(c) => c.next_after(after),
        }
    }
}

/// Parses `90s`, `10m`, `2h`, `1d`, `1h30m`.
///
/// # Errors
/// A reason naming the input.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 30s, 10m, 2h, 1h30m)");
    let mut total = 0u64;
    let mut digits = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !any || !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A 5-field cron expression: minute, hour, day of month, month, day of week; each field
/// `*`, a value, a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma list of those;
/// month and weekday names (`jan`, `mon`) and 7 for Sunday. As in Vixie cron, when both day
/// fields are restricted a day matching either runs.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
    text: String,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses the five fields.
    ///
    /// # Errors
    /// A reason naming the field.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = fields[..] else {
            return Err(format!(
                "cron {s:?}: 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        };
        let weekdays = field(dow, "day of week", 0, 7, 0, WEEKDAYS)?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Self {
            minutes: field(min, "minute", 0, 59, 0, &[])?,
            hours: field(hour, "hour", 0, 23, 0, &[])?,
            days: field(dom, "day of month", 1, 31, 0, &[])?,
            months: field(mon, "month", 1, 12, 1, MONTHS)?,
            weekdays,
            days_any: dom.starts_with('*'),
            weekdays_any: dow.starts_with('*'),
            text: s.trim().to_owned(),
        })
    }

    fn day_matches(&self, t: &OffsetDateTime) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().number_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `after` that the expression names.
    #[must_use]
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let secs = after.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let start = i64::try_from(secs / 60 * 60 + 60).ok()?;
        let mut t = OffsetDateTime::from_unix_timestamp(start).ok()?;
        // Five years of minutes at most; a day or hour that does not match is skipped whole.
        let limit = t.checked_add(time::Duration::days(5 * 366))?;
        while t < limit {
            if self.months & (1 << u8::from(t.month())) == 0 || !self.day_matches(&t) {
                t = t
                    .replace_time(time::Time::MIDNIGHT)
                    .checked_add(time::Duration::days(1))?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .replace_minute(0)
                    .ok()?
                    .checked_add(time::Duration::hours(1))?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(time::Duration::minutes(1))?;
                continue;
            }
            let secs = u64::try_from(t.unix_timestamp()).ok()?;
            return SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        }
        None
    }
}

/// One field as a bit set of its values.
fn field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    name_base: u32,
    names: &[&str],
) -> std::result::Result<u64, String> {
    let bad = |why: &str| format!("cron {name} field {text:?}: {why}");
    let value = |v: &str| -> std::result::Result<u32, String> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(u32::try_from(i).unwrap_or(0) + name_base);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| bad(&format!("{v:?} is not a value")))?;
        if n < min || n > max {
            return Err(bad(&format!("{n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if s == 0 {
                    return Err(bad("a step of 0"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `a/n` runs from a to the end of the field.
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(bad(&format!("the range {lo}-{hi} is backwards")));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).unwrap())
    }

    fn next(expr: &str, from: &str) -> SystemTime {
        Cron::parse(expr).unwrap().next_after(at(from)).unwrap()
    }

    #[test]
    fn cron_next_table() {
        let rows = [
            (
                "every minute",
                "* * * * *",
                "2026-01-01T10:00:30Z",
                "2026-01-01T10:01:00Z",
            ),
            (
                "every two hours",
                "0 */2 * * *",
                "2026-01-01T10:00:00Z",
                "2026-01-01T12:00:00Z",
            ),
            (
                "range and step",
                "10-30/10 * * * *",
                "2026-01-01T10:25:00Z",
                "2026-01-01T10:30:00Z",
            ),
            (
                "list",
                "5,50 3 * * *",
                "2026-01-01T03:06:00Z",
                "2026-01-01T03:50:00Z",
            ),
            (
                "month name",
                "0 0 1 mar *",
                "2026-01-15T00:00:00Z",
                "2026-03-01T00:00:00Z",
            ),
            // 2026-01-01 is a Thursday.
            (
                "weekday name",
                "0 9 * * mon",
                "2026-01-01T00:00:00Z",
                "2026-01-05T09:00:00Z",
            ),
            (
                "7 is sunday",
                "0 9 * * 7",
                "2026-01-01T00:00:00Z",
                "2026-01-04T09:00:00Z",
            ),
            (
                "dom or dow",
                "0 0 10 * sun",
                "2026-01-01T00:00:00Z",
                "2026-01-04T00:00:00Z",
            ),
            (
                "year wrap",
                "0 0 1 1 *",
                "2026-06-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "leap day",
                "0 0 29 2 *",
                "2026-01-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
        ];
        for (what, expr, from, want) in rows {
            assert_eq!(next(expr, from), at(want), "{what}: {expr}");
        }
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn cron_errors_name_the_field() {
        for (expr, needle) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "minute"),
        ] {
            let err = Cron::parse(expr).unwrap_err();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn triggers_parse() {
        assert_eq!(Trigger::parse("manual").unwrap(), Trigger::Manual);
        assert_eq!(Trigger::parse("immediate").unwrap(), Trigger::Immediate);
        assert_eq!(
            Trigger::parse("every 10m").unwrap(),
            Trigger::Every(Duration::from_secs(600))
        );
        assert_eq!(
            Trigger::parse("every 1h30m").unwrap(),
            Trigger::Every(Duration::from_secs(5400))
        );
        assert!(matches!(
            Trigger::parse("cron 0 */2 * * *").unwrap(),
            Trigger::Cron(_)
        ));
        for bad in [
            "hourly",
            "every",
            "every 10",
            "every 0s",
            "every 5x",
            "cron 1 2 3",
        ] {
            assert!(Trigger::parse(bad).is_err(), "{bad}");
        }
    }
}
