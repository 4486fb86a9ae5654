//! Runtimes: where a revision's instances run.
