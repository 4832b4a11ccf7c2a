use std::str::FromStr;

use serde_json::Value;

use crate::Timestamp;

/// Severity of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ();
    fn from_str(text: &str) -> Result<LogLevel, ()> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .ok_or(())
    }
}

/// A log entry as a runner sends it. With `seq`, a resent entry is stored once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogEntry {
    pub seq: Option<u64>,
    pub level: LogLevel,
    pub message: String,
    pub metadata: Option<Value>,
}

impl NewLogEntry {
    /// Bytes counted against the job's log cap.
    pub fn weight(&self) -> u64 {
        let metadata = self
            .metadata
            .as_ref()
            .map_or(0, |value| value.to_string().len());
        (self.message.len() + metadata) as u64
    }
}

/// A stored log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub ts: Timestamp,
    pub level: LogLevel,
    pub message: String,
    pub metadata: Option<Value>,
}
