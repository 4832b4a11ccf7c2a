//! muster-server against the HTTP contract (`shared/api-v1.md`): every route, its happy path
//! and its errors, driven over real HTTP against a real server on a loopback port with a
//! temporary SQLite store. Where time matters the server runs on a `ManualClock` and the test
//! applies deadlines with `server.reap()` instead of sleeping.

mod artifacts;
mod attempts;
mod auth;
mod authorization;
mod bad_input;
mod bulk;
mod burn_down;
mod connections;
mod fencing;
mod https;
mod identity;
mod jobs;
mod kinds;
mod logs;
mod ops;
mod organizations;
mod parity;
mod postgres;
mod protocol;
mod quotas;
mod registration;
mod retention;
mod runners;
mod schemathesis;
mod sessions;
mod signed_results;
mod support;
mod throttle;
mod user_tokens;
mod workloads;
