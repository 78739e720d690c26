//! The state store contract suite, shared by every backend's tests (feature `contract`).
