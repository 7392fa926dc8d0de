//! portfwd integration tests.
