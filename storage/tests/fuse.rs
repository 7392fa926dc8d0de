//! fuse-overlay integration tests (placeholder).
