//! Integration tests for the runner SDK: the contract's shape, the lease types' JSON, and the
//! in-memory harness driving the example runner.

// `main` in the example only runs when the file is built as an example; the tests use its runner.
#[allow(dead_code)]
#[path = "../../examples/hello_runner.rs"]
mod hello_runner;

mod additions;
mod contract;
mod harness;
mod lease_json;
