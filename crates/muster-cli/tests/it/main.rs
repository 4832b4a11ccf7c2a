//! The `muster` binary as a process: its command line, its data directory, and what survives a
//! SIGKILL. These tests start the real executable Cargo built for this package.

mod cli;
mod crash;
mod process;
