//! Conversions between epoch milliseconds and FHIR/RFC 3339 date-times (UTC, proleptic
//! Gregorian), without a date library: the crate stays dependency-light and pure.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Format epoch milliseconds as an RFC 3339 UTC date-time with `Z`, with milliseconds
/// only when they are not zero: `2026-03-01T08:15:00Z`, `2026-03-01T08:15:00.250Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, frac) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

/// Parse a FHIR `dateTime`/`instant` to epoch milliseconds. Partial dates (`2026`,
/// `2026-03`, `2026-03-01`) mean their first instant in UTC; a time needs a zone (`Z` or
/// `±hh:mm`), as FHIR requires. Fractions beyond milliseconds are truncated. `None` for
/// anything malformed.
pub fn parse_fhir_datetime_ms(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<u32> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let ys = parts.next()?;
    if ys.len() != 4 {
        return None;
    }
    let y = i64::from(num(ys)?);
    let m = match parts.next() {
        Some(p) if p.len() == 2 => num(p)?,
        Some(_) => return None,
        None => 1,
    };
    let d = match parts.next() {
        Some(p) if p.len() == 2 => num(p)?,
        Some(_) => return None,
        None => 1,
    };
    if parts.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else {
        return Some(day_ms);
    };
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0i64)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, z) = time.split_at(i);
        let (zh, zm) = z[1..].split_once(':')?;
        if zh.len() != 2 || zm.len() != 2 {
            return None;
        }
        let (zh, zm) = (i64::from(num(zh)?), i64::from(num(zm)?));
        if zh > 14 || zm > 59 {
            return None;
        }
        let sign = if z.starts_with('-') { -1 } else { 1 };
        (c, sign * (zh * 60 + zm))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let mut hp = hms.split(':');
    let (h, mi, sec) = (hp.next()?, hp.next()?, hp.next()?);
    if hp.next().is_some() || h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, mi, sec) = (num(h)?, num(mi)?, num(sec)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let millis = match frac {
        Some(f) => {
            num(f)?;
            let mut digits: String = f.chars().take(3).collect();
            while digits.len() < 3 {
                digits.push('0');
            }
            i64::from(num(&digits)?)
        }
        None => 0,
    };
    Some(
        day_ms + i64::from(h) * 3_600_000 + i64::from(mi) * 60_000 + i64::from(sec) * 1000 + millis
            - offset_min * 60_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for ms in [
            0,
            1_700_000_000_000,
            1_700_000_000_250,
            -86_400_000,
            951_782_400_000,
        ] {
            assert_eq!(parse_fhir_datetime_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(format_rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn forms() {
        let base = parse_fhir_datetime_ms("2026-03-01T08:00:00Z").unwrap();
        assert_eq!(
            parse_fhir_datetime_ms("2026-03-01T09:30:00+01:30"),
            Some(base)
        );
        assert_eq!(
            parse_fhir_datetime_ms("2026-03-01T08:00:00.1234Z"),
            Some(base + 123)
        );
        assert_eq!(
            parse_fhir_datetime_ms("2026-03-01"),
            Some(base - 8 * 3_600_000)
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2026-03-01T08:00:00",
            "2026-03-01T25:00:00Z",
            "26-03-01",
            "2026-03-01T08:00Z",
        ] {
            assert_eq!(parse_fhir_datetime_ms(bad), None, "{bad}");
        }
    }
}
