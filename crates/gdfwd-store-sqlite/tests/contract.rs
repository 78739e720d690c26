//! The shared state store contract suite against SQLite: one fresh database file per case.

use std::sync::Arc;

use gdfwd_core::contract::StoreSetup;
use gdfwd_core::store::StateStore;
use gdfwd_store_sqlite::SqliteStore;

async fn make_store(setup: StoreSetup) -> Arc<dyn StateStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{}.db", setup.name));
    let store = SqliteStore::open(&path, setup.clock_arc(), setup.retention).expect("open store");
    gdfwd_core::contract::with_guard(Arc::new(store), dir)
}

gdfwd_core::contract_tests!(make_store);
