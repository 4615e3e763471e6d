//! Design notes: how the endpoint stays transparent, what it refuses, and why.
//!
//! (Completed with the enforcement work; see the crate README for the current behaviour.)
