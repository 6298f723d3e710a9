//! The integration tests, one binary grouped by what they test (tests/README.md says which
//! folder covers which part of src/). One binary, not one per file: each file built alone
//! linked the whole crate again, 50 builds that took 460 s of a CI build's CPU; here the
//! tests of every folder also share the two cores without a gap between files. The fuzzing
//! pass (tests/fuzz.rs) stays its own binary: it installs a capping allocator.

mod common;

mod archive;
mod files;
mod house;
mod images;
mod lab;
mod models;
mod oracle;
mod secure;
mod stress;
mod studies;
