//! A compact UCUM implementation: parse unit expressions and convert quantities to a
//! canonical form (value in base units plus a dimension vector), so that `1 'm' = 100 'cm'`
//! and `37 'Cel' > 98 '[degF]'` can be decided exactly.
//!
//! Covered: the SI base and derived units with all prefixes, time (s, min, h, d, wk, mo, a),
//! volume (L), pressure (Pa, bar, atm, mm[Hg], cm[H2O]), mass and length in US/imperial
//! customary units, temperature (K, Cel, [degF]), counts and ratios (1, %, [ppm], 10*n),
//! amount of substance (mol, eq), energy and power, annotations (`{beats}`), and the
//! multiplication, division, exponent and parenthesis syntax. Arbitrary units (`[iU]`) are
//! comparable only with themselves.

use rust_decimal::prelude::*;
use std::str::FromStr;

/// Dimensions: m, s, g, rad, K, C, cd.
pub type Dims = [i8; 7];

#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    /// The unit's size in base units is `num / den`; kept as a fraction so that
    /// conversions divide once, at the end (`/min` is 1/60, not 0.01666…).
    pub num: Decimal,
    pub den: Decimal,
    pub dims: Dims,
    /// Arbitrary units (e.g. `[iU]`) that have no dimension of their own.
    pub arbitrary: Vec<(String, i8)>,
}

const M: Dims = [1, 0, 0, 0, 0, 0, 0];
const S: Dims = [0, 1, 0, 0, 0, 0, 0];
const G: Dims = [0, 0, 1, 0, 0, 0, 0];
const RAD: Dims = [0, 0, 0, 1, 0, 0, 0];
const KEL: Dims = [0, 0, 0, 0, 1, 0, 0];
const COUL: Dims = [0, 0, 0, 0, 0, 1, 0];
const CD: Dims = [0, 0, 0, 0, 0, 0, 1];
const ONE: Dims = [0; 7];

fn dims_mul(a: Dims, b: Dims, sign: i8) -> Dims {
    let mut r = a;
    for i in 0..7 {
        r[i] += b[i] * sign;
    }
    r
}

/// (atom, metric, factor as decimal text, dims). Factor is relative to the base units.
const ATOMS: &[(&str, bool, &str, Dims)] = &[
    ("m", true, "1", M),
    ("s", true, "1", S),
    ("g", true, "1", G),
    ("rad", true, "1", RAD),
    ("K", true, "1", KEL),
    ("C", true, "1", COUL),
    ("cd", true, "1", CD),
    ("1", false, "1", ONE),
    ("%", false, "0.01", ONE),
    ("[ppth]", false, "0.001", ONE),
    ("[ppm]", false, "0.000001", ONE),
    ("mol", true, "602213670000000000000000", ONE),
    ("eq", true, "602213670000000000000000", ONE),
    ("osm", true, "602213670000000000000000", ONE),
    ("min", false, "60", S),
    ("h", false, "3600", S),
    ("d", false, "86400", S),
    ("wk", false, "604800", S),
    ("mo", false, "2629800", S),
    ("a", false, "31557600", S),
    ("a_j", false, "31557600", S),
    ("a_t", false, "31556925.216", S),
    ("mo_j", false, "2629800", S),
    ("L", true, "0.001", [3, 0, 0, 0, 0, 0, 0]),
    ("l", true, "0.001", [3, 0, 0, 0, 0, 0, 0]),
    ("Hz", true, "1", [0, -1, 0, 0, 0, 0, 0]),
    ("N", true, "1000", [1, -2, 1, 0, 0, 0, 0]),
    ("Pa", true, "1000", [-1, -2, 1, 0, 0, 0, 0]),
    ("J", true, "1000", [2, -2, 1, 0, 0, 0, 0]),
    ("W", true, "1000", [2, -3, 1, 0, 0, 0, 0]),
    ("A", true, "1", [0, -1, 0, 0, 0, 1, 0]),
    ("V", true, "1000", [2, -2, 1, 0, 0, -1, 0]),
    ("bar", true, "100000000", [-1, -2, 1, 0, 0, 0, 0]),
    ("atm", false, "101325000", [-1, -2, 1, 0, 0, 0, 0]),
    ("m[Hg]", true, "133322000", [-1, -2, 1, 0, 0, 0, 0]),
    ("m[H2O]", true, "9806650", [-1, -2, 1, 0, 0, 0, 0]),
    ("[in_i'Hg]", false, "3386388.64", [-1, -2, 1, 0, 0, 0, 0]),
    ("cal", true, "4184", [2, -2, 1, 0, 0, 0, 0]),
    ("[Cal]", false, "4184000", [2, -2, 1, 0, 0, 0, 0]),
    ("t", true, "1000000", G),
    ("u", true, "0.0000000000000000000000016605402", G),
    ("[in_i]", false, "0.0254", M),
    ("[ft_i]", false, "0.3048", M),
    ("[yd_i]", false, "0.9144", M),
    ("[mi_i]", false, "1609.344", M),
    ("[lb_av]", false, "453.59237", G),
    ("[oz_av]", false, "28.349523125", G),
    ("[gr]", false, "0.06479891", G),
    ("[stone_av]", false, "6350.29318", G),
    ("[gal_us]", false, "0.003785411784", [3, 0, 0, 0, 0, 0, 0]),
    (
        "[foz_us]",
        false,
        "0.0000295735295625",
        [3, 0, 0, 0, 0, 0, 0],
    ),
    ("[pt_us]", false, "0.000473176473", [3, 0, 0, 0, 0, 0, 0]),
    ("[qt_us]", false, "0.000946352946", [3, 0, 0, 0, 0, 0, 0]),
    ("deg", false, "0.0174532925199432957692369", RAD),
    ("sr", true, "1", [0, 0, 0, 2, 0, 0, 0]),
    ("[pi]", false, "3.1415926535897932384626433", ONE),
    ("10*", false, "10", ONE),
    ("10^", false, "10", ONE),
    ("[drp]", false, "0.00000005", [3, 0, 0, 0, 0, 0, 0]),
    ("U", true, "10036894500000000", [0, -1, 0, 0, 0, 0, 0]),
    ("b", true, "1", ONE),
];

const ARBITRARY: &[&str] = &[
    "[iU]", "[IU]", "[arb'U]", "[USP'U]", "[pH]", "[hp'_X]", "[CFU]", "[HPF]", "[LPF]",
];

const PREFIXES: &[(&str, &str)] = &[
    ("Y", "1000000000000000000000000"),
    ("Z", "1000000000000000000000"),
    ("E", "1000000000000000000"),
    ("P", "1000000000000000"),
    ("T", "1000000000000"),
    ("G", "1000000000"),
    ("M", "1000000"),
    ("k", "1000"),
    ("h", "100"),
    ("da", "10"),
    ("d", "0.1"),
    ("c", "0.01"),
    ("m", "0.001"),
    ("u", "0.000001"),
    ("n", "0.000000001"),
    ("p", "0.000000000001"),
    ("f", "0.000000000000001"),
    ("a", "0.000000000000000001"),
    ("z", "0.000000000000000000001"),
    ("y", "0.000000000000000000000001"),
];

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or(Decimal::ONE)
}

fn atom(symbol: &str) -> Option<Canonical> {
    if let Some(&(_, _, f, d)) = ATOMS.iter().find(|a| a.0 == symbol) {
        return Some(Canonical {
            num: dec(f),
            den: Decimal::ONE,
            dims: d,
            arbitrary: vec![],
        });
    }
    if ARBITRARY.contains(&symbol) {
        return Some(Canonical {
            num: Decimal::ONE,
            den: Decimal::ONE,
            dims: ONE,
            arbitrary: vec![(symbol.to_string(), 1)],
        });
    }
    for &(p, pf) in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(p) {
            if let Some(&(_, true, f, d)) = ATOMS.iter().find(|a| a.0 == rest) {
                return Some(Canonical {
                    num: dec(pf).checked_mul(dec(f))?,
                    den: Decimal::ONE,
                    dims: d,
                    arbitrary: vec![],
                });
            }
            if rest == "[iU]" || rest == "[IU]" {
                return Some(Canonical {
                    num: dec(pf),
                    den: Decimal::ONE,
                    dims: ONE,
                    arbitrary: vec![("[iU]".to_string(), 1)],
                });
            }
        }
    }
    None
}

fn pow(c: &Canonical, e: i8) -> Option<Canonical> {
    let (mut num, mut den) = (Decimal::ONE, Decimal::ONE);
    for _ in 0..e.unsigned_abs() {
        num = num.checked_mul(c.num)?;
        den = den.checked_mul(c.den)?;
    }
    if e < 0 {
        std::mem::swap(&mut num, &mut den);
    }
    let mut dims = ONE;
    for (d, cd) in dims.iter_mut().zip(c.dims.iter()) {
        *d = cd * e;
    }
    Some(Canonical {
        num,
        den,
        dims,
        arbitrary: c
            .arbitrary
            .iter()
            .map(|(n, p)| (n.clone(), p * e))
            .collect(),
    })
}

fn combine(a: Canonical, b: Canonical, sign: i8) -> Option<Canonical> {
    let (num, den) = if sign > 0 {
        (a.num.checked_mul(b.num)?, a.den.checked_mul(b.den)?)
    } else {
        (a.num.checked_mul(b.den)?, a.den.checked_mul(b.num)?)
    };
    let mut arbitrary = a.arbitrary;
    for (n, p) in b.arbitrary {
        arbitrary.push((n, p * sign));
    }
    Some(Canonical {
        num,
        den,
        dims: dims_mul(a.dims, b.dims, sign),
        arbitrary,
    })
}

struct UnitParser<'s> {
    s: &'s [u8],
    i: usize,
}

impl UnitParser<'_> {
    fn term(&mut self) -> Option<Canonical> {
        let mut acc = if self.s.get(self.i) == Some(&b'/') {
            Canonical {
                num: Decimal::ONE,
                den: Decimal::ONE,
                dims: ONE,
                arbitrary: vec![],
            }
        } else {
            self.component()?
        };
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'.' => {
                    self.i += 1;
                    acc = combine(acc, self.component()?, 1)?;
                }
                b'/' => {
                    self.i += 1;
                    acc = combine(acc, self.component()?, -1)?;
                }
                _ => break,
            }
        }
        Some(acc)
    }

    fn component(&mut self) -> Option<Canonical> {
        match self.s.get(self.i)? {
            b'(' => {
                self.i += 1;
                let t = self.term()?;
                if self.s.get(self.i) != Some(&b')') {
                    return None;
                }
                self.i += 1;
                self.annotation();
                Some(t)
            }
            b'{' => {
                self.annotation();
                Some(Canonical {
                    num: Decimal::ONE,
                    den: Decimal::ONE,
                    dims: ONE,
                    arbitrary: vec![],
                })
            }
            _ => {
                let start = self.i;
                // a unit symbol runs until an operator; brackets may contain anything
                let mut depth = 0;
                while let Some(&c) = self.s.get(self.i) {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b'.' | b'/' | b'(' | b')' | b'{' if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let sym = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                self.annotation();
                let (base, exp) = split_exponent(sym);
                if base.is_empty() {
                    return None;
                }
                let unit = if base.bytes().all(|b| b.is_ascii_digit()) {
                    Canonical {
                        num: Decimal::from_str(base).ok()?,
                        den: Decimal::ONE,
                        dims: ONE,
                        arbitrary: vec![],
                    }
                } else {
                    atom(base)?
                };
                pow(&unit, exp)
            }
        }
    }

    fn annotation(&mut self) {
        if self.s.get(self.i) == Some(&b'{') {
            while let Some(&c) = self.s.get(self.i) {
                self.i += 1;
                if c == b'}' {
                    break;
                }
            }
        }
    }
}

/// Split a trailing exponent off a unit symbol (`cm2` -> `cm`, 2; `s-1` -> `s`, -1;
/// `10*3` -> `10*`, 3). Pure integers are factors, not exponents.
fn split_exponent(sym: &str) -> (&str, i8) {
    if sym.bytes().all(|b| b.is_ascii_digit()) {
        return (sym, 1);
    }
    let b = sym.as_bytes();
    let mut end = b.len();
    while end > 0 && b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end > 0 && (b[end - 1] == b'-' || b[end - 1] == b'+') && end < b.len() {
        end -= 1;
    }
    if end == b.len() || end == 0 {
        return (sym, 1);
    }
    match sym[end..].parse::<i8>() {
        Ok(e) => (&sym[..end], e),
        Err(_) => (sym, 1),
    }
}

/// Parse a UCUM unit expression into its canonical form.
pub fn parse(unit: &str) -> Option<Canonical> {
    if unit.is_empty() {
        return Some(Canonical {
            num: Decimal::ONE,
            den: Decimal::ONE,
            dims: ONE,
            arbitrary: vec![],
        });
    }
    let mut p = UnitParser {
        s: unit.as_bytes(),
        i: 0,
    };
    let c = p.term()?;
    if p.i != unit.len() {
        return None;
    }
    Some(normalize(c))
}

fn normalize(mut c: Canonical) -> Canonical {
    c.arbitrary.sort();
    let mut merged: Vec<(String, i8)> = Vec::new();
    for (n, p) in c.arbitrary {
        match merged.last_mut() {
            Some((last, lp)) if *last == n => *lp += p,
            _ => merged.push((n, p)),
        }
    }
    merged.retain(|(_, p)| *p != 0);
    c.arbitrary = merged;
    c
}

/// Whether a string is a valid UCUM unit expression this implementation understands.
pub fn is_valid(unit: &str) -> bool {
    parse(unit).is_some()
}

/// Convert a value in `unit` to (value in base units, canonical form). Temperatures on
/// offset scales (Cel, [degF]) are converted to kelvin.
pub fn to_canonical(value: Decimal, unit: &str) -> Option<(Decimal, Canonical)> {
    match unit {
        "Cel" => {
            let k = value.checked_add(dec("273.15"))?;
            return Some((
                k,
                Canonical {
                    num: Decimal::ONE,
                    den: Decimal::ONE,
                    dims: KEL,
                    arbitrary: vec![],
                },
            ));
        }
        "[degF]" => {
            let k = value
                .checked_add(dec("459.67"))?
                .checked_mul(Decimal::from(5))?
                .checked_div(Decimal::from(9))?;
            return Some((
                k,
                Canonical {
                    num: Decimal::ONE,
                    den: Decimal::ONE,
                    dims: KEL,
                    arbitrary: vec![],
                },
            ));
        }
        _ => {}
    }
    let c = parse(unit)?;
    let v = value.checked_mul(c.num)?.checked_div(c.den)?;
    Some((
        v,
        Canonical {
            num: Decimal::ONE,
            den: Decimal::ONE,
            ..c
        },
    ))
}

/// Convert `value` from one unit to another; `None` if they are not commensurable.
pub fn convert(value: Decimal, from: &str, to: &str) -> Option<Decimal> {
    if from == to {
        return Some(value);
    }
    let (base, cf) = to_canonical(value, from)?;
    match to {
        "Cel" if cf.dims == KEL && cf.arbitrary.is_empty() => base.checked_sub(dec("273.15")),
        "[degF]" if cf.dims == KEL && cf.arbitrary.is_empty() => base
            .checked_mul(Decimal::from(9))?
            .checked_div(Decimal::from(5))?
            .checked_sub(dec("459.67")),
        _ => {
            let ct = parse(to)?;
            if ct.dims != cf.dims || ct.arbitrary != cf.arbitrary {
                return None;
            }
            match parse(from) {
                // value * num_from * den_to / (den_from * num_to): a single division
                Some(f) => value
                    .checked_mul(f.num)?
                    .checked_mul(ct.den)?
                    .checked_div(f.den.checked_mul(ct.num)?),
                // offset scales (Cel, [degF]) were converted to kelvin above
                None => base.checked_mul(ct.den)?.checked_div(ct.num),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn conversions() {
        assert_eq!(convert(d("1"), "m", "cm"), Some(d("100")));
        assert_eq!(
            convert(d("1000"), "mg", "g").map(|v| v.normalize()),
            Some(d("1"))
        );
        assert_eq!(
            convert(d("1"), "kg", "[lb_av]").map(|v| v.round_dp(4)),
            Some(d("2.2046"))
        );
        assert_eq!(
            convert(d("37"), "Cel", "[degF]").map(|v| v.round_dp(1)),
            Some(d("98.6"))
        );
        assert_eq!(
            convert(d("120"), "mm[Hg]", "kPa").map(|v| v.round_dp(2)),
            Some(d("16.00"))
        );
        assert_eq!(
            convert(d("1"), "L", "mL").map(|v| v.normalize()),
            Some(d("1000"))
        );
        assert_eq!(
            convert(d("60"), "/min", "/s").map(|v| v.normalize()),
            Some(d("1"))
        );
        assert_eq!(
            convert(d("1"), "10*3/uL", "10*9/L").map(|v| v.normalize()),
            Some(d("1"))
        );
        assert_eq!(convert(d("5"), "mmol/L", "mg/dL"), None);
        assert_eq!(
            convert(d("1"), "{beats}/min", "/min").map(|v| v.normalize()),
            Some(d("1"))
        );
        assert_eq!(convert(d("37"), "Cel", "K"), Some(d("310.15")));
        assert!(is_valid("kg/m2"));
        assert!(is_valid("mL/min/{1.73_m2}"));
        assert!(!is_valid("furlongs"));
    }
}
