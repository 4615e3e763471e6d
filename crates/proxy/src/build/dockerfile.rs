//! Parsing a Dockerfile as dockerd's classic builder does (placeholder: being written).
