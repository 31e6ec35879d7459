//! SMART App Launch scopes: v2 (`patient/Observation.rs?category=vital-signs`), v1
//! (`user/*.read`) and the non-resource scopes (`openid`, `fhirUser`, ...).

use crate::AuthError;
use std::fmt;
use vigil_fhir_model::Model;

/// Whose data a resource scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    /// `patient/`: limited to the compartment of the token's patient.
    Patient,
    /// `user/`: whatever the user may access (type-level here; care-team rules are the
    /// server's, see [`crate::AccessContext::user`]).
    User,
    /// `system/`: a backend service, type-level access.
    System,
}

impl ScopeContext {
    /// The prefix as written, without the slash.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// One SMART v2 permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `c`: type-level create.
    Create,
    /// `r`: read, vread, instance history.
    Read,
    /// `u`: update, patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: type-level search and history.
    Search,
}

impl Permission {
    /// All permissions in SMART's canonical order (`cruds`).
    pub const ALL: [Permission; 5] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::Search,
    ];

    /// The permission's letter.
    pub fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Create => 1,
            Permission::Read => 2,
            Permission::Update => 4,
            Permission::Delete => 8,
            Permission::Search => 16,
        }
    }

    fn from_letter(c: char) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.letter() == c)
    }
}

/// A set of permissions (`rs`, `cruds`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// v1 `.read`: read and search.
    pub const READ: Permissions = Permissions(2 | 16);
    /// v1 `.write`: create, update, delete.
    pub const WRITE: Permissions = Permissions(1 | 4 | 8);
    /// v1 `.*` / v2 `.cruds`.
    pub const ALL: Permissions = Permissions(31);

    /// Parse v2 letters: a non-empty subsequence of `cruds`, in that order, each at
    /// most once (the SMART v2 grammar; `sr` or `rr` are errors).
    pub fn parse_v2(letters: &str) -> Result<Permissions, String> {
        if letters.is_empty() {
            return Err("no permission letters".into());
        }
        let mut bits = 0u8;
        let mut last = 0usize;
        for c in letters.chars() {
            let p = Permission::from_letter(c).ok_or_else(|| {
                format!("unknown permission {c:?} (expected letters of \"cruds\", or read/write/*)")
            })?;
            let pos = Permission::ALL.iter().position(|q| *q == p).unwrap_or(0) + 1;
            if pos <= last {
                return Err(format!(
                    "permission letters must appear once each in the order c, r, u, d, s (got {letters:?})"
                ));
            }
            last = pos;
            bits |= p.bit();
        }
        Ok(Permissions(bits))
    }

    /// Whether the set includes `p`.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The permissions, in `cruds` order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.iter().try_for_each(|p| write!(f, "{}", p.letter()))
    }
}

/// A FHIR interaction, as the server classifies a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `POST /Type`.
    Create,
    /// `GET /Type/id`.
    Read,
    /// `GET /Type/id/_history/vid`.
    Vread,
    /// `PUT /Type/id`.
    Update,
    /// `PATCH /Type/id`.
    Patch,
    /// `DELETE /Type/id`.
    Delete,
    /// `GET /Type?...`, `POST /Type/_search`.
    Search,
    /// `GET /Type/id/_history`: instance history (SMART counts it as read).
    History,
    /// `GET /Type/_history`: type history (SMART counts it as search).
    HistoryType,
    /// `$name` on a type or an instance. Operations that change data (`meta-add`,
    /// `meta-delete`) need update; all others here need read — the server must not
    /// route a state-changing operation through here without adding it to
    /// [`Interaction::permission`].
    Operation(String),
}

impl Interaction {
    /// The SMART permission the interaction needs.
    pub fn permission(&self) -> Permission {
        match self {
            Interaction::Create => Permission::Create,
            Interaction::Read | Interaction::Vread | Interaction::History => Permission::Read,
            Interaction::Update | Interaction::Patch => Permission::Update,
            Interaction::Delete => Permission::Delete,
            Interaction::Search | Interaction::HistoryType => Permission::Search,
            Interaction::Operation(name) => match name.trim_start_matches('$') {
                "meta-add" | "meta-delete" => Permission::Update,
                _ => Permission::Read,
            },
        }
    }

    /// Whether the interaction writes the resource it is checked against (so a
    /// patient-context client must leave it in the patient's compartment).
    pub fn is_write(&self) -> bool {
        matches!(
            self.permission(),
            Permission::Create | Permission::Update | Permission::Delete
        )
    }

    /// A short name for messages.
    pub fn name(&self) -> &str {
        match self {
            Interaction::Create => "create",
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::Search => "search",
            Interaction::History => "history",
            Interaction::HistoryType => "type history",
            Interaction::Operation(name) => name,
        }
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interaction::Operation(name) => write!(f, "${}", name.trim_start_matches('$')),
            other => f.write_str(other.name()),
        }
    }
}

/// One search-parameter constraint of a v2 scope (`category=vital-signs`): a granted
/// resource must match it, as FHIR search would (`,` in the value means "any of").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryConstraint {
    /// The parameter name, possibly with a modifier (`code:in`), percent-decoded.
    pub param: String,
    /// The value, percent-decoded.
    pub value: String,
}

impl fmt::Display for QueryConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.param, self.value)
    }
}

/// A resource scope: context, type, permissions, constraints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub context: ScopeContext,
    /// The resource type; `None` for `*`.
    pub resource_type: Option<String>,
    /// The granted permissions (v1 forms mapped: read = rs, write = cud, * = cruds).
    pub permissions: Permissions,
    /// v2 query constraints, all of which a resource must match.
    pub constraints: Vec<QueryConstraint>,
    /// Whether the scope was written in v1 form (`.read`, `.write`, `.*`).
    pub v1: bool,
}

impl ResourceScope {
    /// Whether the scope is about this resource type.
    pub fn covers_type(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }

    /// Whether the scope grants `p` on `resource_type` (ignoring constraints and the
    /// patient compartment).
    pub fn grants(&self, p: Permission, resource_type: &str) -> bool {
        self.permissions.contains(p) && self.covers_type(resource_type)
    }
}

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A resource scope (`patient/Observation.rs`).
    Resource(ResourceScope),
    /// `openid`: an id token is wanted (no data access).
    OpenId,
    /// `fhirUser`: the user's FHIR resource is wanted (no data access).
    FhirUser,
    /// `profile`: the v1 predecessor of `fhirUser` (no data access).
    Profile,
    /// `launch`: EHR launch context (no data access).
    Launch,
    /// `launch/patient`: standalone launch patient context (no data access itself).
    LaunchPatient,
    /// `launch/encounter`: standalone launch encounter context (no data access).
    LaunchEncounter,
    /// `offline_access`: a refresh token is wanted (no data access).
    OfflineAccess,
    /// `online_access`: a refresh token for the session is wanted (no data access).
    OnlineAccess,
}

impl Scope {
    /// Parse one scope.
    ///
    /// Errors name the scope and say what is wrong: an unknown context or permission,
    /// a resource type that is not an R4 resource type, a v1 permission with query
    /// constraints, a malformed query.
    pub fn parse(text: &str) -> Result<Scope, AuthError> {
        let err = |reason: String| AuthError::InvalidScope {
            scope: text.to_string(),
            reason,
        };
        // RFC 6749 §3.3 scope-token characters: printable ASCII except space, " and \.
        if text.is_empty() {
            return Err(err("empty scope".into()));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        {
            return Err(err(format!("character {c:?} is not allowed in a scope")));
        }
        let simple = match text {
            "openid" => Some(Scope::OpenId),
            "fhirUser" => Some(Scope::FhirUser),
            "profile" => Some(Scope::Profile),
            "launch" => Some(Scope::Launch),
            "launch/patient" => Some(Scope::LaunchPatient),
            "launch/encounter" => Some(Scope::LaunchEncounter),
            "offline_access" => Some(Scope::OfflineAccess),
            "online_access" => Some(Scope::OnlineAccess),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let Some((context, rest)) = text.split_once('/') else {
            return Err(err(
                "unknown scope (expected patient/, user/ or system/ followed by Type.permissions, \
                 or one of openid, fhirUser, profile, launch, launch/patient, launch/encounter, \
                 offline_access, online_access)"
                    .into(),
            ));
        };
        let context = match context {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            other => {
                return Err(err(format!(
                    "unknown context {other:?} (expected patient, user or system)"
                )))
            }
        };
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let Some((ty, perms)) = base.split_once('.') else {
            return Err(err(
                "expected Type.permissions (e.g. Observation.rs or *.read)".into(),
            ));
        };
        let resource_type = if ty == "*" {
            None
        } else if is_concrete_resource_type(ty) {
            Some(ty.to_string())
        } else {
            return Err(err(format!("{ty:?} is not an R4 resource type")));
        };
        let (permissions, v1) = match perms {
            "read" => (Permissions::READ, true),
            "write" => (Permissions::WRITE, true),
            "*" => (Permissions::ALL, true),
            letters => (Permissions::parse_v2(letters).map_err(err)?, false),
        };
        let constraints =
            match query {
                None => Vec::new(),
                Some(_) if v1 => return Err(err(
                    "query constraints need v2 permissions (.rs, .cruds, ...), not .read/.write/.*"
                        .into(),
                )),
                Some(q) => parse_query(q).map_err(err)?,
            };
        Ok(Scope::Resource(ResourceScope {
            context,
            resource_type,
            permissions,
            constraints,
            v1,
        }))
    }

    /// The resource scope, if this is one.
    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Scope::Resource(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    /// The scope in canonical form (v1 permissions as written, constraints re-encoded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let simple = match self {
            Scope::Resource(r) => {
                write!(
                    f,
                    "{}/{}.",
                    r.context.as_str(),
                    r.resource_type.as_deref().unwrap_or("*")
                )?;
                match (r.v1, r.permissions) {
                    (true, Permissions::READ) => f.write_str("read")?,
                    (true, Permissions::WRITE) => f.write_str("write")?,
                    (true, _) => f.write_str("*")?,
                    (false, p) => write!(f, "{p}")?,
                }
                for (i, c) in r.constraints.iter().enumerate() {
                    let sep = if i == 0 { '?' } else { '&' };
                    write!(f, "{sep}{}={}", encode(&c.param), encode(&c.value))?;
                }
                return Ok(());
            }
            Scope::OpenId => "openid",
            Scope::FhirUser => "fhirUser",
            Scope::Profile => "profile",
            Scope::Launch => "launch",
            Scope::LaunchPatient => "launch/patient",
            Scope::LaunchEncounter => "launch/encounter",
            Scope::OfflineAccess => "offline_access",
            Scope::OnlineAccess => "online_access",
        };
        f.write_str(simple)
    }
}

/// A concrete R4 resource type (not the abstract `Resource`/`DomainResource`).
fn is_concrete_resource_type(ty: &str) -> bool {
    !matches!(ty, "Resource" | "DomainResource") && Model::r4().is_resource_type(ty)
}

/// `k=v&k2=v2`, percent-decoded. `+` is kept literally: scopes cannot contain spaces
/// anyway, and FHIR values (time zones) use `+`.
fn parse_query(q: &str) -> Result<Vec<QueryConstraint>, String> {
    if q.is_empty() {
        return Err("empty query after '?'".into());
    }
    let mut out: Vec<QueryConstraint> = Vec::new();
    for pair in q.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("query part {pair:?} is not name=value"));
        };
        let param = decode(k).ok_or_else(|| format!("bad percent-encoding in {k:?}"))?;
        let value = decode(v).ok_or_else(|| format!("bad percent-encoding in {v:?}"))?;
        if param.is_empty() || value.is_empty() {
            return Err(format!("query part {pair:?} has an empty name or value"));
        }
        let c = QueryConstraint { param, value };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            // from_str_radix alone would accept a sign ("%+1").
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode what would otherwise change the meaning of a scope's query.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'&' | b'=' | b'"' | b'\\' | b'?') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A set of scopes, as granted by a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parse a space-separated scope string (the `scope` claim). Any invalid scope makes
    /// the whole set invalid, with that scope named: silently dropping it would grant
    /// less than the issuer meant and hide the mistake. Duplicates are removed.
    pub fn parse(text: &str) -> Result<ScopeSet, AuthError> {
        let mut scopes: Vec<Scope> = Vec::new();
        for s in text.split_ascii_whitespace() {
            let scope = Scope::parse(s)?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(ScopeSet { scopes })
    }

    /// A set of already parsed scopes.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> ScopeSet {
        let mut set = ScopeSet::default();
        for s in scopes {
            if !set.scopes.contains(&s) {
                set.scopes.push(s);
            }
        }
        set
    }

    /// Whether there are no scopes at all.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The scopes, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter()
    }

    /// Whether the set contains this scope.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// The resource scopes.
    pub fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.scopes.iter().filter_map(Scope::as_resource)
    }

    /// Whether any scope is a `patient/` scope (which then needs a patient context).
    pub fn has_patient_scopes(&self) -> bool {
        self.resource_scopes()
            .any(|r| r.context == ScopeContext::Patient)
    }

    /// Whether any scope is a `user/` scope.
    pub fn has_user_scopes(&self) -> bool {
        self.resource_scopes()
            .any(|r| r.context == ScopeContext::User)
    }
}

impl fmt::Display for ScopeSet {
    /// Space-separated, in order: the form of the `scope` claim.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%2Fb%7c").as_deref(), Some("a/b|"));
        assert_eq!(decode("100%").as_deref(), None);
        assert_eq!(decode("%4").as_deref(), None);
        assert_eq!(decode("%-1").as_deref(), None);
        assert_eq!(decode("%C3%A9").as_deref(), Some("\u{e9}"));
        assert_eq!(decode("%FF").as_deref(), None, "not UTF-8");
        assert_eq!(decode("a+b").as_deref(), Some("a+b"));
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["a=b&c", "50%", "x?y", "http://x/y|z", "\u{e9}"] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        }
    }

    #[test]
    fn permission_letters() {
        assert_eq!(Permissions::parse_v2("cruds"), Ok(Permissions::ALL));
        assert_eq!(Permissions::parse_v2("rs"), Ok(Permissions::READ));
        assert_eq!(Permissions::parse_v2("cud"), Ok(Permissions::WRITE));
        assert!(Permissions::parse_v2("").is_err());
        assert!(Permissions::parse_v2("sc").is_err());
        assert!(Permissions::parse_v2("crr").is_err());
        assert!(Permissions::parse_v2("rx").is_err());
        assert_eq!(Permissions::default().to_string(), "");
    }

    #[test]
    fn abstract_types_are_not_scope_types() {
        assert!(is_concrete_resource_type("Observation"));
        assert!(!is_concrete_resource_type("DomainResource"));
        assert!(!is_concrete_resource_type("HumanName"));
    }
}
