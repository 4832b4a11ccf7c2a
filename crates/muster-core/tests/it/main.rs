//! Integration tests of muster-core's pure rules: the job lifecycle state machine, backoff as the
//! lifecycle applies it, and the matching cases the unit tests in `src` leave out.
//!
//! Time is always a `Timestamp` the test picks and jitter a unit the test picks, so every
//! expected value below is exact.

#![allow(
    unreachable_pub,
    reason = "test helpers are shared between modules of this one test binary"
)]

mod backoff;
mod cancel;
mod deadlines;
mod enrollment;
mod epochs_and_fencing;
mod identity;
mod matching;
mod principals;
mod support;
mod transition_table;
mod workloads;
