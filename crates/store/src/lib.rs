//! Vigil's FHIR resource store: the [`FhirStore`] trait every backend implements, and
//! [`SqliteStore`], the embedded backend on SQLite.
//!
//! A store keeps every version of every resource (`meta.versionId` and
//! `meta.lastUpdated` are set on each write), answers reads of deleted resources with
//! [`ReadOutcome::Gone`], lists history newest first with stable cursors, applies
//! transactions atomically, and maintains the search index rows of each resource's
//! current version (extracted with [`vigil_fhir::search::extract`]; see
//! `sqlite/schema.rs` for the table layout searches run against).
//!
//! The shared behaviour is pinned down by the conformance suite in [`conformance`],
//! which each backend's tests instantiate with [`store_conformance_tests!`].
//!
//! ```
//! use vigil_store::{FhirStore, ReadOutcome, SqliteStore};
//! let store = SqliteStore::open_in_memory().unwrap();
//! let p = store.create(serde_json::json!({"resourceType": "Patient"})).unwrap();
//! assert_eq!(p.version, 1);
//! let ReadOutcome::Found(again) = store.read("Patient", &p.id).unwrap() else { panic!() };
//! assert_eq!(again.resource["meta"]["versionId"], "1");
//! ```

mod api;
pub mod conformance;
pub mod index;
pub mod rules;
pub mod search;
mod sqlite;
mod time;

pub use api::*;
pub use sqlite::SqliteStore;
pub use time::{format_rfc3339, now_millis};

/// A new resource id, as the store assigns on create: a version 7 UUID in its usual
/// text form (48 bits of UTC milliseconds, then random bits). Time-ordered ids keep the
/// B-tree inserts of a write near the end of each index (random ids would touch a cold
/// page per index and resource once the database outgrows the cache). Transaction
/// processing uses it to give `urn:uuid:` entries their ids before resolving references
/// to them.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (should not happen): fall back to a clock-and-counter mix,
        // still unique within this process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = (now_millis() as u64) ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32);
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        b[..8].copy_from_slice(&mix(seed).to_le_bytes());
        b[8..].copy_from_slice(&mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    let ms = u64::try_from(now_millis()).unwrap_or(0).to_be_bytes();
    b[..6].copy_from_slice(&ms[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h: String = b
        .iter()
        .flat_map(|x| [HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]])
        .map(char::from)
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
