//! End-to-end tests live in `tests/` (one binary, `tests/e2e.rs`, with a module per area);
//! this library is empty so the package has a target.
