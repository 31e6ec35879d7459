//! JSONPath with the selection rules of Json.NET's `SelectTokens`, which the reference uses:
//! dot and bracket fields, `*`, indexes, unions, slices, recursive descent `..`, filters
//! `[?(...)]` with `@`/`$` paths (`@name` is `@.name`), `== != < <= > >= =~ /re/`, `&&`, `||`
//! and parentheses. `..[?(...)]` tests the current node itself and all its descendants, in
//! document order, so `$..[?(@Body.x)]` can select the envelope.
//!
//! One deliberate difference: a (non-recursive) filter applied to an object tests the
//! object's member values; Json.NET tests its property tokens, which never match `@.x`.

use serde_json::Value;

/// A compiled JSONPath expression.
#[derive(Debug, Clone)]
pub struct JsonPath {
    steps: Vec<Step>,
    /// Every step is a plain field (`$.a.b`): evaluated without allocating.
    plain: bool,
}

#[derive(Debug, Clone)]
enum Step {
    Field(String),
    Fields(Vec<String>),
    Wildcard,
    Indexes(Vec<i64>),
    Slice(Option<i64>, Option<i64>, i64),
    Filter(Box<Expr>),
    ScanField(Vec<String>),
    ScanAll,
    ScanFilter(Box<Expr>),
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Exists(Operand),
    Cmp(Operand, Op, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
}

#[derive(Debug, Clone)]
enum Operand {
    Current(Vec<Step>),
    Root(Vec<Step>),
    Lit(Value),
    Regex(regex::Regex),
}

/// A JSONPath syntax error with the character offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSONPath error at offset {offset}: {message}")]
pub struct JsonPathError {
    /// 0-based character offset in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

struct Parser {
    c: Vec<char>,
    i: usize,
}

fn is_name_char(c: char, in_filter: bool) -> bool {
    !matches!(c, '.' | '[' | ']' | '(' | ')')
        && !(in_filter
            && (c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '&' | '|' | ',')))
}

impl Parser {
    fn err<T>(&self, m: impl Into<String>) -> Result<T, JsonPathError> {
        Err(JsonPathError {
            offset: self.i,
            message: m.into(),
        })
    }
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }
    fn peek_at(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }
    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.c.len() >= self.i + n && self.c[self.i..self.i + n].iter().copied().eq(s.chars()) {
            self.i += n;
            true
        } else {
            false
        }
    }
    fn name(&mut self, in_filter: bool) -> String {
        let start = self.i;
        while self.peek().is_some_and(|c| is_name_char(c, in_filter)) {
            self.i += 1;
        }
        self.c[start..self.i].iter().collect()
    }

    /// Steps until the end (top level) or until a character that ends a filter operand.
    fn steps(
        &mut self,
        in_filter: bool,
        mut implicit_first: bool,
    ) -> Result<Vec<Step>, JsonPathError> {
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    implicit_first = false;
                    if self.peek_at(1) == Some('.') {
                        self.i += 2;
                        match self.peek() {
                            Some('[') => {
                                let s = self.bracket(true)?;
                                steps.push(s);
                            }
                            Some('*') => {
                                self.i += 1;
                                steps.push(Step::ScanAll);
                            }
                            _ => {
                                let n = self.name(in_filter);
                                if n.is_empty() {
                                    return self.err("expected a name after '..'");
                                }
                                steps.push(Step::ScanField(vec![n]));
                            }
                        }
                    } else {
                        self.i += 1;
                        if self.peek() == Some('*') {
                            self.i += 1;
                            steps.push(Step::Wildcard);
                        } else if self.peek() == Some('[') {
                            // Json.NET accepts `a.[0]`.
                            steps.push(self.bracket(false)?);
                        } else {
                            let n = self.name(in_filter);
                            if n.is_empty() {
                                return self.err("expected a name after '.'");
                            }
                            steps.push(Step::Field(n));
                        }
                    }
                }
                Some('[') => {
                    implicit_first = false;
                    steps.push(self.bracket(false)?)
                }
                Some(c) if implicit_first && is_name_char(c, in_filter) => {
                    implicit_first = false;
                    let n = self.name(in_filter);
                    steps.push(Step::Field(n));
                }
                Some(c) if in_filter && !is_name_char(c, true) => break,
                Some(c) => return self.err(format!("unexpected character '{c}'")),
            }
        }
        Ok(steps)
    }

    fn bracket(&mut self, scan: bool) -> Result<Step, JsonPathError> {
        self.i += 1; // '['
        self.ws();
        let step = if self.eat("?(") {
            let e = self.or()?;
            self.ws();
            if !self.eat(")") {
                return self.err("expected ')' closing the filter");
            }
            if scan {
                Step::ScanFilter(Box::new(e))
            } else {
                Step::Filter(Box::new(e))
            }
        } else if self.peek() == Some('(') {
            return self.err("script expressions '(...)' are not supported");
        } else if self.peek() == Some('*') {
            self.i += 1;
            if scan {
                Step::ScanAll
            } else {
                Step::Wildcard
            }
        } else if matches!(self.peek(), Some('\'' | '"')) {
            let mut names = vec![self.quoted()?];
            self.ws();
            while self.eat(",") {
                self.ws();
                names.push(self.quoted()?);
                self.ws();
            }
            if scan {
                Step::ScanField(names)
            } else if names.len() == 1 {
                Step::Field(names.remove(0))
            } else {
                Step::Fields(names)
            }
        } else {
            // Indexes, unions of indexes, or a slice.
            let first = self.int()?;
            self.ws();
            if self.peek() == Some(':') {
                self.i += 1;
                let end = self.int()?;
                let mut step = 1;
                if self.eat(":") {
                    step = self.int()?.unwrap_or(1);
                    if step == 0 {
                        return self.err("slice step cannot be 0");
                    }
                }
                Step::Slice(first, end, step)
            } else {
                let Some(first) = first else {
                    return self.err("expected an index, a quoted name, '*' or '?('");
                };
                let mut idx = vec![first];
                while self.eat(",") {
                    self.ws();
                    match self.int()? {
                        Some(n) => idx.push(n),
                        None => return self.err("expected an index"),
                    }
                    self.ws();
                }
                Step::Indexes(idx)
            }
        };
        self.ws();
        if !self.eat("]") {
            return self.err("expected ']'");
        }
        Ok(step)
    }

    fn int(&mut self) -> Result<Option<i64>, JsonPathError> {
        self.ws();
        let start = self.i;
        if self.peek() == Some('-') {
            self.i += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let t: String = self.c[start..self.i].iter().collect();
        self.ws();
        if t.is_empty() {
            return Ok(None);
        }
        match t.parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => self.err(format!("bad index '{t}'")),
        }
    }

    fn quoted(&mut self) -> Result<String, JsonPathError> {
        let Some(q) = self.peek() else {
            return self.err("expected a quoted string");
        };
        if q != '\'' && q != '"' {
            return self.err("expected a quoted string");
        }
        self.i += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some('\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some(c) => s.push(c),
                        None => return self.err("unterminated string"),
                    }
                    self.i += 1;
                }
                Some(c) if c == q => {
                    self.i += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn or(&mut self) -> Result<Expr, JsonPathError> {
        let mut l = self.and()?;
        loop {
            self.ws();
            if self.eat("||") {
                let r = self.and()?;
                l = Expr::Or(Box::new(l), Box::new(r));
            } else {
                return Ok(l);
            }
        }
    }
    fn and(&mut self) -> Result<Expr, JsonPathError> {
        let mut l = self.primary()?;
        loop {
            self.ws();
            if self.eat("&&") {
                let r = self.primary()?;
                l = Expr::And(Box::new(l), Box::new(r));
            } else {
                return Ok(l);
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, JsonPathError> {
        self.ws();
        if self.eat("(") {
            let e = self.or()?;
            self.ws();
            if !self.eat(")") {
                return self.err("expected ')'");
            }
            return Ok(e);
        }
        let left = self.operand()?;
        self.ws();
        let op = if self.eat("==") {
            Op::Eq
        } else if self.eat("!=") || self.eat("<>") {
            Op::Ne
        } else if self.eat("<=") {
            Op::Le
        } else if self.eat(">=") {
            Op::Ge
        } else if self.eat("<") {
            Op::Lt
        } else if self.eat(">") {
            Op::Gt
        } else if self.eat("=~") {
            Op::Match
        } else {
            return match left {
                Operand::Current(_) | Operand::Root(_) => Ok(Expr::Exists(left)),
                _ => self.err("a filter needs a path or a comparison"),
            };
        };
        self.ws();
        let right = self.operand()?;
        if op == Op::Match && !matches!(right, Operand::Regex(_)) {
            return self.err("'=~' needs a /regex/ on its right");
        }
        Ok(Expr::Cmp(left, op, right))
    }
    fn operand(&mut self) -> Result<Operand, JsonPathError> {
        self.ws();
        match self.peek() {
            Some('@') => {
                self.i += 1;
                // Json.NET accepts `@name` for `@.name`.
                Ok(Operand::Current(self.steps(true, true)?))
            }
            Some('$') => {
                self.i += 1;
                Ok(Operand::Root(self.steps(true, true)?))
            }
            Some('\'' | '"') => Ok(Operand::Lit(Value::String(self.quoted()?))),
            Some('/') => {
                self.i += 1;
                let mut pat = String::new();
                loop {
                    match self.peek() {
                        None => return self.err("unterminated regex"),
                        Some('\\') if self.peek_at(1) == Some('/') => {
                            pat.push('/');
                            self.i += 2;
                        }
                        Some('/') => {
                            self.i += 1;
                            break;
                        }
                        Some(c) => {
                            pat.push(c);
                            self.i += 1;
                        }
                    }
                }
                let mut flags = String::new();
                while let Some(c @ ('i' | 'm' | 's' | 'x')) = self.peek() {
                    flags.push(c);
                    self.i += 1;
                }
                let full = if flags.is_empty() {
                    pat
                } else {
                    format!("(?{flags}){pat}")
                };
                match regex::Regex::new(&full) {
                    Ok(r) => Ok(Operand::Regex(r)),
                    Err(e) => self.err(format!("bad regex: {e}")),
                }
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
                {
                    self.i += 1;
                }
                let t: String = self.c[start..self.i].iter().collect();
                match serde_json::from_str::<serde_json::Number>(&t) {
                    Ok(n) => Ok(Operand::Lit(Value::Number(n))),
                    Err(_) => self.err(format!("bad number '{t}'")),
                }
            }
            _ => {
                if self.eat("true") {
                    Ok(Operand::Lit(Value::Bool(true)))
                } else if self.eat("false") {
                    Ok(Operand::Lit(Value::Bool(false)))
                } else if self.eat("null") {
                    Ok(Operand::Lit(Value::Null))
                } else {
                    self.err("expected '@', '$', a literal or a regex")
                }
            }
        }
    }
}

impl JsonPath {
    /// Compiles an expression. A leading `$` is optional (`Body.x` is `$.Body.x`).
    pub fn compile(src: &str) -> Result<JsonPath, JsonPathError> {
        let mut p = Parser {
            c: src.trim().chars().collect(),
            i: 0,
        };
        if p.c.is_empty() {
            return p.err("empty expression");
        }
        let implicit = !p.eat("$");
        let steps = p.steps(false, implicit)?;
        Ok(JsonPath::new(steps))
    }

    fn new(steps: Vec<Step>) -> JsonPath {
        let plain = steps.iter().all(|s| matches!(s, Step::Field(_)));
        JsonPath { steps, plain }
    }

    /// The path `$.a.b…` over plain field names (no parsing, so any name is allowed).
    pub fn fields(names: &[&str]) -> JsonPath {
        JsonPath::new(
            names
                .iter()
                .map(|n| Step::Field((*n).to_string()))
                .collect(),
        )
    }

    /// All tokens selected from `root`, in document order.
    pub fn select<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        if let Some(r) = self.select_plain(root) {
            return r.into_iter().collect();
        }
        run(&self.steps, root, root)
    }

    /// The token a plain field path selects (`Some(None)`: none), without allocating;
    /// `None` when the path is not a plain field path.
    pub(crate) fn select_plain<'v>(&self, root: &'v Value) -> Option<Option<&'v Value>> {
        if self.plain {
            fields_only(&self.steps, root)
        } else {
            None
        }
    }
}

/// A member of an object. Device messages have a handful of members, for which comparing
/// names is cheaper than hashing the name (`serde_json`'s map hashes on every lookup).
#[inline]
fn member<'v>(m: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    if m.len() <= 8 {
        m.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
    } else {
        m.get(name)
    }
}

/// Fast path for plain `a.b.c` paths (most template expressions): `Some(result)` when every
/// step is a field, without allocating; `None` when the path needs the general evaluator.
fn fields_only<'v>(steps: &[Step], start: &'v Value) -> Option<Option<&'v Value>> {
    let mut cur = Some(start);
    for s in steps {
        let Step::Field(n) = s else { return None };
        cur = cur.and_then(|v| v.as_object()).and_then(|m| member(m, n));
    }
    Some(cur)
}

fn run<'v>(steps: &[Step], start: &'v Value, root: &'v Value) -> Vec<&'v Value> {
    if let [step] = steps {
        // One step (`$..[?(...)]`, the usual typeMatchExpression): no intermediate list.
        let mut out = Vec::new();
        apply(step, start, root, &mut out);
        return out;
    }
    let mut cur = vec![start];
    for s in steps {
        let mut next = Vec::new();
        for &v in &cur {
            apply(s, v, root, &mut next);
        }
        cur = next;
        if cur.is_empty() {
            break;
        }
    }
    cur
}

/// The member values of an object or the items of an array.
enum Children<'v> {
    Object(serde_json::map::Values<'v>),
    Array(std::slice::Iter<'v, Value>),
    None,
}

impl<'v> Iterator for Children<'v> {
    type Item = &'v Value;
    fn next(&mut self) -> Option<&'v Value> {
        match self {
            Children::Object(i) => i.next(),
            Children::Array(i) => i.next(),
            Children::None => None,
        }
    }
}

fn children(v: &Value) -> Children<'_> {
    match v {
        Value::Object(m) => Children::Object(m.values()),
        Value::Array(a) => Children::Array(a.iter()),
        _ => Children::None,
    }
}

fn apply<'v>(s: &Step, v: &'v Value, root: &'v Value, out: &mut Vec<&'v Value>) {
    match s {
        Step::Field(n) => {
            if let Some(x) = v.as_object().and_then(|m| member(m, n)) {
                out.push(x);
            }
        }
        Step::Fields(ns) => {
            if let Some(m) = v.as_object() {
                out.extend(ns.iter().filter_map(|n| member(m, n)));
            }
        }
        Step::Wildcard => out.extend(children(v)),
        Step::Indexes(idx) => {
            if let Some(a) = v.as_array() {
                for &i in idx {
                    let i = if i < 0 { a.len() as i64 + i } else { i };
                    if let Some(x) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                        out.push(x);
                    }
                }
            }
        }
        Step::Slice(start, end, step) => {
            if let Some(a) = v.as_array() {
                let len = a.len() as i64;
                let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                if *step > 0 {
                    let (mut i, e) = (norm(start.unwrap_or(0)), norm(end.unwrap_or(len)));
                    while i < e {
                        out.push(&a[i as usize]);
                        i += step;
                    }
                } else {
                    let mut i = start.map(norm).unwrap_or(len) - 1;
                    let e = end.map(norm).unwrap_or(0) - 1;
                    while i > e && i >= 0 {
                        if let Some(x) = a.get(i as usize) {
                            out.push(x);
                        }
                        i += step;
                    }
                }
            }
        }
        Step::Filter(e) => {
            for c in children(v) {
                if matches_expr(e, c, root) {
                    out.push(c);
                }
            }
        }
        Step::ScanField(ns) => scan_fields(v, ns, out),
        Step::ScanAll => {
            out.push(v);
            scan_all(v, out);
        }
        Step::ScanFilter(e) => scan_filter(v, e, root, out),
    }
}

fn scan_fields<'v>(v: &'v Value, ns: &[String], out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if ns.iter().any(|n| n == k) {
                    out.push(x);
                }
                scan_fields(x, ns, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| scan_fields(x, ns, out)),
        _ => {}
    }
}

fn scan_all<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    for c in children(v) {
        out.push(c);
        scan_all(c, out);
    }
}

fn scan_filter<'v>(v: &'v Value, e: &Expr, root: &'v Value, out: &mut Vec<&'v Value>) {
    if matches_expr(e, v, root) {
        out.push(v);
    }
    for c in children(v) {
        scan_filter(c, e, root, out);
    }
}

fn operand<'v>(o: &'v Operand, cur: &'v Value, root: &'v Value) -> Vec<&'v Value> {
    match o {
        Operand::Current(steps) => match fields_only(steps, cur) {
            Some(r) => r.into_iter().collect(),
            None => run(steps, cur, root),
        },
        Operand::Root(steps) => run(steps, root, root),
        Operand::Lit(v) => vec![v],
        Operand::Regex(_) => Vec::new(),
    }
}

fn matches_expr(e: &Expr, cur: &Value, root: &Value) -> bool {
    match e {
        Expr::Or(a, b) => matches_expr(a, cur, root) || matches_expr(b, cur, root),
        Expr::And(a, b) => matches_expr(a, cur, root) && matches_expr(b, cur, root),
        Expr::Exists(Operand::Current(steps)) => match fields_only(steps, cur) {
            Some(r) => r.is_some(),
            None => !run(steps, cur, root).is_empty(),
        },
        Expr::Exists(o) => !operand(o, cur, root).is_empty(),
        Expr::Cmp(l, op, r) => {
            let left = operand(l, cur, root);
            if let (Op::Match, Operand::Regex(re)) = (op, r) {
                return left
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| re.is_match(s)));
            }
            let right = operand(r, cur, root);
            left.iter()
                .any(|a| right.iter().any(|b| compare(a, *op, b)))
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Json.NET compares numbers numerically, strings ordinally, and coerces a string compared
/// with a number or boolean to that type's text form for equality.
fn compare(a: &Value, op: Op, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            num(a).zip(num(b)).and_then(|(x, y)| x.partial_cmp(&y))
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::String(s), Value::Number(_)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .zip(num(b))
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::Number(_), Value::String(s)) => num(a)
            .zip(s.trim().parse::<f64>().ok())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            if s.eq_ignore_ascii_case(if *x { "true" } else { "false" }) {
                Some(Ordering::Equal)
            } else {
                None
            }
        }
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Op::Match => false,
    }
}
