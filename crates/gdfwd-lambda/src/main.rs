//! `bootstrap` (work in progress).
fn main() {}
