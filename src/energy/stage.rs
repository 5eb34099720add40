//! Live stage.
