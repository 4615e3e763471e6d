//! Design notes: decisions, known bypasses of earlier tools, and the tests that pin them.
//!
//! (Written out in full once the engine's behaviour is settled; see the crate README.)
