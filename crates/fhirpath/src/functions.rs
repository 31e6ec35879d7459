//! The FHIRPath function library (FHIRPath 2.0 plus the FHIR R4 additions and the 2.1
//! string, math and boundary functions the R4 test suite uses).

use crate::ast::{Expr, ExprKind, Func, Lit, TypeSpec, UnOp};
use crate::eval::{
    all_children, children_named, compare, equals, eval, fail, is_boolean_expr, is_exact_type,
    is_type, singleton, string_of, truth, Env, EvalError, Input, R,
};
use crate::temporal::{DateTime, Time};
use crate::ucum;
use crate::value::{parse_decimal, Collection, Item, Node, Quantity};
use base64::Engine as _;
use rust_decimal::prelude::*;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use vigil_fhir_model::Model;

struct Call<'x, 'e, 'a> {
    args: &'x [Expr],
    focus: &'x [Item<'a>],
    env: &'x Env<'e, 'a>,
    pos: usize,
    name: &'static str,
}

impl<'x, 'a> Call<'x, '_, 'a> {
    /// Evaluate a plain (non-lambda) argument in the caller's context.
    fn arg(&self, i: usize) -> R<Collection<'a>> {
        match self.args.get(i) {
            Some(e) => eval(e, self.focus, self.env),
            None => Ok(Vec::new()),
        }
    }

    /// A plain argument that must be empty or a single item.
    fn arg1(&self, i: usize) -> R<Option<Item<'a>>> {
        let c = self.arg(i)?;
        Ok(singleton(&c, self.args.get(i).map_or(self.pos, |e| e.pos))?.cloned())
    }

    /// A string argument. A string literal is borrowed from the expression rather than
    /// evaluated (which would allocate the string and a collection on every call).
    fn arg_str(&self, i: usize) -> R<Option<Cow<'x, str>>> {
        if let Some(Expr {
            kind: ExprKind::Literal(Lit::String(s)),
            ..
        }) = self.args.get(i)
        {
            return Ok(Some(Cow::Borrowed(s.as_str())));
        }
        match self.arg1(i)? {
            None => Ok(None),
            Some(v) => Ok(Some(Cow::Owned(
                string_of(&v, self.name, self.pos)?.to_string(),
            ))),
        }
    }

    fn arg_int(&self, i: usize) -> R<Option<i64>> {
        match self.arg1(i)? {
            None => Ok(None),
            Some(v) => match v.as_integer() {
                Some(n) => Ok(Some(n)),
                None => self.err(format!("{}() needs an integer argument", self.name)),
            },
        }
    }

    /// Evaluate a lambda argument with `$this` bound to an item.
    fn lambda(&self, i: usize, item: &Item<'a>, index: usize) -> R<Collection<'a>> {
        self.lambda_total(i, item, index, None)
    }

    fn lambda_total(
        &self,
        i: usize,
        item: &Item<'a>,
        index: usize,
        total: Option<&Collection<'a>>,
    ) -> R<Collection<'a>> {
        let env = Env {
            ctx: self.env.ctx,
            this: Some(item),
            index: Some(index),
            total: total.or(self.env.total),
        };
        let focus = std::slice::from_ref(item);
        eval(&self.args[i], focus, &env)
    }

    /// A criterion: empty is false, a boolean is itself, anything else is an error.
    fn criterion(&self, i: usize, item: &Item<'a>, index: usize) -> R<bool> {
        // A boolean operator (`code = 'x'`, `a and b`) yields empty or one Boolean:
        // compute it directly rather than through a one-item collection.
        let e = &self.args[i];
        if is_boolean_expr(e) {
            let env = Env {
                ctx: self.env.ctx,
                this: Some(item),
                index: Some(index),
                total: self.env.total,
            };
            let focus = std::slice::from_ref(item);
            return Ok(truth(e, focus, &env)?.unwrap_or(false));
        }
        let c = self.lambda(i, item, index)?;
        match c.as_slice() {
            [] => Ok(false),
            [b] => match b.as_bool() {
                Some(v) => Ok(v),
                None => self.err(format!("{}() criteria must be boolean", self.name)),
            },
            _ => self.err(format!(
                "{}() criteria returned {} items",
                self.name,
                c.len()
            )),
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        fail(self.pos, msg)
    }
}

/// Whether `func` yields empty or a single Boolean that `boolean_fn` computes.
pub(crate) fn is_boolean_fn(func: Func) -> bool {
    matches!(func, Func::Empty | Func::Exists | Func::All | Func::Not)
}

/// `empty()`, `exists()`, `all()` and `not()` as a plain value (`None` = empty), so that
/// criteria and logical operands need not build a one-item collection.
pub(crate) fn boolean_fn<'a>(
    func: Func,
    input: &[Item<'a>],
    args: &[Expr],
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
    pos: usize,
) -> R<Option<bool>> {
    let c = Call {
        args,
        focus,
        env,
        pos,
        name: func.name(),
    };
    boolean_result(&c, func, input)
}

fn boolean_result<'a>(c: &Call<'_, '_, 'a>, func: Func, input: &[Item<'a>]) -> R<Option<bool>> {
    match func {
        Func::Empty => Ok(Some(input.is_empty())),
        Func::Exists => {
            if c.args.is_empty() {
                return Ok(Some(!input.is_empty()));
            }
            for (i, item) in input.iter().enumerate() {
                if c.criterion(0, item, i)? {
                    return Ok(Some(true));
                }
            }
            Ok(Some(false))
        }
        Func::All => {
            for (i, item) in input.iter().enumerate() {
                if !c.criterion(0, item, i)? {
                    return Ok(Some(false));
                }
            }
            Ok(Some(true))
        }
        _ => match input {
            // not()
            [] => Ok(None),
            // a single non-boolean item counts as true
            [i] => Ok(Some(!i.as_bool().unwrap_or(true))),
            _ => c.err("not() needs a single item"),
        },
    }
}

fn single<'a>(input: &[Item<'a>], c: &Call<'_, '_, 'a>) -> R<Option<Item<'a>>> {
    match input {
        [] => Ok(None),
        [i] => Ok(Some(i.system())),
        _ => c.err(format!(
            "{}() needs a single input item, got {}",
            c.name,
            input.len()
        )),
    }
}

fn boolean<'a>(b: bool) -> R<Collection<'a>> {
    Ok(vec![Item::Boolean(b)])
}

fn opt<'a>(i: Option<Item<'a>>) -> R<Collection<'a>> {
    Ok(i.into_iter().collect())
}

fn distinct<'a>(input: Collection<'a>) -> Collection<'a> {
    let mut out: Collection<'a> = Vec::with_capacity(input.len());
    for i in input {
        if !out.iter().any(|o| equals(o, &i) == Some(true)) {
            out.push(i);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn call<'a>(
    func: Func,
    input: Input<'_, 'a>,
    args: &[Expr],
    types: Option<&TypeSpec>,
    has_target: bool,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
    pos: usize,
) -> R<Collection<'a>> {
    let c = Call {
        args,
        focus,
        env,
        pos,
        name: func.name(),
    };
    use Func::*;
    match func {
        Empty | Exists | All | Not => Ok(boolean_result(&c, func, &input)?
            .map(Item::Boolean)
            .into_iter()
            .collect()),
        AllTrue | AnyTrue | AllFalse | AnyFalse => {
            let mut bools = Vec::with_capacity(input.len());
            for i in input.iter() {
                match i.as_bool() {
                    Some(b) => bools.push(b),
                    None => return c.err(format!("{}() needs booleans", c.name)),
                }
            }
            boolean(match func {
                AllTrue => bools.iter().all(|b| *b),
                AnyTrue => bools.iter().any(|b| *b),
                AllFalse => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            })
        }
        SubsetOf | SupersetOf => {
            let other = c.arg(0)?;
            let (sub, sup) = if func == SubsetOf {
                (&input[..], &other[..])
            } else {
                (&other[..], &input[..])
            };
            boolean(
                sub.iter()
                    .all(|x| sup.iter().any(|y| equals(x, y) == Some(true))),
            )
        }
        Count => Ok(vec![Item::Integer(input.len() as i64)]),
        Distinct => Ok(distinct(input.into_owned())),
        IsDistinct => {
            let n = input.len();
            boolean(distinct(input.into_owned()).len() == n)
        }
        Where => {
            // Filter in place when the input is already ours (no second collection).
            let mut out = input.into_owned();
            let mut index = 0;
            let mut err = None;
            out.retain(|item| {
                let keep = err.is_none()
                    && match c.criterion(0, item, index) {
                        Ok(k) => k,
                        Err(e) => {
                            err = Some(e);
                            false
                        }
                    };
                index += 1;
                keep
            });
            match err {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }
        Select => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(c.lambda(0, item, i)?);
            }
            Ok(out)
        }
        Repeat | RepeatAll => {
            let mut out: Collection<'a> = Vec::new();
            let mut queue = input.into_owned();
            let mut rounds = 0;
            while !queue.is_empty() {
                rounds += 1;
                if rounds > 10_000 {
                    return c.err("repeat() did not terminate");
                }
                let mut next = Vec::new();
                for (i, item) in queue.iter().enumerate() {
                    for r in c.lambda(0, item, i)? {
                        if func == RepeatAll || !out.iter().any(|o| same_item(o, &r)) {
                            out.push(r.clone());
                            next.push(r);
                        }
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        OfType => {
            let ts = types.ok_or_else(|| EvalError {
                pos,
                message: "ofType() needs a type".into(),
            })?;
            let mut out = input.into_owned();
            out.retain(|i| is_exact_type(i, ts));
            Ok(out)
        }
        Is => {
            let ts = types.ok_or_else(|| EvalError {
                pos,
                message: "is() needs a type".into(),
            })?;
            match &input[..] {
                [] => Ok(vec![]),
                [i] => boolean(is_type(i, ts)),
                _ => c.err("is() needs a single item"),
            }
        }
        As => {
            let ts = types.ok_or_else(|| EvalError {
                pos,
                message: "as() needs a type".into(),
            })?;
            if input.len() > 1 {
                return c.err("as() needs a single item");
            }
            let mut out = input.into_owned();
            out.retain(|i| is_exact_type(i, ts));
            Ok(out)
        }
        Single => match input.len() {
            0 | 1 => Ok(input.into_owned()),
            n => c.err(format!("single() found {n} items")),
        },
        First => {
            let mut out = input.into_owned();
            out.truncate(1);
            Ok(out)
        }
        Last => Ok(input.last().cloned().into_iter().collect()),
        Tail => Ok(input.iter().skip(1).cloned().collect()),
        Skip => {
            let n = c.arg_int(0)?.unwrap_or(0);
            Ok(input
                .iter()
                .skip(usize::try_from(n).unwrap_or(0))
                .cloned()
                .collect())
        }
        Take => {
            let n = c.arg_int(0)?.unwrap_or(0);
            Ok(input
                .iter()
                .take(usize::try_from(n).unwrap_or(0))
                .cloned()
                .collect())
        }
        Intersect => {
            let other = c.arg(0)?;
            let mut out: Collection<'a> = Vec::new();
            for i in input.into_owned() {
                if other.iter().any(|o| equals(o, &i) == Some(true))
                    && !out.iter().any(|o| equals(o, &i) == Some(true))
                {
                    out.push(i);
                }
            }
            Ok(out)
        }
        Exclude => {
            let other = c.arg(0)?;
            Ok(input
                .iter()
                .filter(|i| !other.iter().any(|o| equals(o, i) == Some(true)))
                .cloned()
                .collect())
        }
        Union => {
            let mut all = input.into_owned();
            all.extend(c.arg(0)?);
            Ok(distinct(all))
        }
        Combine => {
            let mut all = input.into_owned();
            all.extend(c.arg(0)?);
            Ok(all)
        }
        Iif => iif(&c, &input, has_target),
        ToBoolean | ToInteger | ToLong | ToDecimal | ToString | ToDate | ToDateTime | ToTime => {
            opt(single(&input, &c)?.and_then(|i| conversion(func, &i)))
        }
        ConvertsToBoolean | ConvertsToInteger | ConvertsToLong | ConvertsToDecimal
        | ConvertsToString | ConvertsToDate | ConvertsToDateTime | ConvertsToTime => {
            Ok(single(&input, &c)?
                .map(|i| Item::Boolean(conversion(func, &i).is_some()))
                .into_iter()
                .collect())
        }
        ToQuantity | ConvertsToQuantity => {
            let Some(raw) = input.first() else {
                return Ok(vec![]);
            };
            if input.len() > 1 {
                return c.err(format!("{}() needs a single input item", c.name));
            }
            let unit = c.arg_str(0)?;
            let mut q = to_quantity(raw);
            if let (Some(u), Some(qv)) = (&unit, &q) {
                q = if *u == *qv.unit {
                    Some(qv.clone())
                } else {
                    ucum::convert(qv.value, &qv.unit, u).map(|v| Quantity::new(v, u))
                };
            }
            if func == ToQuantity {
                opt(q.map(Item::Quantity))
            } else {
                boolean(q.is_some())
            }
        }
        IndexOf | LastIndexOf => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(sub) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            let found = if func == IndexOf {
                s.find(&*sub)
            } else {
                s.rfind(&*sub)
            };
            Ok(vec![Item::Integer(
                found.map_or(-1, |b| s[..b].chars().count() as i64),
            )])
        }
        Substring => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(start) = c.arg_int(0)? else {
                return Ok(vec![]);
            };
            let chars: Vec<char> = s.chars().collect();
            if start < 0 || start as usize >= chars.len() {
                return Ok(vec![]);
            }
            let len = match c.arg_int(1)? {
                Some(l) if l < 0 => 0,
                Some(l) => l as usize,
                None => chars.len(),
            };
            let end = (start as usize).saturating_add(len).min(chars.len());
            Ok(vec![Item::string(
                chars[start as usize..end].iter().collect::<String>(),
            )])
        }
        StartsWith | EndsWith | ContainsStr => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(sub) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            boolean(match func {
                StartsWith => s.starts_with(&*sub),
                EndsWith => s.ends_with(&*sub),
                _ => s.contains(&*sub),
            })
        }
        Upper | Lower | Trim | Length | ToChars => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            Ok(match func {
                Upper => vec![Item::string(s.to_uppercase())],
                Lower => vec![Item::string(s.to_lowercase())],
                Trim => vec![Item::string(s.trim())],
                Length => vec![Item::Integer(s.chars().count() as i64)],
                _ => s.chars().map(|ch| Item::string(ch.to_string())).collect(),
            })
        }
        Replace => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let (Some(pat), Some(rep)) = (c.arg_str(0)?, c.arg_str(1)?) else {
                return Ok(vec![]);
            };
            if pat.is_empty() {
                // insert the replacement around every character
                let mut out = rep.to_string();
                for ch in s.chars() {
                    out.push(ch);
                    out.push_str(&rep);
                }
                return Ok(vec![Item::string(out)]);
            }
            Ok(vec![Item::string(s.replace(&*pat, &rep))])
        }
        Matches | MatchesFull | ReplaceMatches => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(pat) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            let flags_arg = if func == ReplaceMatches { 2 } else { 1 };
            let flags = c.arg_str(flags_arg)?.unwrap_or_default();
            let mut prefix = String::new();
            for f in flags.chars() {
                match f {
                    'i' | 'm' | 's' | 'x' => prefix.push(f),
                    _ => return c.err(format!("unknown regex flag '{f}'")),
                }
            }
            let body = if func == MatchesFull {
                format!("^(?:{pat})$")
            } else {
                pat.into_owned()
            };
            // FHIRPath regexes are single-line by default: '.' matches newlines
            let full = if prefix.is_empty() {
                format!("(?s){body}")
            } else {
                format!("(?s{prefix}){body}")
            };
            let invalid = |e: regex::Error| EvalError {
                pos,
                message: format!("invalid regex: {e}"),
            };
            // Compile (or find) the regex before evaluating the replacement, so an invalid
            // pattern is the error reported, as before the cache.
            with_regex(&full, |_| ()).map_err(invalid)?;
            if func == ReplaceMatches {
                let Some(rep) = c.arg_str(1)? else {
                    return Ok(vec![]);
                };
                if body.is_empty() {
                    return Ok(vec![Item::string(s.to_string())]);
                }
                let out = with_regex(&full, |re| re.replace_all(&s, &*rep).into_owned())
                    .map_err(invalid)?;
                return Ok(vec![Item::string(out)]);
            }
            boolean(with_regex(&full, |re| re.is_match(&s)).map_err(invalid)?)
        }
        Split => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(sep) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            Ok(s.split(&*sep).map(Item::string).collect())
        }
        Join => {
            let sep = c.arg_str(0)?.unwrap_or_default();
            let mut parts = Vec::with_capacity(input.len());
            for i in input.iter() {
                parts.push(string_of(i, c.name, pos)?.to_string());
            }
            Ok(vec![Item::string(parts.join(&sep))])
        }
        Encode | Decode | Escape | Unescape => {
            let Some(s) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let s = string_of(&s, c.name, pos)?;
            let Some(fmt) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            opt(codec(func, &s, &fmt).map(Item::string))
        }
        Abs | Ceiling | Floor | Truncate | Exp | Ln | Sqrt | Round | Log | Power => {
            math(func, &input, &c)
        }
        Children => {
            let mut out = Vec::new();
            for i in input.iter() {
                if let Item::Node(n) = i {
                    all_children(n, &mut out);
                }
            }
            Ok(out)
        }
        Descendants => {
            let mut out = Vec::new();
            let mut frontier = input.into_owned();
            while !frontier.is_empty() {
                let mut next = Vec::new();
                for i in &frontier {
                    if let Item::Node(n) = i {
                        all_children(n, &mut next);
                    }
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            Ok(out)
        }
        Trace => {
            let label = c.arg_str(0)?.unwrap_or_default();
            if let Some(sink) = &env.ctx.trace {
                let shown = if args.len() > 1 {
                    let mut out = Vec::new();
                    for (i, item) in input.iter().enumerate() {
                        out.extend(c.lambda(1, item, i)?);
                    }
                    out
                } else {
                    input.to_vec()
                };
                sink.borrow_mut().push((
                    label.into_owned(),
                    shown.iter().map(Item::to_json).collect(),
                ));
            }
            Ok(input.into_owned())
        }
        Now | Today | TimeOfDay => {
            let now = now_utc();
            Ok(vec![match func {
                Now => Item::DateTime(now),
                Today => Item::Date(DateTime {
                    precision: crate::Precision::Day,
                    tz: None,
                    hour: 0,
                    minute: 0,
                    second: 0,
                    millis: 0,
                    ..now
                }),
                _ => Item::Time(Time {
                    hour: now.hour,
                    minute: now.minute,
                    second: now.second,
                    millis: now.millis,
                    precision: crate::Precision::Millisecond,
                }),
            }])
        }
        Aggregate => {
            let mut total = c.arg(1)?;
            for (i, item) in input.iter().enumerate() {
                total = c.lambda_total(0, item, i, Some(&total))?;
            }
            Ok(total)
        }
        Type => Ok(input
            .iter()
            .map(|i| {
                let (namespace, name) = i.type_info();
                Item::Type { namespace, name }
            })
            .collect()),
        Sort => sort(&c, input.into_owned()),
        LowBoundary | HighBoundary => {
            let Some(v) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            let digits = c.arg_int(0)?;
            opt(boundary(&v, func == HighBoundary, digits))
        }
        Precision => {
            let Some(v) = single(&input, &c)? else {
                return Ok(vec![]);
            };
            Ok(match v {
                Item::Decimal(d) => vec![Item::Integer(i64::from(d.scale()))],
                Item::Integer(_) | Item::Long(_) => vec![Item::Integer(0)],
                Item::Date(d) | Item::DateTime(d) => vec![Item::Integer(d.precision_digits())],
                Item::Time(t) => vec![Item::Integer(t.precision_digits())],
                Item::String(s) => vec![Item::Integer(s.chars().count() as i64)],
                _ => vec![],
            })
        }
        Comparable => {
            let Some(a) = input.first().and_then(Item::as_quantity) else {
                return Ok(vec![]);
            };
            let Some(b) = c.arg1(0)?.and_then(|b| b.as_quantity()) else {
                return Ok(vec![]);
            };
            let ok = match (
                ucum::to_canonical(a.value, &a.unit),
                ucum::to_canonical(b.value, &b.unit),
            ) {
                (Some((_, ca)), Some((_, cb))) => {
                    ca.dims == cb.dims && ca.arbitrary == cb.arbitrary
                }
                _ => a.unit == b.unit,
            };
            boolean(ok)
        }
        Extension => {
            let Some(url) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for i in input.iter() {
                if let Item::Node(n) = i {
                    let mut exts = Vec::new();
                    children_named(n, "extension", &mut exts);
                    out.extend(exts.into_iter().filter(|e| {
                        match e {
                            Item::Node(en) => {
                                en.object()
                                    .and_then(|o| o.get("url"))
                                    .and_then(Value::as_str)
                                    == Some(&*url)
                            }
                            _ => false,
                        }
                    }));
                }
            }
            Ok(out)
        }
        HasValue => {
            boolean(matches!(&input[..], [Item::Node(n)] if n.is_primitive() && n.value.is_some()))
        }
        GetValue => match &input[..] {
            [Item::Node(n)] if n.is_primitive() => opt(n.to_system()),
            _ => Ok(vec![]),
        },
        Resolve => {
            let mut out = Vec::new();
            for i in input.iter() {
                if let Some(r) = resolve(i, env) {
                    out.push(r);
                }
            }
            Ok(out)
        }
        MemberOf => {
            let Some(url) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            let Some(vs) = Model::r4().value_set(&url) else {
                return Ok(vec![]);
            };
            let Some(item) = input.first() else {
                return Ok(vec![]);
            };
            let codes = codings(item);
            boolean(codes.iter().any(|(sys, code)| {
                match sys {
                    Some(s) => vs
                        .get(s.as_str())
                        .is_some_and(|cs| cs.iter().any(|x| x == code)),
                    None => vs.values().any(|cs| cs.iter().any(|x| x == code)),
                }
            }))
        }
        ConformsTo => {
            let Some(url) = c.arg_str(0)? else {
                return Ok(vec![]);
            };
            let Some(Item::Node(n)) = input.first() else {
                return Ok(vec![]);
            };
            let Some(base) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") else {
                return c.err(format!("conformsTo(): profile '{url}' is not known"));
            };
            if Model::r4().type_def(base).is_none() {
                return c.err(format!("conformsTo(): profile '{url}' is not known"));
            }
            boolean(Model::r4().is_subtype(n.type_name(), base))
        }
        HtmlChecks => boolean(
            input
                .iter()
                .all(|i| i.as_str().is_some_and(|s| html_is_safe(&s))),
        ),
        CheckModifiers => {
            let allowed: Vec<String> = c
                .arg(0)?
                .iter()
                .filter_map(|i| i.as_str().map(|s| s.to_string()))
                .collect();
            for i in input.iter() {
                if let Item::Node(n) = i {
                    let mut mods = Vec::new();
                    children_named(n, "modifierExtension", &mut mods);
                    for m in mods {
                        let url = match &m {
                            Item::Node(mn) => mn
                                .object()
                                .and_then(|o| o.get("url"))
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                            _ => "",
                        };
                        if !allowed.iter().any(|a| a == url) {
                            return c.err(format!("unknown modifier extension '{url}'"));
                        }
                    }
                }
            }
            Ok(input.into_owned())
        }
        GetResourceKey => Ok(input
            .iter()
            .filter_map(|i| match i {
                Item::Node(n) if n.is_resource() => n
                    .object()
                    .and_then(|o| o.get("id"))
                    .and_then(Value::as_str)
                    .map(Item::string),
                _ => None,
            })
            .collect()),
        GetReferenceKey => {
            let want = types
                .map(|t| t.name.clone())
                .or(match args.first().map(|a| &a.kind) {
                    Some(ExprKind::Ident(n)) => Some(n.clone()),
                    _ => None,
                });
            Ok(input
                .iter()
                .filter_map(|i| {
                    let Item::Node(n) = i else { return None };
                    let r = n.object()?.get("reference")?.as_str()?;
                    let mut parts = r.trim_end_matches('/').rsplit('/');
                    let mut id = parts.next()?;
                    let mut ty = parts.next()?;
                    if ty == "_history" {
                        id = parts.next()?;
                        ty = parts.next()?;
                    }
                    if want.as_deref().is_some_and(|w| w != ty) {
                        return None;
                    }
                    Some(Item::string(id))
                })
                .collect())
        }
    }
}

/// Identity for `repeat`: the same JSON node, or equal values for System items.
fn same_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a, b) {
        (Item::Node(x), Item::Node(y)) => match (x.value, y.value) {
            (Some(p), Some(q)) => std::ptr::eq(p, q),
            _ => false,
        },
        _ => equals(a, b) == Some(true),
    }
}

/// How many compiled regexes a thread keeps; past that the cache starts over (patterns
/// usually come from a fixed set of expressions, so this is rarely reached).
const REGEX_CACHE_MAX: usize = 256;

thread_local! {
    /// Compiled regexes by full pattern. Compiling a regex costs far more than matching a
    /// short FHIR string with it, and expressions are evaluated many times with the same
    /// patterns. Per thread, so no locking; `Regex` is used in place rather than cloned
    /// (a clone would start with an empty match cache).
    static REGEXES: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Run `f` with the compiled regex for `pattern`, compiling it on first use.
fn with_regex<T>(pattern: &str, f: impl FnOnce(&regex::Regex) -> T) -> Result<T, regex::Error> {
    REGEXES.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Ok(f(re));
        }
        let re = regex::Regex::new(pattern)?;
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        let out = f(&re);
        cache.insert(pattern.to_string(), re);
        Ok(out)
    })
}

fn iif<'a>(c: &Call<'_, '_, 'a>, input: &[Item<'a>], has_target: bool) -> R<Collection<'a>> {
    if has_target && input.len() > 1 {
        return c.err("iif() needs at most one input item");
    }
    // `x.iif(...)` binds $this to x; a bare `iif(...)` keeps the caller's $this and $index
    let this = if has_target {
        input.first().cloned()
    } else {
        None
    };
    let ev = |i: usize| -> R<Collection<'a>> {
        match &this {
            Some(t) => c.lambda(i, t, 0),
            None => c.arg(i),
        }
    };
    let crit = ev(0)?;
    let cond = match crit.as_slice() {
        [] => false,
        [b] => match b.as_bool() {
            Some(v) => v,
            None => return c.err("iif() criterion must be a boolean"),
        },
        _ => return c.err("iif() criterion must be a single boolean"),
    };
    if cond {
        ev(1)
    } else if c.args.len() > 2 {
        ev(2)
    } else {
        Ok(vec![])
    }
}

fn sort<'a>(c: &Call<'_, '_, 'a>, input: Collection<'a>) -> R<Collection<'a>> {
    if c.args.is_empty() {
        let mut err = None;
        let mut v = input;
        v.sort_by(|a, b| match compare(a, b, c.pos) {
            Ok(o) => o.unwrap_or(Ordering::Equal),
            Err(e) => {
                err.get_or_insert(e);
                Ordering::Equal
            }
        });
        return err.map_or(Ok(v), Err);
    }
    // keys: (descending?, values per item)
    let mut keyed: Vec<(Vec<Option<Item<'a>>>, Item<'a>)> = Vec::with_capacity(input.len());
    // a key written `-expr` sorts descending on expr (strings cannot be negated)
    let key_exprs: Vec<(bool, &Expr)> = c
        .args
        .iter()
        .map(|a| match &a.kind {
            ExprKind::Unary(UnOp::Neg, inner) => (true, &**inner),
            _ => (false, a),
        })
        .collect();
    let desc: Vec<bool> = key_exprs.iter().map(|(d, _)| *d).collect();
    for (i, item) in input.iter().enumerate() {
        let mut keys = Vec::with_capacity(c.args.len());
        for (_, e) in &key_exprs {
            let env = Env {
                ctx: c.env.ctx,
                this: Some(item),
                index: Some(i),
                total: None,
            };
            let v = eval(e, std::slice::from_ref(item), &env)?;
            keys.push(v.into_iter().next());
        }
        keyed.push((keys, item.clone()));
    }
    let mut err = None;
    keyed.sort_by(|(ka, _), (kb, _)| {
        for (k, (a, b)) in ka.iter().zip(kb).enumerate() {
            let o = match (a, b) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => match compare(x, y, c.pos) {
                    Ok(o) => o.unwrap_or(Ordering::Equal),
                    Err(e) => {
                        err.get_or_insert(e);
                        Ordering::Equal
                    }
                },
            };
            let o = if desc[k] { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    match err {
        Some(e) => Err(e),
        None => Ok(keyed.into_iter().map(|(_, i)| i).collect()),
    }
}

/// The conversion behind `toX()` and `convertsToX()`; `None` when not convertible.
fn conversion<'a>(func: Func, i: &Item<'a>) -> Option<Item<'a>> {
    use Func::*;
    match func {
        ToBoolean | ConvertsToBoolean => to_boolean(i).map(Item::Boolean),
        ToInteger | ConvertsToInteger => to_integer(i).map(Item::Integer),
        ToLong | ConvertsToLong => to_integer_wide(i).map(Item::Long),
        ToDecimal | ConvertsToDecimal => to_decimal(i).map(Item::Decimal),
        ToString | ConvertsToString => to_string(i).map(Item::string),
        ToDate | ConvertsToDate => to_date(i).map(Item::Date),
        ToDateTime | ConvertsToDateTime => to_datetime(i).map(Item::DateTime),
        ToTime | ConvertsToTime => to_time(i).map(Item::Time),
        _ => None,
    }
}

fn to_boolean(i: &Item<'_>) -> Option<bool> {
    match i {
        Item::Boolean(b) => Some(*b),
        Item::Integer(1) | Item::Long(1) => Some(true),
        Item::Integer(0) | Item::Long(0) => Some(false),
        Item::Decimal(d) if *d == Decimal::ONE => Some(true),
        Item::Decimal(d) if d.is_zero() => Some(false),
        Item::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_integer_wide(i: &Item<'_>) -> Option<i64> {
    match i {
        Item::Integer(v) | Item::Long(v) => Some(*v),
        Item::Boolean(b) => Some(i64::from(*b)),
        Item::String(s) => {
            let t = s.strip_prefix(['+', '-']).unwrap_or(s);
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

fn to_integer(i: &Item<'_>) -> Option<i64> {
    to_integer_wide(i).filter(|v| i32::try_from(*v).is_ok())
}

fn to_decimal(i: &Item<'_>) -> Option<Decimal> {
    match i {
        Item::Decimal(d) => Some(*d),
        Item::Integer(v) | Item::Long(v) => Some(Decimal::from(*v)),
        Item::Boolean(b) => Some(if *b { Decimal::ONE } else { Decimal::ZERO }),
        Item::String(s) => {
            let t = s.strip_prefix(['+', '-']).unwrap_or(s);
            let mut parts = t.splitn(2, '.');
            let int = parts.next()?;
            let frac = parts.next();
            if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if let Some(f) = frac {
                if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            parse_decimal(s)
        }
        _ => None,
    }
}

fn to_string(i: &Item<'_>) -> Option<String> {
    Some(match i {
        Item::Node(_) | Item::Type { .. } => return None,
        other => other.to_string(),
    })
}

fn to_date(i: &Item<'_>) -> Option<DateTime> {
    match i {
        Item::Date(d) => Some(*d),
        Item::DateTime(d) => Some(DateTime {
            precision: d.precision.min(crate::Precision::Day),
            tz: None,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            ..*d
        }),
        Item::String(s) => DateTime::parse(s, false),
        _ => None,
    }
}

fn to_datetime(i: &Item<'_>) -> Option<DateTime> {
    match i {
        Item::Date(d) | Item::DateTime(d) => Some(*d),
        Item::String(s) => DateTime::parse(s, true),
        _ => None,
    }
}

fn to_time(i: &Item<'_>) -> Option<Time> {
    match i {
        Item::Time(t) => Some(*t),
        Item::String(s) => Time::parse(s.strip_prefix('T').unwrap_or(s)),
        _ => None,
    }
}

fn to_quantity(i: &Item<'_>) -> Option<Quantity> {
    if let Some(q) = i.as_quantity() {
        return Some(q);
    }
    match i.system() {
        Item::Integer(v) | Item::Long(v) => Some(Quantity::new(Decimal::from(v), "1")),
        Item::Decimal(d) => Some(Quantity::new(d, "1")),
        Item::Boolean(b) => Some(Quantity::new(
            if b { Decimal::ONE } else { Decimal::ZERO },
            "1",
        )),
        Item::String(s) => parse_quantity_string(&s),
        _ => None,
    }
}

/// `"10 'mg'"`, `"4 days"`, `"1.5"`.
fn parse_quantity_string(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find([' ', '\'']) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let value = to_decimal(&Item::string(num))?;
    if rest.is_empty() {
        return Some(Quantity::new(value, "1"));
    }
    if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return ucum::is_valid(u).then(|| Quantity::new(value, u));
    }
    crate::value::is_calendar_keyword(rest).then(|| Quantity::new(value, rest))
}

fn codec(func: Func, s: &str, fmt: &str) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE;
    match (func, fmt) {
        (Func::Encode, "base64") => Some(b64.encode(s)),
        (Func::Encode, "urlbase64") => Some(url.encode(s)),
        (Func::Encode, "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        (Func::Decode, "base64") => b64.decode(s).ok().and_then(|v| String::from_utf8(v).ok()),
        (Func::Decode, "urlbase64") => url.decode(s).ok().and_then(|v| String::from_utf8(v).ok()),
        (Func::Decode, "hex") => {
            if !s.len().is_multiple_of(2) {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect();
            String::from_utf8(bytes?).ok()
        }
        (Func::Escape, "html") => Some(
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        (Func::Unescape, "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        (Func::Escape, "json") => {
            let quoted = serde_json::to_string(s).ok()?;
            Some(quoted[1..quoted.len() - 1].to_string())
        }
        (Func::Unescape, "json") => unescape_json(s),
        _ => None,
    }
}

/// Undo JSON string escapes (`\"`, `\\`, `\n`, `\uXXXX`, ...); other text is kept.
fn unescape_json(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn math<'a>(func: Func, input: &[Item<'a>], c: &Call<'_, '_, 'a>) -> R<Collection<'a>> {
    let Some(v) = single(input, c)? else {
        return Ok(vec![]);
    };
    if let Item::Quantity(q) = &v {
        if func == Func::Abs {
            return Ok(vec![Item::Quantity(Quantity {
                value: q.value.abs(),
                unit: q.unit.clone(),
            })]);
        }
    }
    let (d, is_int) = match &v {
        Item::Integer(i) | Item::Long(i) => (Decimal::from(*i), true),
        Item::Decimal(d) => (*d, false),
        other => {
            return c.err(format!(
                "{}() needs a number, got {}",
                c.name,
                other.type_info().1
            ))
        }
    };
    let int_out =
        |d: Decimal| -> Collection<'a> { d.to_i64().map(Item::Integer).into_iter().collect() };
    let from_f64 = |f: f64| -> Collection<'a> {
        if f.is_finite() {
            Decimal::from_f64(f)
                .map(|d| Item::Decimal(d.normalize()))
                .into_iter()
                .collect()
        } else {
            vec![]
        }
    };
    let f = d.to_f64().unwrap_or(f64::NAN);
    Ok(match func {
        Func::Abs => {
            if is_int {
                int_out(d.abs())
            } else {
                vec![Item::Decimal(d.abs())]
            }
        }
        Func::Ceiling => int_out(d.ceil()),
        Func::Floor => int_out(d.floor()),
        Func::Truncate => int_out(d.trunc()),
        Func::Exp => from_f64(f.exp()),
        Func::Ln => from_f64(f.ln()),
        Func::Sqrt => {
            if f < 0.0 {
                vec![]
            } else {
                from_f64(f.sqrt())
            }
        }
        Func::Round => {
            let p = c.arg_int(0)?.unwrap_or(0);
            if p < 0 {
                return c.err("round() precision must be >= 0");
            }
            vec![Item::Decimal(d.round_dp_with_strategy(
                p as u32,
                RoundingStrategy::MidpointAwayFromZero,
            ))]
        }
        Func::Log => {
            let Some(base) = c.arg1(0)? else {
                return Ok(vec![]);
            };
            let b = base.system();
            let bf = match &b {
                Item::Integer(i) | Item::Long(i) => *i as f64,
                Item::Decimal(x) => x.to_f64().unwrap_or(f64::NAN),
                _ => return c.err("log() base must be a number"),
            };
            from_f64(f.ln() / bf.ln())
        }
        Func::Power => {
            let Some(e) = c.arg1(0)? else {
                return Ok(vec![]);
            };
            match (e.system(), is_int) {
                (Item::Integer(x), true) if x >= 0 => {
                    let base = d.to_i64().unwrap_or(0);
                    match u32::try_from(x).ok().and_then(|x| base.checked_pow(x)) {
                        Some(r) => vec![Item::Integer(r)],
                        None => vec![],
                    }
                }
                (Item::Integer(x) | Item::Long(x), _) => from_f64(f.powf(x as f64)),
                (Item::Decimal(x), _) => from_f64(f.powf(x.to_f64().unwrap_or(f64::NAN))),
                _ => return c.err("power() exponent must be a number"),
            }
        }
        _ => vec![],
    })
}

/// FHIRPath `lowBoundary`/`highBoundary` for decimals, quantities and dates.
fn boundary<'a>(v: &Item<'a>, high: bool, digits: Option<i64>) -> Option<Item<'a>> {
    match v {
        Item::Integer(i) | Item::Long(i) => {
            decimal_boundary(Decimal::from(*i), high, digits).map(Item::Decimal)
        }
        Item::Decimal(d) => decimal_boundary(*d, high, digits).map(Item::Decimal),
        Item::Quantity(q) => decimal_boundary(q.value, high, digits).map(|value| {
            Item::Quantity(Quantity {
                value,
                unit: q.unit.clone(),
            })
        }),
        Item::Date(d) => d.boundary(high, digits, true).map(Item::Date),
        Item::DateTime(d) => {
            // an hour-only time is read as hh:00 (FHIR has no hour-precision times)
            let mut d = *d;
            if d.precision == crate::Precision::Hour {
                d.precision = crate::Precision::Minute;
            }
            d.boundary(high, digits, false).map(|r| {
                if r.precision <= crate::Precision::Day {
                    Item::DateTime(DateTime { tz: None, ..r })
                } else {
                    Item::DateTime(r)
                }
            })
        }
        Item::Time(t) => t.boundary(high, digits).map(Item::Time),
        _ => None,
    }
}

fn decimal_boundary(d: Decimal, high: bool, digits: Option<i64>) -> Option<Decimal> {
    let p = digits.unwrap_or(8);
    if !(0..=28).contains(&p) {
        return None;
    }
    let p = p as u32;
    let scale = d.scale();
    // the value stands for [d - half a unit of its last digit, d + half a unit)
    let half = Decimal::new(5, scale + 1);
    let b = if high {
        d.checked_add(half)?
    } else {
        d.checked_sub(half)?
    };
    if p > scale {
        let mut r = b;
        r.rescale(p);
        return Some(r);
    }
    // values smaller than the requested precision collapse to zero
    if b.abs() < Decimal::new(1, p) {
        let mut z = Decimal::ZERO;
        z.rescale(p);
        return Some(z);
    }
    let mut r = if high {
        b.round_dp_with_strategy(p, RoundingStrategy::ToPositiveInfinity)
    } else {
        b.round_dp_with_strategy(p, RoundingStrategy::ToNegativeInfinity)
    };
    r.rescale(p);
    Some(r)
}

/// `Reference.resolve()`: contained resources (`#id`), Bundle entries (by fullUrl or
/// type/id), and — when the context asks for it — a typed stand-in for references that
/// cannot be resolved, so that `resolve() is Patient` works in search indexing.
fn resolve<'a>(item: &Item<'a>, env: &Env<'_, 'a>) -> Option<Item<'a>> {
    let reference = match item {
        Item::Node(n) => match n.object() {
            Some(o) => o.get("reference").and_then(Value::as_str)?,
            None => n.value.and_then(Value::as_str)?, // canonical / uri
        },
        // only strings borrowed from the input can be resolved to input nodes
        Item::String(crate::value::Str::Borrowed(b)) => b,
        _ => return None,
    };
    let ctx = env.ctx;
    let resource = |i: &Option<Item<'a>>| match i {
        Some(Item::Node(n)) => n.value,
        _ => None,
    };
    if let Some(id) = reference.strip_prefix('#') {
        for container in [resource(&ctx.resource), resource(&ctx.root_resource)]
            .into_iter()
            .flatten()
        {
            if let Some(Value::Array(cs)) = container.get("contained") {
                if let Some(found) = cs
                    .iter()
                    .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                {
                    return Some(Item::Node(Node::resource(found)));
                }
            }
            if id.is_empty() {
                return Some(Item::Node(Node::resource(container)));
            }
        }
        return None;
    }
    if let Some(root) = resource(&ctx.root_resource) {
        if let Some(Value::Array(entries)) = root.get("entry") {
            let tail = reference.rsplitn(3, '/').collect::<Vec<_>>();
            for e in entries {
                let full = e.get("fullUrl").and_then(Value::as_str);
                let r = e.get("resource");
                let matches = full == Some(reference)
                    || (tail.len() >= 2
                        && r.is_some_and(|r| {
                            r.get("resourceType").and_then(Value::as_str) == Some(tail[1])
                                && r.get("id").and_then(Value::as_str) == Some(tail[0])
                        })
                        && full.is_none_or(|f| f.ends_with(reference)));
                if matches {
                    if let Some(r) = r {
                        return Some(Item::Node(Node::resource(r)));
                    }
                }
            }
        }
    }
    if ctx.resolve_by_type {
        let Item::Node(n) = item else { return None };
        let path = reference.split(['?', '#']).next().unwrap_or(reference);
        let mut parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
            parts.truncate(parts.len() - 2);
        }
        if parts.len() >= 2 {
            let ty = parts[parts.len() - 2];
            if let Some(id) = Model::r4()
                .type_id(ty)
                .filter(|_| Model::r4().is_resource_type(ty))
            {
                return Some(Item::Node(Node {
                    value: n.value,
                    ext: None,
                    ty: crate::NodeType::Known(id),
                }));
            }
        }
    }
    None
}

fn codings(item: &Item<'_>) -> Vec<(Option<String>, String)> {
    match item {
        Item::Node(n) => {
            let Some(obj) = n.object() else {
                return n
                    .to_system()
                    .and_then(|s| s.as_str().map(|c| vec![(None, c.to_string())]))
                    .unwrap_or_default();
            };
            let code_of = |o: &serde_json::Map<String, Value>| -> Option<(Option<String>, String)> {
                Some((
                    o.get("system").and_then(Value::as_str).map(String::from),
                    o.get("code")?.as_str()?.to_string(),
                ))
            };
            if let Some(Value::Array(cs)) = obj.get("coding") {
                cs.iter()
                    .filter_map(|c| c.as_object().and_then(code_of))
                    .collect()
            } else {
                code_of(obj).into_iter().collect()
            }
        }
        Item::String(s) => vec![(None, s.to_string())],
        _ => vec![],
    }
}

/// Narrative safety (FHIR txt-1/txt-2): XHTML only, no scripts, forms, event handlers or
/// external content frames.
fn html_is_safe(div: &str) -> bool {
    let lower = div.to_ascii_lowercase();
    let trimmed = lower.trim_start();
    if !trimmed.starts_with("<div") {
        return false;
    }
    const FORBIDDEN: &[&str] = &[
        "<script",
        "<form",
        "<iframe",
        "<object",
        "<embed",
        "<applet",
        "<base",
        "<link",
        "<meta",
        "<style",
        "javascript:",
    ];
    if FORBIDDEN.iter().any(|f| lower.contains(f)) {
        return false;
    }
    // event handler attributes: on...= inside a tag
    let mut in_tag = false;
    let b = lower.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            b' ' | b'\t' | b'\n' if in_tag && lower[i + 1..].starts_with("on") => {
                let rest = &lower[i + 3..];
                let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                if name_len > 0 && rest[name_len..].trim_start().starts_with('=') {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

fn now_utc() -> DateTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    DateTime::from_epoch_millis(ms, crate::Precision::Millisecond, Some(0))
}
