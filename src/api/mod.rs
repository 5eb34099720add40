//! The HTTP API under `/api/v1` and the web console at `/`.

pub mod console;
