//! Search-parameter extraction (being written).
