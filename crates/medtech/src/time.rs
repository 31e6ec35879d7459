//! UTC instants in .NET ticks (100 ns) since the Unix epoch: the reference works in
//! `DateTime` ticks ("+1 h − 1 tick" group ends), so the same resolution is used here.

use std::fmt;

/// Ticks per millisecond / second / hour / day.
pub const TICKS_PER_MS: i64 = 10_000;
const TICKS_PER_SEC: i64 = 10_000_000;
/// Ticks in one hour.
pub const TICKS_PER_HOUR: i64 = 3600 * TICKS_PER_SEC;
/// Ticks in one day.
pub const TICKS_PER_DAY: i64 = 24 * TICKS_PER_HOUR;

/// A UTC instant, 100 ns resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub i64);

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Instant {
    /// From Unix seconds.
    pub fn from_unix_seconds(s: i64) -> Option<Instant> {
        s.checked_mul(TICKS_PER_SEC).map(Instant)
    }
    /// From Unix milliseconds.
    pub fn from_unix_millis(ms: i64) -> Option<Instant> {
        ms.checked_mul(TICKS_PER_MS).map(Instant)
    }

    /// Parses an ISO 8601 date-time: `YYYY-MM-DD`, optionally `T` (or a space) and
    /// `hh:mm[:ss[.fraction]]`, optionally `Z` or `±hh:mm`/`±hhmm`. Without an offset the
    /// time is read as UTC (the reference reads it as server-local time, which is UTC in its
    /// deployments).
    pub fn parse(s: &str) -> Option<Instant> {
        let b = s.trim().as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return None;
        }
        let mut ticks = days_from_civil(y, mo, d) * TICKS_PER_DAY;
        let mut i = 10;
        if i < b.len() {
            if b[i] != b'T' && b[i] != b't' && b[i] != b' ' {
                return None;
            }
            i += 1;
            if b.get(i + 2) != Some(&b':') {
                return None;
            }
            let (h, mi) = (num(i..i + 2)?, num(i + 3..i + 5)?);
            i += 5;
            let mut sec = 0;
            if b.get(i) == Some(&b':') {
                sec = num(i + 1..i + 3)?;
                i += 3;
            }
            if h > 23 || mi > 59 || sec > 59 {
                return None;
            }
            ticks += h * TICKS_PER_HOUR + mi * 60 * TICKS_PER_SEC + sec * TICKS_PER_SEC;
            if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
                i += 1;
                let start = i;
                let mut frac = 0i64;
                while i < b.len() && b[i].is_ascii_digit() {
                    if i - start < 7 {
                        frac = frac * 10 + i64::from(b[i] - b'0');
                    }
                    i += 1;
                }
                if i == start {
                    return None;
                }
                for _ in (i - start)..7 {
                    frac *= 10;
                }
                ticks += frac;
            }
            match b.get(i) {
                None => {}
                Some(b'Z' | b'z') if i + 1 == b.len() => {}
                Some(&sign @ (b'+' | b'-')) => {
                    let oh = num(i + 1..i + 3)?;
                    let om = match b.len() - i {
                        6 if b[i + 3] == b':' => num(i + 4..i + 6)?,
                        5 => num(i + 3..i + 5)?,
                        3 => 0,
                        _ => return None,
                    };
                    if oh > 23 || om > 59 {
                        return None;
                    }
                    let off = (oh * 60 + om) * 60 * TICKS_PER_SEC;
                    ticks += if sign == b'+' { -off } else { off };
                }
                _ => return None,
            }
        }
        Some(Instant(ticks))
    }

    fn parts(self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let days = self.0.div_euclid(TICKS_PER_DAY);
        let rem = self.0.rem_euclid(TICKS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let (h, rem) = (rem / TICKS_PER_HOUR, rem % TICKS_PER_HOUR);
        let (mi, rem) = (rem / (60 * TICKS_PER_SEC), rem % (60 * TICKS_PER_SEC));
        (y, m, d, h, mi, rem / TICKS_PER_SEC, rem % TICKS_PER_SEC)
    }

    /// `yyyyMMddHHmmssZ`, the reference's identifier segment form.
    pub fn segment(self) -> String {
        let (y, m, d, h, mi, s, _) = self.parts();
        if !(0..=9999).contains(&y) {
            return format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{s:02}Z");
        }
        // Digit by digit, as in `Display`: one per Observation identifier.
        let mut out = String::with_capacity(15);
        for (v, width) in [(y, 4), (m, 2), (d, 2), (h, 2), (mi, 2), (s, 2)] {
            let mut div = if width == 4 { 1000 } else { 10 };
            while div > 0 {
                out.push(char::from(b'0' + ((v / div) % 10) as u8));
                div /= 10;
            }
        }
        out.push('Z');
        out
    }

    /// Start of the UTC hour.
    pub fn floor_hour(self) -> Instant {
        Instant(self.0 - self.0.rem_euclid(TICKS_PER_HOUR))
    }
    /// Start of the UTC day.
    pub fn floor_day(self) -> Instant {
        Instant(self.0 - self.0.rem_euclid(TICKS_PER_DAY))
    }
}

/// RFC 3339 in UTC with `Z`, fraction trimmed of trailing zeros (none when whole seconds).
impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, h, mi, s, frac) = self.parts();
        if (0..=9999).contains(&y) {
            // Digit by digit: this runs for every measurement and Observation, and the
            // formatting machinery costs several times more.
            let mut buf = *b"0000-00-00T00:00:00.0000000Z";
            let mut put = |at: usize, width: usize, mut v: i64| {
                for k in (at..at + width).rev() {
                    buf[k] = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            };
            put(0, 4, y);
            put(5, 2, m);
            put(8, 2, d);
            put(11, 2, h);
            put(14, 2, mi);
            put(17, 2, s);
            let len = if frac == 0 {
                19
            } else {
                put(20, 7, frac);
                let mut end = 27;
                while buf[end - 1] == b'0' {
                    end -= 1;
                }
                end
            };
            buf[len] = b'Z';
            return f.write_str(std::str::from_utf8(&buf[..=len]).map_err(|_| fmt::Error)?);
        }
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
        if frac != 0 {
            let digits = format!("{frac:07}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formatting the fast paths replace.
    fn reference(t: Instant) -> (String, String) {
        let (y, m, d, h, mi, s, frac) = t.parts();
        let mut text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        if frac != 0 {
            let digits = format!("{frac:07}");
            text.push_str(&format!(".{}", digits.trim_end_matches('0')));
        }
        text.push('Z');
        (text, format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{s:02}Z"))
    }

    #[test]
    fn fast_formatting_matches_the_reference() {
        // A deterministic spread over years -100..12000 with every fraction length.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let span = 12_100 * 366 * TICKS_PER_DAY;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut ticks = (x % span as u64) as i64 - 100 * 366 * TICKS_PER_DAY;
            // Round to various precisions so that trailing-zero trimming is exercised.
            let unit = [1, 10, 1_000, 10_000, 10_000_000][i % 5];
            ticks -= ticks.rem_euclid(unit);
            let t = Instant(ticks);
            let (text, segment) = reference(t);
            assert_eq!(t.to_string(), text);
            assert_eq!(t.segment(), segment);
            if (0..=9999).contains(&t.parts().0) {
                assert_eq!(Instant::parse(&text), Some(t), "{text}");
            }
        }
    }
}
