//! Audit queries over the state store: aggregation (`audit stats`) and rendering (table/json/csv).
//! Pure functions over [`crate::store::FindingRecord`]s so both backends give the same answers.
