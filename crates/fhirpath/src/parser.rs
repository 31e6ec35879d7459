//! Lexer and parser for the FHIRPath 2.0 grammar, producing an AST with source offsets.

use crate::ast::{BinOp, Expr, ExprKind, Lit, TypeSpec, UnOp};
use crate::temporal::{DateTime, Time};
use crate::value::{is_calendar_keyword, parse_decimal};
use crate::Error;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Delimited(String),
    Str(String),
    Number(String),
    Long(String),
    Date(String),
    Time(String),
    Var(String),
    Special(&'static str),
    Op(&'static str),
    Eof,
}

struct Token {
    tok: Tok,
    pos: usize,
    text_len: usize,
}

const OPS: &[&str] = &[
    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "+", "-", "*", "/", "|", "&",
    "=", "~", "<", ">",
];

struct Lexer<'s> {
    src: &'s str,
    b: &'s [u8],
    i: usize,
}

impl<'s> Lexer<'s> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::syntax(self.src, pos, msg)
    }

    fn skip_ws(&mut self) -> Result<(), Error> {
        loop {
            while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            if self.b[self.i..].starts_with(b"//") {
                while self.i < self.b.len() && self.b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if self.b[self.i..].starts_with(b"/*") {
                let start = self.i;
                match self.src[self.i + 2..].find("*/") {
                    Some(end) => self.i += end + 4,
                    None => return Err(self.err(start, "unterminated comment")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, Error> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err(start, "unterminated string"));
            };
            if c == quote {
                self.i += 1;
                return Ok(out);
            }
            if c == b'\\' {
                let e = *self
                    .b
                    .get(self.i + 1)
                    .ok_or_else(|| self.err(self.i, "unterminated escape"))?;
                self.i += 2;
                match e {
                    b'\'' => out.push('\''),
                    b'"' => out.push('"'),
                    b'`' => out.push('`'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let hex = self
                            .src
                            .get(self.i..self.i + 4)
                            .ok_or_else(|| self.err(self.i, "bad \\u escape"))?;
                        let code = u32::from_str_radix(hex, 16)
                            .map_err(|_| self.err(self.i, "bad \\u escape"))?;
                        out.push(
                            char::from_u32(code)
                                .ok_or_else(|| self.err(self.i, "bad \\u escape"))?,
                        );
                        self.i += 4;
                    }
                    _ => {
                        return Err(self.err(self.i - 2, format!("unknown escape \\{}", e as char)))
                    }
                }
                continue;
            }
            // copy one UTF-8 character
            let ch = self.src[self.i..]
                .chars()
                .next()
                .ok_or_else(|| self.err(self.i, "bad character"))?;
            out.push(ch);
            self.i += ch.len_utf8();
        }
    }

    fn next(&mut self) -> Result<Token, Error> {
        self.skip_ws()?;
        let pos = self.i;
        let Some(&c) = self.b.get(self.i) else {
            return Ok(Token {
                tok: Tok::Eof,
                pos,
                text_len: 0,
            });
        };
        let tok = match c {
            b'\'' => Tok::Str(self.string(b'\'')?),
            b'`' => Tok::Delimited(self.string(b'`')?),
            b'0'..=b'9' => {
                while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                if self.b.get(self.i) == Some(&b'.')
                    && self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit)
                {
                    self.i += 1;
                    while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    Tok::Number(self.src[pos..self.i].to_string())
                } else if self.b.get(self.i) == Some(&b'L') {
                    self.i += 1;
                    Tok::Long(self.src[pos..self.i - 1].to_string())
                } else {
                    Tok::Number(self.src[pos..self.i].to_string())
                }
            }
            b'@' => {
                self.i += 1;
                let start = self.i;
                if self.b.get(self.i) == Some(&b'T') {
                    self.i += 1;
                    while self.i < self.b.len()
                        && (self.b[self.i].is_ascii_digit()
                            || matches!(self.b[self.i], b':' | b'.'))
                    {
                        if self.b[self.i] == b'.'
                            && !self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit)
                        {
                            break;
                        }
                        self.i += 1;
                    }
                    Tok::Time(self.src[start + 1..self.i].to_string())
                } else {
                    while self.i < self.b.len()
                        && (self.b[self.i].is_ascii_digit()
                            || matches!(self.b[self.i], b'-' | b':' | b'T' | b'Z' | b'+' | b'.'))
                    {
                        if self.b[self.i] == b'.'
                            && !self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit)
                        {
                            break;
                        }
                        self.i += 1;
                    }
                    Tok::Date(self.src[start..self.i].to_string())
                }
            }
            b'%' => {
                self.i += 1;
                match self.b.get(self.i) {
                    Some(b'`') => Tok::Var(self.string(b'`')?),
                    Some(b'\'') => Tok::Var(self.string(b'\'')?),
                    _ => {
                        let s = self.i;
                        while self.i < self.b.len()
                            && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
                        {
                            self.i += 1;
                        }
                        if s == self.i {
                            return Err(self.err(pos, "expected a variable name after %"));
                        }
                        Tok::Var(self.src[s..self.i].to_string())
                    }
                }
            }
            b'$' => {
                self.i += 1;
                let s = self.i;
                while self.i < self.b.len() && self.b[self.i].is_ascii_alphabetic() {
                    self.i += 1;
                }
                match &self.src[s..self.i] {
                    "this" => Tok::Special("this"),
                    "index" => Tok::Special("index"),
                    "total" => Tok::Special("total"),
                    other => {
                        return Err(self.err(pos, format!("unknown special variable ${other}")))
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while self.i < self.b.len()
                    && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
                {
                    self.i += 1;
                }
                Tok::Ident(self.src[pos..self.i].to_string())
            }
            _ => {
                let rest = &self.src[self.i..];
                match OPS.iter().find(|op| rest.starts_with(**op)) {
                    Some(op) => {
                        self.i += op.len();
                        Tok::Op(op)
                    }
                    None => {
                        let ch = rest.chars().next().unwrap_or('?');
                        return Err(self.err(pos, format!("unexpected character '{ch}'")));
                    }
                }
            }
        };
        Ok(Token {
            tok,
            pos,
            text_len: self.i - pos,
        })
    }
}

pub struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    p: usize,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "xor", "implies", "div", "mod", "in", "contains", "is", "as",
];

impl<'s> Parser<'s> {
    pub fn parse(src: &'s str) -> Result<Expr, Error> {
        let mut lx = Lexer {
            src,
            b: src.as_bytes(),
            i: 0,
        };
        let mut toks = Vec::new();
        loop {
            let t = lx.next()?;
            let eof = t.tok == Tok::Eof;
            toks.push(t);
            if eof {
                break;
            }
        }
        let mut p = Parser { src, toks, p: 0 };
        let e = p.expression(0)?;
        if p.peek() != &Tok::Eof {
            return Err(p.unexpected("end of expression"));
        }
        Ok(e)
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.p].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.p].pos
    }

    fn bump(&mut self) -> Tok {
        let t = self.toks[self.p].tok.clone();
        if self.p + 1 < self.toks.len() {
            self.p += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> Error {
        let t = &self.toks[self.p];
        if t.tok == Tok::Eof {
            return Error::syntax(
                self.src,
                t.pos,
                format!("unexpected end of expression, expected {expected}"),
            );
        }
        let text = &self.src[t.pos..t.pos + t.text_len];
        Error::syntax(
            self.src,
            t.pos,
            format!("unexpected '{text}', expected {expected}"),
        )
    }

    fn expect_op(&mut self, op: &str) -> Result<(), Error> {
        if self.peek()
            == &Tok::Op(match op {
                ")" => ")",
                "]" => "]",
                "}" => "}",
                "(" => "(",
                _ => return Err(self.unexpected(op)),
            })
        {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{op}'")))
        }
    }

    /// The binary operator at the current token with its precedence.
    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Ident(k) => match k.as_str() {
                "implies" => (BinOp::Implies, 1),
                "or" => (BinOp::Or, 2),
                "xor" => (BinOp::Xor, 2),
                "and" => (BinOp::And, 3),
                "in" => (BinOp::In, 4),
                "contains" => (BinOp::Contains, 4),
                "div" => (BinOp::Div, 10),
                "mod" => (BinOp::Mod, 10),
                _ => return None,
            },
            Tok::Op(op) => match *op {
                "=" => (BinOp::Eq, 5),
                "~" => (BinOp::Equiv, 5),
                "!=" => (BinOp::Ne, 5),
                "!~" => (BinOp::NotEquiv, 5),
                "<" => (BinOp::Lt, 6),
                ">" => (BinOp::Gt, 6),
                "<=" => (BinOp::Le, 6),
                ">=" => (BinOp::Ge, 6),
                "|" => (BinOp::Union, 7),
                "+" => (BinOp::Add, 9),
                "-" => (BinOp::Sub, 9),
                "&" => (BinOp::Concat, 9),
                "*" => (BinOp::Mul, 10),
                "/" => (BinOp::DivDec, 10),
                _ => return None,
            },
            _ => return None,
        })
    }

    fn expression(&mut self, min_prec: u8) -> Result<Expr, Error> {
        let mut lhs = self.unary()?;
        loop {
            // type operators sit at precedence 8
            if let Tok::Ident(k) = self.peek() {
                if (k == "is" || k == "as") && 8 >= min_prec {
                    let is = k == "is";
                    let pos = self.pos();
                    self.bump();
                    let ts = self.type_specifier()?;
                    let kind = if is {
                        ExprKind::Is(Box::new(lhs), ts)
                    } else {
                        ExprKind::As(Box::new(lhs), ts)
                    };
                    lhs = Expr { kind, pos };
                    continue;
                }
            }
            let Some((op, prec)) = self.binop() else {
                break;
            };
            if prec < min_prec {
                break;
            }
            let pos = self.pos();
            self.bump();
            // implies is right-associative; everything else left
            let next_min = if op == BinOp::Implies { prec } else { prec + 1 };
            let rhs = self.expression(next_min)?;
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                pos,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        let pos = self.pos();
        match self.peek() {
            Tok::Op("-") => {
                self.bump();
                let e = self.unary()?;
                Ok(Expr {
                    kind: ExprKind::Unary(UnOp::Neg, Box::new(e)),
                    pos,
                })
            }
            Tok::Op("+") => {
                self.bump();
                let e = self.unary()?;
                Ok(Expr {
                    kind: ExprKind::Unary(UnOp::Pos, Box::new(e)),
                    pos,
                })
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, Error> {
        let mut e = self.term()?;
        loop {
            match self.peek() {
                Tok::Op(".") => {
                    self.bump();
                    let pos = self.pos();
                    let (name, _) = self.identifier()?;
                    if self.peek() == &Tok::Op("(") {
                        let args = self.args()?;
                        e = Expr {
                            kind: ExprKind::Call {
                                target: Some(Box::new(e)),
                                name,
                                args,
                            },
                            pos,
                        };
                    } else {
                        e = Expr {
                            kind: ExprKind::Member(Box::new(e), name),
                            pos,
                        };
                    }
                }
                Tok::Op("[") => {
                    let pos = self.pos();
                    self.bump();
                    let idx = self.expression(0)?;
                    self.expect_op("]")?;
                    e = Expr {
                        kind: ExprKind::Indexer(Box::new(e), Box::new(idx)),
                        pos,
                    };
                }
                _ => return Ok(e),
            }
        }
    }

    fn identifier(&mut self) -> Result<(String, bool), Error> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.bump();
                Ok((s, false))
            }
            Tok::Delimited(s) => {
                self.bump();
                Ok((s, true))
            }
            _ => Err(self.unexpected("an identifier")),
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, Error> {
        self.expect_op("(")?;
        let mut args = Vec::new();
        if self.peek() == &Tok::Op(")") {
            self.bump();
            return Ok(args);
        }
        loop {
            args.push(self.expression(0)?);
            match self.peek() {
                Tok::Op(",") => {
                    self.bump();
                }
                Tok::Op(")") => {
                    self.bump();
                    return Ok(args);
                }
                _ => return Err(self.unexpected("',' or ')'")),
            }
        }
    }

    fn type_specifier(&mut self) -> Result<TypeSpec, Error> {
        let (first, _) = self.identifier()?;
        if self.peek() == &Tok::Op(".") {
            if let Some(Tok::Ident(_) | Tok::Delimited(_)) =
                self.toks.get(self.p + 1).map(|t| &t.tok)
            {
                self.bump();
                let (second, _) = self.identifier()?;
                return Ok(TypeSpec {
                    namespace: Some(first),
                    name: second,
                });
            }
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn term(&mut self) -> Result<Expr, Error> {
        let pos = self.pos();
        let lit = |kind| Ok(Expr { kind, pos });
        match self.peek().clone() {
            Tok::Op("(") => {
                self.bump();
                let e = self.expression(0)?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("{") => {
                self.bump();
                self.expect_op("}")?;
                lit(ExprKind::Empty)
            }
            Tok::Str(s) => {
                self.bump();
                lit(ExprKind::Literal(Lit::String(s)))
            }
            Tok::Long(n) => {
                self.bump();
                let v = n
                    .parse::<i64>()
                    .map_err(|_| Error::syntax(self.src, pos, "long literal out of range"))?;
                lit(ExprKind::Literal(Lit::Long(v)))
            }
            Tok::Number(n) => {
                self.bump();
                // a number followed by a unit is a quantity literal
                match self.peek().clone() {
                    Tok::Str(unit) => {
                        self.bump();
                        let v = parse_decimal(&n)
                            .ok_or_else(|| Error::syntax(self.src, pos, "bad number"))?;
                        return lit(ExprKind::Literal(Lit::Quantity(v, unit)));
                    }
                    Tok::Ident(unit) if is_calendar_keyword(&unit) => {
                        self.bump();
                        let v = parse_decimal(&n)
                            .ok_or_else(|| Error::syntax(self.src, pos, "bad number"))?;
                        return lit(ExprKind::Literal(Lit::Quantity(v, unit)));
                    }
                    _ => {}
                }
                if n.contains('.') {
                    let v = parse_decimal(&n)
                        .ok_or_else(|| Error::syntax(self.src, pos, "bad decimal literal"))?;
                    lit(ExprKind::Literal(Lit::Decimal(v)))
                } else {
                    match n.parse::<i32>() {
                        Ok(v) => lit(ExprKind::Literal(Lit::Integer(i64::from(v)))),
                        Err(_) => Err(Error::syntax(
                            self.src,
                            pos,
                            "integer literal out of range (use a Long: 123L)",
                        )),
                    }
                }
            }
            Tok::Date(s) => {
                self.bump();
                let has_time = s.contains('T');
                let d = DateTime::parse(&s, true).ok_or_else(|| {
                    Error::syntax(self.src, pos, format!("invalid date/time literal @{s}"))
                })?;
                if has_time {
                    lit(ExprKind::Literal(Lit::DateTime(d)))
                } else if d.tz.is_some() {
                    Err(Error::syntax(
                        self.src,
                        pos,
                        format!("invalid date literal @{s}"),
                    ))
                } else {
                    lit(ExprKind::Literal(Lit::Date(d)))
                }
            }
            Tok::Time(s) => {
                self.bump();
                let t = Time::parse(&s).ok_or_else(|| {
                    Error::syntax(self.src, pos, format!("invalid time literal @T{s}"))
                })?;
                lit(ExprKind::Literal(Lit::Time(t)))
            }
            Tok::Var(v) => {
                self.bump();
                lit(ExprKind::Var(v))
            }
            Tok::Special(s) => {
                self.bump();
                lit(match s {
                    "this" => ExprKind::This,
                    "index" => ExprKind::IndexVar,
                    _ => ExprKind::Total,
                })
            }
            Tok::Ident(ref s) if s == "true" || s == "false" => {
                let b = s == "true";
                self.bump();
                lit(ExprKind::Literal(Lit::Boolean(b)))
            }
            // `as`, `contains`, `in` and `is` may also be identifiers
            Tok::Ident(ref s)
                if KEYWORDS.contains(&s.as_str())
                    && !matches!(s.as_str(), "as" | "contains" | "in" | "is")
                    && self.toks.get(self.p + 1).map(|t| &t.tok) != Some(&Tok::Op("(")) =>
            {
                Err(self.unexpected("an expression"))
            }
            Tok::Ident(_) | Tok::Delimited(_) => {
                let (name, _) = self.identifier()?;
                if self.peek() == &Tok::Op("(") {
                    let args = self.args()?;
                    lit(ExprKind::Call {
                        target: None,
                        name,
                        args,
                    })
                } else {
                    lit(ExprKind::Ident(name))
                }
            }
            _ => Err(self.unexpected("an expression")),
        }
    }
}
