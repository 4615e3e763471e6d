//! Real components on loopback for tests (placeholder until the testbed lands).
