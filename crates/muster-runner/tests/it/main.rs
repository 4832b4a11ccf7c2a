//! The runner daemon against a real coordinator (a server on a loopback port over a temporary
//! SQLite file), in this process: SDK runners and the `exec` handler, end to end.

mod sdk_example;
