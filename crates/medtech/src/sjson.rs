//! A small JSON parser that keeps line:column positions, so that template errors can point
//! into the template text (serde_json's `Value` forgets where things were).

use crate::error::{Errs, TemplateError};

/// A JSON value with the position of its first character.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub line: u32,
    pub col: u32,
    pub v: V,
}

/// Object member with the position of its key.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub key: String,
    pub key_node: Node,
    pub value: Node,
}

#[derive(Debug, Clone)]
pub(crate) enum V {
    Null,
    Bool(bool),
    /// Number, as written.
    Num(String),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<Member>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.v {
            V::Null => "null",
            V::Bool(_) => "a boolean",
            V::Num(_) => "a number",
            V::Str(_) => "a string",
            V::Arr(_) => "an array",
            V::Obj(_) => "an object",
        }
    }
}

/// Parses `text` (a leading UTF-8 BOM is ignored). A syntax error is returned as a template
/// error at `$`.
pub(crate) fn parse(text: &str) -> Result<Node, TemplateError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
        line: 1,
        col: 1,
    };
    p.ws();
    let n = p.value(0)?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("unexpected text after the JSON value"));
    }
    Ok(n)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

impl P<'_> {
    fn err(&self, msg: &str) -> TemplateError {
        TemplateError {
            path: "$".into(),
            line: self.line,
            column: self.col,
            field: String::new(),
            message: format!("invalid JSON: {msg}"),
        }
    }
    fn bump(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            // Count characters, not UTF-8 continuation bytes.
            self.col += 1;
        }
        Some(c)
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }
    fn value(&mut self, depth: usize) -> Result<Node, TemplateError> {
        if depth > 128 {
            return Err(self.err("nesting too deep"));
        }
        let (line, col) = (self.line, self.col);
        let v = match self.peek() {
            None => return Err(self.err("unexpected end of text")),
            Some(b'{') => {
                self.bump();
                let mut members = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.bump();
                } else {
                    loop {
                        self.ws();
                        let key_node = self.value(depth + 1)?;
                        let V::Str(key) = key_node.v.clone() else {
                            return Err(TemplateError {
                                line: key_node.line,
                                column: key_node.col,
                                ..self.err("object keys must be strings")
                            });
                        };
                        self.ws();
                        if self.bump() != Some(b':') {
                            return Err(self.err("expected ':'"));
                        }
                        self.ws();
                        let value = self.value(depth + 1)?;
                        members.push(Member {
                            key,
                            key_node,
                            value,
                        });
                        self.ws();
                        match self.bump() {
                            Some(b',') => continue,
                            Some(b'}') => break,
                            _ => return Err(self.err("expected ',' or '}'")),
                        }
                    }
                }
                V::Obj(members)
            }
            Some(b'[') => {
                self.bump();
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.bump();
                } else {
                    loop {
                        self.ws();
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.bump() {
                            Some(b',') => continue,
                            Some(b']') => break,
                            _ => return Err(self.err("expected ',' or ']'")),
                        }
                    }
                }
                V::Arr(items)
            }
            Some(b'"') => V::Str(self.string()?),
            Some(b't') => self.word("true", V::Bool(true))?,
            Some(b'f') => self.word("false", V::Bool(false))?,
            Some(b'n') => self.word("null", V::Null)?,
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.bump();
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                if serde_json::from_str::<serde_json::Number>(t).is_err() {
                    return Err(TemplateError {
                        line,
                        column: col,
                        ..self.err("malformed number")
                    });
                }
                V::Num(t.to_string())
            }
            Some(_) => return Err(self.err("unexpected character")),
        };
        Ok(Node { line, col, v })
    }
    fn word(&mut self, w: &str, v: V) -> Result<V, TemplateError> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            for _ in 0..w.len() {
                self.bump();
            }
            Ok(v)
        } else {
            Err(self.err("unexpected word"))
        }
    }
    fn string(&mut self) -> Result<String, TemplateError> {
        let start = self.i;
        self.bump();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.bump();
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {}
            }
        }
        let raw =
            std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid UTF-8"))?;
        serde_json::from_str::<String>(raw).map_err(|_| self.err("invalid escape in string"))
    }
}

/// Reads the fields of one template object, recording missing, ill-typed and unknown fields.
/// Field names match case-insensitively (as Json.NET does).
pub(crate) struct Obj<'a> {
    pub node: &'a Node,
    pub path: String,
    members: &'a [Member],
    used: Vec<bool>,
}

impl<'a> Obj<'a> {
    /// `None` (with an error recorded) when `node` is not an object.
    pub fn new(node: &'a Node, path: &str, errs: &mut Errs) -> Option<Obj<'a>> {
        match &node.v {
            V::Obj(m) => Some(Obj {
                node,
                path: path.to_string(),
                members: m,
                used: vec![false; m.len()],
            }),
            _ => {
                errs.push(
                    node,
                    path,
                    "",
                    format!("expected an object, found {}", node.kind()),
                );
                None
            }
        }
    }
    pub fn field_path(&self, name: &str) -> String {
        format!("{}.{}", self.path, name)
    }
    /// The member `name`, if present (JSON null counts as absent, as in Json.NET).
    pub fn get(&mut self, name: &str) -> Option<&'a Node> {
        let idx = self
            .members
            .iter()
            .position(|m| m.key.eq_ignore_ascii_case(name))?;
        self.used[idx] = true;
        let n = &self.members[idx].value;
        if matches!(n.v, V::Null) {
            None
        } else {
            Some(n)
        }
    }
    pub fn missing(&self, name: &str, errs: &mut Errs) {
        errs.push(
            self.node,
            &self.path,
            name,
            format!("required field '{name}' is missing"),
        );
    }
    /// A string field; numbers and booleans are not accepted.
    pub fn string(&mut self, name: &str, required: bool, errs: &mut Errs) -> Option<String> {
        let n = self.get(name);
        match n {
            None => {
                if required {
                    self.missing(name, errs);
                }
                None
            }
            Some(Node { v: V::Str(s), .. }) => Some(s.clone()),
            Some(n) => {
                errs.push(
                    n,
                    &self.field_path(name),
                    name,
                    format!("'{name}' must be a string, found {}", n.kind()),
                );
                None
            }
        }
    }
    /// A string field that must not be blank when present.
    pub fn non_blank(&mut self, name: &str, required: bool, errs: &mut Errs) -> Option<String> {
        let s = self.string(name, required, errs)?;
        if s.trim().is_empty() {
            let n = self.node;
            errs.push(
                n,
                &self.field_path(name),
                name,
                format!("'{name}' must not be empty"),
            );
            return None;
        }
        Some(s)
    }
    /// Reports every member that was never asked for.
    pub fn finish(self, errs: &mut Errs) {
        for (m, used) in self.members.iter().zip(&self.used) {
            if !used {
                errs.push(
                    &m.key_node,
                    &format!("{}.{}", self.path, m.key),
                    &m.key,
                    format!("unknown field '{}'", m.key),
                );
            }
        }
    }
}
