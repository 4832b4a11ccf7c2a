use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time as milliseconds since the Unix epoch, UTC.
///
/// Milliseconds are fine-grained enough for leases and backoff and keep every store column an
/// integer that sorts and compares cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    pub fn plus_seconds(self, seconds: u32) -> Timestamp {
        self.plus_millis(i64::from(seconds) * 1000)
    }

    /// Milliseconds from `earlier` to `self`, negative when `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The source of "now" for everything that is not pure: the server asks it once per request and
/// passes the answer down, which lets tests move time by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(millis)
    }
}
