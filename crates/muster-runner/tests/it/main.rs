//! The runner daemon against a real coordinator (a server on a loopback port over a temporary
//! SQLite file), in this process: SDK runners end to end over HTTP; and the same daemon loop over
//! an in-memory transport, to show the loop depends on the `Transport` trait only.

mod boundaries;
mod daemon_loop;
mod exec_runner;
mod memory;
mod sdk_example;
