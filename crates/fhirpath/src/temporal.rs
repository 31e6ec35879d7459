//! FHIRPath Date, DateTime and Time values with partial precision.
//!
//! Values keep the precision they were written with; comparisons follow the FHIRPath rules
//! (compare down to the coarser precision, and answer "unknown" when the values agree that
//! far but one is more precise). Milliseconds are part of the seconds precision.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Seconds with a fractional part.
    Millisecond,
}

/// A date, date-time or time value. For times, the date fields are unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    pub precision: Precision,
    /// Timezone offset in minutes; `None` when not given.
    pub tz: Option<i16>,
}

/// A time of day (hours to milliseconds), no timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    pub precision: Precision,
}

fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s[..n]
            .iter()
            .fold(0u32, |a, d| a * 10 + u32::from(d - b'0')),
    )
}

pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

/// Parse `hh(:mm(:ss(.fff)?)?)?`; returns the time and the bytes consumed.
fn parse_time_part(s: &[u8]) -> Option<(Time, usize)> {
    let hour = digits(s, 2)? as u8;
    if hour > 23 {
        return None;
    }
    let mut t = Time {
        hour,
        minute: 0,
        second: 0,
        millis: 0,
        precision: Precision::Hour,
    };
    let mut i = 2;
    if s.get(i) == Some(&b':') {
        t.minute = digits(&s[i + 1..], 2)? as u8;
        if t.minute > 59 {
            return None;
        }
        t.precision = Precision::Minute;
        i += 3;
        if s.get(i) == Some(&b':') {
            t.second = digits(&s[i + 1..], 2)? as u8;
            if t.second > 59 {
                return None;
            }
            t.precision = Precision::Second;
            i += 3;
            if s.get(i) == Some(&b'.') {
                let frac = &s[i + 1..];
                let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 {
                    return None;
                }
                let mut ms = 0u32;
                for k in 0..3 {
                    ms = ms * 10
                        + frac
                            .get(k)
                            .filter(|_| k < n)
                            .map_or(0, |d| u32::from(d - b'0'));
                }
                t.millis = ms as u16;
                t.precision = Precision::Millisecond;
                i += 1 + n;
            }
        }
    }
    Some((t, i))
}

fn parse_tz(s: &[u8]) -> Option<(Option<i16>, usize)> {
    match s.first() {
        None => Some((None, 0)),
        Some(b'Z') => Some((Some(0), 1)),
        Some(&c @ (b'+' | b'-')) => {
            let h = digits(&s[1..], 2)?;
            if s.get(3) != Some(&b':') {
                return None;
            }
            let m = digits(&s[4..], 2)?;
            if h > 14 || m > 59 {
                return None;
            }
            let off = (h * 60 + m) as i16;
            Some((Some(if c == b'-' { -off } else { off }), 6))
        }
        _ => None,
    }
}

impl DateTime {
    /// Parse a FHIRPath/FHIR date or dateTime (without the `@`). `allow_time` is false for
    /// Date values. A trailing `T` with no time (`2015T`) is accepted for DateTime literals.
    pub fn parse(s: &str, allow_time: bool) -> Option<DateTime> {
        let b = s.as_bytes();
        let (year_digits, year) = if b.len() >= 4 {
            (4, digits(b, 4)? as i32)
        } else {
            return None;
        };
        let mut v = DateTime {
            year,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            precision: Precision::Year,
            tz: None,
        };
        let mut i = year_digits;
        if b.get(i) == Some(&b'-') {
            v.month = digits(&b[i + 1..], 2)? as u8;
            if !(1..=12).contains(&v.month) {
                return None;
            }
            v.precision = Precision::Month;
            i += 3;
            if b.get(i) == Some(&b'-') {
                v.day = digits(&b[i + 1..], 2)? as u8;
                if v.day == 0 || v.day > days_in_month(v.year, v.month) {
                    return None;
                }
                v.precision = Precision::Day;
                i += 3;
            }
        }
        if b.get(i) == Some(&b'T') {
            if !allow_time {
                return None;
            }
            i += 1;
            if i < b.len() && b[i].is_ascii_digit() {
                if v.precision != Precision::Day {
                    return None;
                }
                let (t, n) = parse_time_part(&b[i..])?;
                v.hour = t.hour;
                v.minute = t.minute;
                v.second = t.second;
                v.millis = t.millis;
                v.precision = t.precision;
                i += n;
            }
            let (tz, n) = parse_tz(&b[i..])?;
            v.tz = tz;
            i += n;
        } else if allow_time && i < b.len() && v.precision >= Precision::Day {
            // FHIR instants always have a T; a bare timezone after a date is not valid
            return None;
        }
        if i != b.len() {
            return None;
        }
        Some(v)
    }

    pub fn is_date_only(&self) -> bool {
        self.precision <= Precision::Day && self.tz.is_none()
    }

    /// Milliseconds since the epoch, treating a missing timezone as UTC.
    fn epoch_millis(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        let tz = i64::from(self.tz.unwrap_or(0));
        (secs - tz * 60) * 1000 + i64::from(self.millis)
    }

    /// The value at `ms` since the epoch (UTC), shown in timezone `tz`.
    pub fn from_epoch_millis(ms: i64, precision: Precision, tz: Option<i16>) -> DateTime {
        let local = ms + i64::from(tz.unwrap_or(0)) * 60_000;
        let days = local.div_euclid(86_400_000);
        let rem = local.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3_600_000) as u8,
            minute: (rem / 60_000 % 60) as u8,
            second: (rem / 1000 % 60) as u8,
            millis: (rem % 1000) as u16,
            precision,
            tz,
        }
    }

    /// Normalize to UTC when a timezone is present (only meaningful at hour precision or finer).
    fn normalized(&self) -> DateTime {
        if self.precision >= Precision::Hour && self.tz.is_some_and(|t| t != 0) {
            DateTime::from_epoch_millis(self.epoch_millis(), self.precision, Some(0))
        } else {
            *self
        }
    }

    fn fields(&self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millis),
        ]
    }

    /// FHIRPath comparison: `None` when the answer is unknown because of differing precision.
    pub fn compare(&self, other: &DateTime) -> Option<Ordering> {
        if self.precision >= Precision::Hour
            && other.precision >= Precision::Hour
            && self.tz.is_some() != other.tz.is_some()
        {
            // one side's instant is unknown without its timezone
            return None;
        }
        let (a, b) = (self.normalized(), other.normalized());
        let pa = level(a.precision);
        let pb = level(b.precision);
        let (fa, fb) = (a.fields(), b.fields());
        let common = pa.min(pb);
        for k in 0..=common {
            match fa[k].cmp(&fb[k]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if pa == pb {
            // a timezone on one side only makes the instant uncertain
            if a.precision >= Precision::Hour && a.tz.is_some() != b.tz.is_some() {
                return None;
            }
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Add a calendar or UCUM time quantity (`value` in `unit`), keeping this precision.
    pub fn add(&self, value: f64, unit: &str) -> Option<DateTime> {
        let unit = calendar_unit(unit)?;
        let whole = value.trunc() as i64;
        let mut v = *self;
        match unit {
            CalUnit::Year => {
                v.year = i32::try_from(i64::from(v.year) + whole).ok()?;
                v.day = v.day.min(days_in_month(v.year, v.month));
            }
            CalUnit::Month => {
                if self.precision == Precision::Year {
                    return self.add((whole / 12) as f64, "year");
                }
                let total = i64::from(v.year) * 12 + i64::from(v.month) - 1 + whole;
                v.year = i32::try_from(total.div_euclid(12)).ok()?;
                v.month = (total.rem_euclid(12) + 1) as u8;
                v.day = v.day.min(days_in_month(v.year, v.month));
            }
            CalUnit::Week | CalUnit::Day => {
                let days = if unit == CalUnit::Week {
                    whole * 7
                } else {
                    whole
                };
                match self.precision {
                    Precision::Year => return self.add((days / 365) as f64, "year"),
                    Precision::Month => return self.add((days / 30) as f64, "month"),
                    _ => {
                        let ms = self.epoch_millis_local() + days * 86_400_000;
                        v = DateTime::from_epoch_millis(ms, self.precision, None);
                        v.tz = self.tz;
                    }
                }
            }
            CalUnit::Hour | CalUnit::Minute | CalUnit::Second | CalUnit::Millisecond => {
                let ms_per = match unit {
                    CalUnit::Hour => 3_600_000.0,
                    CalUnit::Minute => 60_000.0,
                    CalUnit::Second => 1000.0,
                    _ => 1.0,
                };
                // only milliseconds keep a fraction; other units count whole units
                let whole_units = if unit == CalUnit::Millisecond {
                    value
                } else {
                    value.trunc()
                };
                let delta = (whole_units * ms_per).round() as i64;
                if self.precision <= Precision::Day {
                    let days = delta / 86_400_000;
                    return self.add(days as f64, "day");
                }
                let ms = self.epoch_millis_local() + delta;
                v = DateTime::from_epoch_millis(ms, self.precision, None);
                v.tz = self.tz;
            }
        }
        Some(v.truncated())
    }

    fn epoch_millis_local(&self) -> i64 {
        DateTime { tz: None, ..*self }.epoch_millis()
    }

    /// Zero the fields finer than the precision.
    fn truncated(mut self) -> DateTime {
        let p = self.precision;
        if p < Precision::Millisecond {
            self.millis = 0;
        }
        if p < Precision::Second {
            self.second = 0;
        }
        if p < Precision::Minute {
            self.minute = 0;
        }
        if p < Precision::Hour {
            self.hour = 0;
        }
        if p < Precision::Day {
            self.day = 1;
        }
        if p < Precision::Month {
            self.month = 1;
        }
        self
    }

    /// The precision as a number of digits, as FHIRPath `precision()` reports it.
    pub fn precision_digits(&self) -> i64 {
        match self.precision {
            Precision::Year => 4,
            Precision::Month => 6,
            Precision::Day => 8,
            Precision::Hour => 10,
            Precision::Minute => 12,
            Precision::Second => 14,
            Precision::Millisecond => 17,
        }
    }

    /// The earliest (`high == false`) or latest instant this partial value may stand for,
    /// at the precision given in digits (FHIRPath `lowBoundary`/`highBoundary`).
    pub fn boundary(&self, high: bool, digits: Option<i64>, date_only: bool) -> Option<DateTime> {
        let precision = match digits {
            None => {
                if date_only {
                    Precision::Day
                } else {
                    Precision::Millisecond
                }
            }
            Some(4) => Precision::Year,
            Some(6) => Precision::Month,
            Some(8) => Precision::Day,
            Some(10) if !date_only => Precision::Hour,
            Some(12) if !date_only => Precision::Minute,
            Some(14) if !date_only => Precision::Second,
            Some(17) if !date_only => Precision::Millisecond,
            _ => return None,
        };
        let mut v = *self;
        if self.precision < Precision::Month {
            v.month = if high { 12 } else { 1 };
        }
        if self.precision < Precision::Day {
            v.day = if high {
                days_in_month(v.year, v.month)
            } else {
                1
            };
        }
        if self.precision < Precision::Hour {
            v.hour = if high { 23 } else { 0 };
        }
        if self.precision < Precision::Minute {
            v.minute = if high { 59 } else { 0 };
        }
        if self.precision < Precision::Second {
            v.second = if high { 59 } else { 0 };
        }
        if self.precision < Precision::Millisecond {
            v.millis = if high { 999 } else { 0 };
        }
        if !date_only && v.tz.is_none() && precision >= Precision::Hour {
            // an unknown timezone widens the range to the extreme offsets
            v.tz = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        v.precision = precision;
        Some(v.truncated())
    }
}

impl Time {
    pub fn parse(s: &str) -> Option<Time> {
        let (t, n) = parse_time_part(s.as_bytes())?;
        (n == s.len()).then_some(t)
    }

    pub fn compare(&self, other: &Time) -> Option<Ordering> {
        let fa = [
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millis),
        ];
        let fb = [
            i64::from(other.hour),
            i64::from(other.minute),
            i64::from(other.second) * 1000 + i64::from(other.millis),
        ];
        let pa = level(self.precision) - 3;
        let pb = level(other.precision) - 3;
        for k in 0..=pa.min(pb) {
            match fa[k].cmp(&fb[k]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        (pa == pb).then_some(Ordering::Equal)
    }

    pub fn add(&self, value: f64, unit: &str) -> Option<Time> {
        let ms_per = match calendar_unit(unit)? {
            CalUnit::Hour => 3_600_000.0,
            CalUnit::Minute => 60_000.0,
            CalUnit::Second => 1000.0,
            CalUnit::Millisecond => 1.0,
            _ => return None,
        };
        let base = i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millis);
        let ms = (base + (value * ms_per).round() as i64).rem_euclid(86_400_000);
        let mut t = Time {
            hour: (ms / 3_600_000) as u8,
            minute: (ms / 60_000 % 60) as u8,
            second: (ms / 1000 % 60) as u8,
            millis: (ms % 1000) as u16,
            precision: self.precision,
        };
        if t.precision < Precision::Millisecond {
            t.millis = 0;
        }
        if t.precision < Precision::Second {
            t.second = 0;
        }
        if t.precision < Precision::Minute {
            t.minute = 0;
        }
        Some(t)
    }

    pub fn precision_digits(&self) -> i64 {
        match self.precision {
            Precision::Hour => 2,
            Precision::Minute => 4,
            Precision::Second => 6,
            _ => 9,
        }
    }

    pub fn boundary(&self, high: bool, digits: Option<i64>) -> Option<Time> {
        let precision = match digits {
            None | Some(9) => Precision::Millisecond,
            Some(2) => Precision::Hour,
            Some(4) => Precision::Minute,
            Some(6) => Precision::Second,
            _ => return None,
        };
        let mut t = *self;
        if self.precision < Precision::Minute {
            t.minute = if high { 59 } else { 0 };
        }
        if self.precision < Precision::Second {
            t.second = if high { 59 } else { 0 };
        }
        if self.precision < Precision::Millisecond {
            t.millis = if high { 999 } else { 0 };
        }
        t.precision = precision;
        t.add(0.0, "ms")
    }
}

pub fn level(p: Precision) -> usize {
    match p {
        Precision::Year => 0,
        Precision::Month => 1,
        Precision::Day => 2,
        Precision::Hour => 3,
        Precision::Minute => 4,
        Precision::Second | Precision::Millisecond => 5,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalUnit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// Calendar duration keywords and their UCUM counterparts usable in date arithmetic.
pub fn calendar_unit(unit: &str) -> Option<CalUnit> {
    Some(match unit {
        "year" | "years" | "a" => CalUnit::Year,
        "month" | "months" | "mo" => CalUnit::Month,
        "week" | "weeks" | "wk" => CalUnit::Week,
        "day" | "days" | "d" => CalUnit::Day,
        "hour" | "hours" | "h" => CalUnit::Hour,
        "minute" | "minutes" | "min" => CalUnit::Minute,
        "second" | "seconds" | "s" => CalUnit::Second,
        "millisecond" | "milliseconds" | "ms" => CalUnit::Millisecond,
        _ => return None,
    })
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", self.day)?;
        }
        if self.precision >= Precision::Hour {
            let time = Time {
                hour: self.hour,
                minute: self.minute,
                second: self.second,
                millis: self.millis,
                precision: self.precision,
            };
            write!(f, "T{time}")?;
            match self.tz {
                Some(0) => write!(f, "Z")?,
                Some(tz) => {
                    let sign = if tz < 0 { '-' } else { '+' };
                    write!(f, "{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.hour)?;
        if self.precision >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= Precision::Millisecond {
            write!(f, ".{:03}", self.millis)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "2014",
            "2014-01",
            "2014-01-25",
            "2014-01-25T14:30:14.559Z",
            "2015-02-04T14:34:28+10:00",
        ] {
            assert_eq!(
                DateTime::parse(s, true).map(|d| d.to_string()).as_deref(),
                Some(s)
            );
        }
        assert!(DateTime::parse("2014-02-30", true).is_none());
        assert!(DateTime::parse("2014-13", true).is_none());
        assert_eq!(
            Time::parse("12:34").map(|t| t.to_string()).as_deref(),
            Some("12:34")
        );
    }

    #[test]
    fn partial_precision_comparison() {
        let a = DateTime::parse("2012-04", false).unwrap();
        let b = DateTime::parse("2012-04-15", false).unwrap();
        let c = DateTime::parse("2012-05-15", false).unwrap();
        assert_eq!(a.compare(&b), None);
        assert_eq!(a.compare(&c), Some(Ordering::Less));
        let x = DateTime::parse("2017-11-05T01:30:00.0-04:00", true).unwrap();
        let y = DateTime::parse("2017-11-05T05:30:00.0Z", true).unwrap();
        assert_eq!(x.compare(&y), Some(Ordering::Equal));
    }

    #[test]
    fn civil_days_round_trip() {
        for d in [-1_000_000i64, -1, 0, 1, 59, 10_957, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
