//! The backend-independent API: [`FhirStore`], its request/response types and
//! [`StoreError`].

use serde_json::Value;
use std::sync::Arc;
use vigil_fhir::search::{IndexValue, SearchQuery};

/// An index value independent of the resource it was extracted from.
pub type OwnedIndexValue = IndexValue<'static>;

/// The result type of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a store operation can fail with.
///
/// The server maps the variants to HTTP statuses as follows:
///
/// | variant | status |
/// |---|---|
/// | [`NotFound`](StoreError::NotFound) | 404 Not Found |
/// | [`Gone`](StoreError::Gone) | 410 Gone |
/// | [`VersionConflict`](StoreError::VersionConflict) | 412 Precondition Failed (an `If-Match` that does not name the current version) |
/// | [`Invalid`](StoreError::Invalid) | 400 Bad Request |
/// | [`Conflict`](StoreError::Conflict) | 409 Conflict |
/// | [`Busy`](StoreError::Busy) | 503 Service Unavailable (with `Retry-After`) |
/// | [`Storage`](StoreError::Storage) | 500 Internal Server Error |
///
/// In a transaction the error of the failing operation is returned for the whole
/// transaction (FHIR: the transaction fails with that operation's status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The resource (or version) does not exist.
    #[error("{resource_type}/{id} not found")]
    NotFound {
        /// Its type.
        resource_type: String,
        /// Its id.
        id: String,
    },
    /// The resource existed and was deleted.
    #[error("{resource_type}/{id} was deleted (version {version})")]
    Gone {
        /// Its type.
        resource_type: String,
        /// Its id.
        id: String,
        /// The version of the delete (the tombstone).
        version: u64,
    },
    /// `If-Match` named another version than the current one. `actual` is 0 when the
    /// resource does not exist at all.
    #[error("version conflict: expected version {expected}, current is {actual}")]
    VersionConflict {
        /// The version the client said it was changing.
        expected: u64,
        /// The current version (0: the resource does not exist).
        actual: u64,
    },
    /// The request cannot be stored as given (no resourceType, id/type mismatch, bad id).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The request conflicts with the state of the store or with itself (the same
    /// resource twice in one transaction).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store is overloaded or shutting down; the request was not applied.
    #[error("store busy: {0}")]
    Busy(String),
    /// The storage layer failed (IO, corruption, a bug). The request may not have been
    /// applied; for writes, it was not acknowledged.
    #[error("storage error: {0}")]
    Storage(String),
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The resource type.
    pub resource_type: String,
    /// The logical id.
    pub id: String,
    /// The version (1, 2, ...), also in `meta.versionId`.
    pub version: u64,
    /// When this version was written: UTC milliseconds since the epoch.
    pub last_updated: i64,
    /// The same instant as RFC 3339 text with milliseconds (`2024-05-01T12:00:00.123Z`),
    /// as in `meta.lastUpdated`.
    pub last_updated_text: String,
    /// Whether this version is a delete (tombstone).
    pub deleted: bool,
    /// The resource with `id`, `meta.versionId` and `meta.lastUpdated` set. For a
    /// tombstone only `resourceType`, `id` and `meta`.
    pub resource: Arc<Value>,
}

/// The answer to [`FhirStore::read`] and [`FhirStore::vread`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    /// The resource (version).
    Found(Stored),
    /// The resource is deleted (read) or the version is a delete (vread): 410.
    Gone {
        /// The version of the delete.
        version: u64,
        /// When it was deleted (UTC ms).
        last_updated: i64,
    },
    /// No such resource (or version): 404.
    NotFound,
}

impl ReadOutcome {
    /// The stored resource, if found.
    pub fn found(self) -> Option<Stored> {
        match self {
            ReadOutcome::Found(s) => Some(s),
            _ => None,
        }
    }
}

/// Which history [`FhirStore::history`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    /// All resources (`GET [base]/_history`).
    System,
    /// One type (`GET [base]/Patient/_history`).
    Type(String),
    /// One resource (`GET [base]/Patient/1/_history`).
    Instance(String, String),
}

/// History parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `_since`: only versions written at or after this instant (UTC ms).
    pub since: Option<i64>,
    /// `_at`: only versions that were current at this instant (UTC ms): written at or
    /// before it and not superseded by a later version written at or before it.
    pub at: Option<i64>,
    /// `_count`: the page size (default 50, at most 1000).
    pub count: Option<usize>,
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The versions, newest first (deletes included, as tombstones).
    pub entries: Vec<Stored>,
    /// The cursor of the next page, `None` on the last page. Cursors are positions in
    /// the store's write order, so versions written after the first page was read never
    /// shift later pages.
    pub next_cursor: Option<String>,
}

/// One operation of a [`FhirStore::transaction`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Create; `id: None` lets the store assign one. A caller that has to rewrite
    /// `urn:uuid:` references to the new resource assigns the id first with
    /// [`new_id`](crate::new_id) and passes it here.
    Create {
        /// The resource (any id in it is replaced).
        resource: Value,
        /// The id to create it under.
        id: Option<String>,
    },
    /// Update (or create under the given id).
    Update {
        /// The resource type.
        resource_type: String,
        /// The id.
        id: String,
        /// The new content.
        resource: Value,
        /// `If-Match`: the version the client read.
        if_match: Option<u64>,
    },
    /// Delete.
    Delete {
        /// The resource type.
        resource_type: String,
        /// The id.
        id: String,
        /// `If-Match`.
        if_match: Option<u64>,
    },
}

/// The result of one [`WriteOp`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// A new resource (a create, or an update of an absent or deleted resource).
    Created(Stored),
    /// A new version of an existing resource.
    Updated(Stored),
    /// A delete: the tombstone, or `None` when there was nothing to delete.
    Deleted(Option<Stored>),
}

impl WriteOutcome {
    /// The stored version, if any.
    pub fn stored(&self) -> Option<&Stored> {
        match self {
            WriteOutcome::Created(s) | WriteOutcome::Updated(s) => Some(s),
            WriteOutcome::Deleted(s) => s.as_ref(),
        }
    }
}

/// The default page size of [`FhirStore::search`] (`_count` absent).
pub const DEFAULT_SEARCH_COUNT: u32 = 20;
/// The largest page [`FhirStore::search`] returns; larger `_count`s are clamped.
pub const MAX_SEARCH_COUNT: u32 = 1_000;

/// Which page of a search to return. Values given here take precedence over the
/// query's own `_count` / `_cursor` (the server may cap `_count`, or carry the cursor
/// outside the query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPage {
    /// The page size: [`DEFAULT_SEARCH_COUNT`] when neither this nor `_count` is given,
    /// at most [`MAX_SEARCH_COUNT`]. 0 returns no matches (with `_total`: the count only).
    pub count: Option<u32>,
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchResult {
    /// The matching resources of this page, in the query's `_sort` order (by write
    /// order of their current version without `_sort`).
    pub matches: Vec<Stored>,
    /// The cursor of the next page, `None` on the last page. It is a keyset position
    /// (the sort values and write sequence of the last match), so resources written
    /// between pages never shift later pages: each resource that matched throughout is
    /// returned exactly once, and new matches appear where their sort position lies
    /// ahead of the cursor.
    pub next_cursor: Option<String>,
    /// The number of matches over all pages, when `_total` is `accurate` or `estimate`.
    pub total: Option<u64>,
    /// `_include` / `_revinclude` resources of this page (each once, none of them a
    /// match of the page).
    pub included: Vec<Stored>,
}

/// A FHIR resource store: versioned resources with history and search indexes.
///
/// All methods are blocking; the async server calls them through `spawn_blocking`.
/// Every write is durable when it returns `Ok` (it survives a crash of the process or
/// the machine right after).
///
/// The store does not validate resources (the server does so before writing) beyond
/// what it needs: a JSON object whose `resourceType` matches, and a valid id. Search
/// index values are extracted with [`vigil_fhir::search::extract`]; a parameter that
/// fails to extract is not indexed, and the write still succeeds.
pub trait FhirStore: Send + Sync {
    /// Create a resource under a new server-assigned id (any id in the body is ignored).
    fn create(&self, resource: Value) -> Result<Stored>;

    /// Update `resource_type/id` to `resource`; returns the new version and whether it
    /// was created (the resource did not exist or was deleted: update-as-create).
    /// `if_match` must then name the current version, else
    /// [`StoreError::VersionConflict`]. The body's `id` must be absent or equal `id`.
    fn update(
        &self,
        resource_type: &str,
        id: &str,
        resource: Value,
        if_match: Option<u64>,
    ) -> Result<(Stored, bool)>;

    /// Delete; history is kept and reads answer [`ReadOutcome::Gone`]. Returns the
    /// tombstone, or `None` if the resource did not exist or was already deleted.
    fn delete(
        &self,
        resource_type: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<Option<Stored>>;

    /// The current version.
    fn read(&self, resource_type: &str, id: &str) -> Result<ReadOutcome>;

    /// A given version.
    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<ReadOutcome>;

    /// One page of history, newest first.
    fn history(&self, scope: HistoryScope, query: HistoryQuery) -> Result<HistoryPage>;

    /// Apply all operations atomically: all succeed, or none is applied and the first
    /// failure is returned. Outcomes are in the order of `ops`.
    ///
    /// The caller resolves what FHIR transactions leave to the server before calling:
    /// `urn:uuid:` references (assign ids with [`new_id`](crate::new_id) and pass them in
    /// [`WriteOp::Create`]), conditional references and conditional creates/updates
    /// (search first), and the processing order FHIR prescribes (deletes, creates,
    /// updates). The same resource may appear only once ([`StoreError::Conflict`]).
    fn transaction(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>>;

    /// One page of a search: the current versions of live resources matching every
    /// clause of `query`, with the semantics of [`vigil_fhir::search::matching`] (its
    /// [`MatchContext`](vigil_fhir::search::MatchContext) without base URL or `now`),
    /// sorted by `_sort`, plus `_total` and `_include`/`_revinclude` resources.
    ///
    /// Errors: [`StoreError::Invalid`] for a cursor this query did not produce and for
    /// criteria the store cannot evaluate (`:in`, `:above`, `:below` on tokens, `near`,
    /// sorting on composites).
    fn search(&self, query: &SearchQuery, page: &SearchPage) -> Result<SearchResult>;

    /// The search index rows of the current version, as (parameter code, value); empty
    /// for deleted or absent resources. For tests and debugging.
    fn index_values(&self, resource_type: &str, id: &str)
        -> Result<Vec<(String, OwnedIndexValue)>>;
}
