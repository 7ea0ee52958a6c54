//! The guide's chapters as doc tests: `cargo test --doc --features testing` compiles and runs
//! every Rust code block of the chapters listed here, as it does for rustdoc examples.
//!
//! Chapters not listed here hold Rust code only as mdBook `{{#include}}` blocks, which are
//! compiled (and run) where they come from: `examples/` and `tests/guide_examples.rs`.
//! `tests/guide_links.rs` fails if a chapter has Rust code that is neither listed here nor
//! included.
//!
//! Compiled only for doc tests, with the `testing` feature: the examples run on the test kit's
//! in-memory storage and network.

#[doc = include_str!("../guide/src/network.md")]
pub struct Network;

/// The file log store chapter (needs feature `file-store` too).
#[cfg(feature = "file-store")]
#[doc = include_str!("../guide/src/file-store.md")]
pub struct FileStore;

/// The TCP transport chapter (needs features `file-store` and `tls` too).
#[cfg(all(feature = "file-store", feature = "tls"))]
#[doc = include_str!("../guide/src/tcp.md")]
pub struct Tcp;

/// The many-groups chapter (needs features `file-store` and `tcp` too).
#[cfg(all(feature = "file-store", feature = "tcp"))]
#[doc = include_str!("../guide/src/multi.md")]
pub struct Multi;

#[doc = include_str!("../guide/src/membership.md")]
pub struct Membership;

#[doc = include_str!("../guide/src/snapshots.md")]
pub struct Snapshots;

#[doc = include_str!("../guide/src/reads.md")]
pub struct Reads;

/// The operations chapter (needs feature `metrics` too: its Prometheus example).
#[cfg(feature = "metrics")]
#[doc = include_str!("../guide/src/operations.md")]
pub struct Operations;

#[doc = include_str!("../guide/src/faq.md")]
pub struct Faq;

/// README.md's Rust code, if it ever has some.
#[doc = include_str!("../README.md")]
pub struct Readme;
