//! Throttling of failed authentications per address: an address that fails `limit` times within
//! a fixed 60 s window is refused with 429 until that window ends, before any token lookup. So
//! online guessing is slowed to `limit` tries a minute, and a flood of unknown tokens costs the
//! store nothing once its address is blocked.
//!
//! Time is passed in (the coordinator's clock), so the rule is tested without sleeping.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

use muster_core::{ErrorCode, Timestamp};
use muster_store::NewAuditEntry;
use serde_json::json;

use crate::identity::audit_actions;
use crate::{Coordinator, ServiceError};

/// How long failures are counted from an address's first failure; a blocked address waits for
/// the end of this window.
pub(crate) const WINDOW_SECONDS: u32 = 60;
const WINDOW_MILLIS: i64 = WINDOW_SECONDS as i64 * 1000;

/// Addresses tracked at most. An entry is a few dozen bytes, so the counters stay well under a
/// megabyte however many addresses fail.
pub(crate) const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// What failures are counted by: an IPv4 address, or the /64 prefix of an IPv6 one, since one
/// host (or one customer of a provider) is usually given a whole /64 and could otherwise cycle
/// through 2^64 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressKey {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl AddressKey {
    pub(crate) fn of(address: IpAddr) -> AddressKey {
        match address {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; they are IPv4 hosts
            // and must not share one /64 key.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => AddressKey::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(prefix) << 64))
            }
        }
    }
}

/// The failures of one address in its current window.
#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Timestamp,
    failures: u32,
}

impl FailureWindow {
    fn ends(&self) -> Timestamp {
        self.started.plus_millis(WINDOW_MILLIS)
    }

    fn has_ended(&self, now: Timestamp) -> bool {
        now >= self.ends()
    }
}

/// The failure that blocked an address (so the caller records it once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewlyBlocked {
    pub(crate) key: AddressKey,
    pub(crate) failures: u32,
}

/// The counters of failed authentications, bounded to [`MAX_TRACKED_ADDRESSES`] addresses.
pub(crate) struct AuthThrottle {
    /// Failures an address may have in a window; `None` turns throttling off.
    limit: Option<u32>,
    capacity: usize,
    windows: Mutex<HashMap<AddressKey, FailureWindow>>,
}

impl AuthThrottle {
    /// A throttle allowing `limit` failures per address per window; `None` or 0 turns it off.
    pub(crate) fn new(limit: Option<u32>) -> AuthThrottle {
        AuthThrottle::with_capacity(limit, MAX_TRACKED_ADDRESSES)
    }

    fn with_capacity(limit: Option<u32>, capacity: usize) -> AuthThrottle {
        AuthThrottle {
            limit: limit.filter(|limit| *limit > 0),
            capacity,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<AddressKey, FailureWindow>> {
        // The map holds plain counters that every update leaves consistent, so a panic in
        // another holder leaves nothing half-changed.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whole seconds (at least 1) until `address` may authenticate again, or `None` when it is
    /// not blocked.
    pub(crate) fn retry_after_s(&self, address: IpAddr, now: Timestamp) -> Option<u64> {
        let limit = self.limit?;
        let key = AddressKey::of(address);
        let window = *self.windows().get(&key)?;
        if window.failures < limit || window.has_ended(now) {
            return None;
        }
        let remaining_millis = window.ends().millis_since(now).max(0);
        let seconds = (remaining_millis + 999) / 1000;
        Some(u64::try_from(seconds).unwrap_or(1).max(1))
    }

    /// Count a failed authentication from `address`; answers the address and its failures when
    /// this failure is the one that blocked it (once per window).
    pub(crate) fn record_failure(&self, address: IpAddr, now: Timestamp) -> Option<NewlyBlocked> {
        let limit = self.limit?;
        let key = AddressKey::of(address);
        let mut windows = self.windows();
        if !windows.contains_key(&key)
            && windows.len() >= self.capacity
            && !make_room(&mut windows, self.capacity, now, limit)
        {
            return None;
        }
        let window = windows.entry(key).or_insert(FailureWindow {
            started: now,
            failures: 0,
        });
        if window.has_ended(now) {
            *window = FailureWindow {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        (window.failures == limit).then_some(NewlyBlocked {
            key,
            failures: window.failures,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows().len()
    }
}

/// Free one entry of a full map, or answer false when every entry is a blocked address.
///
/// Windows that ended go first. Then the entry with the fewest failures (of those, the oldest
/// window): an attacker cycling through addresses adds entries with one failure each, so it
/// evicts at worst quiet entries (its own, mostly), never a blocked address with many
/// failures. When every tracked address is blocked the newcomer is not tracked rather than
/// unblocking one: the blocked stay blocked until their windows end.
fn make_room(
    windows: &mut HashMap<AddressKey, FailureWindow>,
    capacity: usize,
    now: Timestamp,
    limit: u32,
) -> bool {
    windows.retain(|_, window| !window.has_ended(now));
    if windows.len() < capacity {
        return true;
    }
    let quietest = windows
        .iter()
        .min_by_key(|(_, window)| (window.failures, window.started))
        .map(|(key, window)| (*key, window.failures));
    match quietest {
        Some((key, failures)) if failures < limit => {
            windows.remove(&key);
            true
        }
        Some(_) => false,
        None => true,
    }
}

/// Whether `error` refused the caller's credentials (unknown, revoked or expired token, none
/// at all). A valid token on a route of the other audience (403) proved who the caller is, so
/// it is not a failed authentication.
pub(crate) fn is_failed_authentication(error: &ServiceError) -> bool {
    matches!(
        error.code(),
        ErrorCode::Unauthorized | ErrorCode::TokenExpired
    )
}

impl Coordinator {
    /// `too_many_requests` with the seconds to wait when `peer` is blocked; call before looking
    /// up anything the request's credentials name. Requests from an unknown address are never
    /// refused here.
    pub(crate) fn refuse_if_throttled(&self, peer: Option<IpAddr>) -> Result<(), ServiceError> {
        let Some(peer) = peer else {
            return Ok(());
        };
        match self.auth_throttle.retry_after_s(peer, self.clock.now()) {
            None => Ok(()),
            Some(retry_after_s) => Err(ServiceError::too_many_requests(
                format!(
                    "too many failed authentications from this address; try again in {retry_after_s} s"
                ),
                retry_after_s,
            )),
        }
    }

    /// Count a failed authentication from `peer`; the failure that blocks the address is
    /// recorded in the audit log (once per window, so a flood adds one entry a minute at most).
    pub(crate) async fn record_failed_authentication(&self, peer: Option<IpAddr>) {
        let Some(peer) = peer else {
            return;
        };
        let now = self.clock.now();
        let Some(blocked) = self.auth_throttle.record_failure(peer, now) else {
            return;
        };
        let address = format!("address:{}", blocked.key);
        tracing::warn!(
            %address,
            failures = blocked.failures,
            "too many failed authentications: address refused until its minute ends"
        );
        let audit = NewAuditEntry {
            at: now,
            actor: address.clone(),
            action: audit_actions::AUTH_THROTTLED.to_string(),
            subject: address,
            detail: json!({"failures": blocked.failures, "window_s": WINDOW_SECONDS}),
            organization_id: None,
        };
        // The refusal works without its audit entry; a store that cannot take one now must
        // not turn a 401 into a 500.
        if let Err(error) = self.store.append_audit(audit).await {
            tracing::warn!(%error, "could not record auth.throttled in the audit log");
        }
    }

    /// The answer to a request whose credentials a front end refused before it could call
    /// [`Coordinator::authenticate`] (no `Authorization` header, a malformed one): `refusal`,
    /// counted as a failed authentication of `peer`, or `too_many_requests` while `peer` is
    /// blocked.
    pub async fn refuse_credentials(
        &self,
        refusal: ServiceError,
        peer: Option<IpAddr>,
    ) -> ServiceError {
        if let Err(throttled) = self.refuse_if_throttled(peer) {
            return throttled;
        }
        if is_failed_authentication(&refusal) {
            self.record_failed_authentication(peer).await;
        }
        refusal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    const START: Timestamp = Timestamp(1_000_000);

    #[test]
    fn an_address_is_blocked_once_it_reaches_the_limit_and_the_blocking_failure_is_reported_once() {
        let throttle = AuthThrottle::new(Some(3));
        let address = v4("192.0.2.7");
        assert_eq!(throttle.record_failure(address, START), None);
        assert_eq!(
            throttle.record_failure(address, START.plus_millis(10)),
            None
        );
        assert_eq!(throttle.retry_after_s(address, START.plus_millis(20)), None);
        assert_eq!(
            throttle.record_failure(address, START.plus_millis(30)),
            Some(NewlyBlocked {
                key: AddressKey::of(address),
                failures: 3
            })
        );
        // Failures already in flight when it was blocked do not report it again.
        assert_eq!(
            throttle.record_failure(address, START.plus_millis(40)),
            None
        );
        assert_eq!(throttle.retry_after_s(address, START), Some(60));
        assert_eq!(
            throttle.retry_after_s(address, START.plus_millis(500)),
            Some(60)
        );
        assert_eq!(
            throttle.retry_after_s(address, START.plus_seconds(59)),
            Some(1)
        );
        assert_eq!(
            throttle.retry_after_s(address, START.plus_millis(59_999)),
            Some(1)
        );
        // Other addresses are not affected.
        assert_eq!(throttle.retry_after_s(v4("192.0.2.8"), START), None);
    }

    #[test]
    fn the_block_ends_with_the_window_and_counting_starts_again() {
        let throttle = AuthThrottle::new(Some(2));
        let address = v4("198.51.100.1");
        throttle.record_failure(address, START);
        assert!(throttle.record_failure(address, START).is_some());
        let window_end = START.plus_seconds(WINDOW_SECONDS);
        assert_eq!(throttle.retry_after_s(address, window_end), None);
        // A new window: one failure is not enough, and the next block is reported again.
        assert_eq!(throttle.record_failure(address, window_end), None);
        assert_eq!(throttle.retry_after_s(address, window_end), None);
        assert!(throttle.record_failure(address, window_end).is_some());
        assert_eq!(throttle.retry_after_s(address, window_end), Some(60));
    }

    #[test]
    fn failures_spread_over_windows_never_block() {
        let throttle = AuthThrottle::new(Some(2));
        let address = v4("198.51.100.2");
        for minute in 0..5 {
            let now = START.plus_seconds(minute * WINDOW_SECONDS);
            assert_eq!(throttle.record_failure(address, now), None);
            assert_eq!(throttle.retry_after_s(address, now), None);
        }
    }

    #[test]
    fn no_limit_or_zero_turns_throttling_off() {
        for limit in [None, Some(0)] {
            let throttle = AuthThrottle::new(limit);
            let address = v4("203.0.113.9");
            for _ in 0..1000 {
                assert_eq!(throttle.record_failure(address, START), None);
            }
            assert_eq!(throttle.retry_after_s(address, START), None);
            assert_eq!(throttle.tracked(), 0);
        }
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64_bit_prefix() {
        let throttle = AuthThrottle::new(Some(2));
        let first: IpAddr = "2001:db8:1:2::1".parse().expect("an address");
        let same_prefix: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff"
            .parse()
            .expect("an address");
        let other_prefix: IpAddr = "2001:db8:1:3::1".parse().expect("an address");
        throttle.record_failure(first, START);
        let blocked = throttle
            .record_failure(same_prefix, START)
            .expect("the second failure of the /64 blocks it");
        assert_eq!(blocked.key.to_string(), "2001:db8:1:2::/64");
        assert_eq!(throttle.retry_after_s(first, START), Some(60));
        assert_eq!(
            throttle.retry_after_s("2001:db8:1:2:abcd::9".parse().expect("an address"), START),
            Some(60)
        );
        assert_eq!(throttle.retry_after_s(other_prefix, START), None);
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_count_as_their_ipv4_address() {
        let throttle = AuthThrottle::new(Some(1));
        let mapped: IpAddr = "::ffff:192.0.2.33".parse().expect("an address");
        let blocked = throttle.record_failure(mapped, START).expect("blocked");
        assert_eq!(blocked.key.to_string(), "192.0.2.33");
        assert_eq!(throttle.retry_after_s(v4("192.0.2.33"), START), Some(60));
        assert_eq!(
            throttle.retry_after_s("::ffff:192.0.2.34".parse().expect("an address"), START),
            None
        );
    }

    fn numbered(index: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + index))
    }

    #[test]
    fn tracking_is_bounded_and_ended_windows_are_dropped_first() {
        let throttle = AuthThrottle::with_capacity(Some(5), 4);
        for index in 0..4 {
            throttle.record_failure(numbered(index), START);
        }
        assert_eq!(throttle.tracked(), 4);
        // All four windows have ended: the newcomer clears them all.
        let later = START.plus_seconds(WINDOW_SECONDS);
        throttle.record_failure(numbered(100), later);
        assert_eq!(throttle.tracked(), 1);
        assert_eq!(AuthThrottle::new(Some(5)).capacity, MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn a_full_map_evicts_the_quietest_address_never_a_blocked_one() {
        let throttle = AuthThrottle::with_capacity(Some(3), 3);
        let blocked = numbered(1);
        for _ in 0..3 {
            throttle.record_failure(blocked, START);
        }
        let busy = numbered(2);
        throttle.record_failure(busy, START);
        throttle.record_failure(busy, START);
        throttle.record_failure(numbered(3), START);
        // An attacker cycling addresses: each newcomer evicts the quietest entry.
        for index in 10..1000 {
            throttle.record_failure(numbered(index), START.plus_millis(i64::from(index)));
            assert_eq!(throttle.tracked(), 3);
        }
        assert_eq!(throttle.retry_after_s(blocked, START), Some(60));
        // The busy address kept its two failures: one more blocks it.
        assert!(throttle.record_failure(busy, START).is_some());
    }

    #[test]
    fn when_every_tracked_address_is_blocked_a_newcomer_is_not_tracked() {
        let throttle = AuthThrottle::with_capacity(Some(1), 2);
        throttle.record_failure(numbered(1), START);
        throttle.record_failure(numbered(2), START);
        assert_eq!(throttle.record_failure(numbered(3), START), None);
        assert_eq!(throttle.tracked(), 2);
        assert_eq!(throttle.retry_after_s(numbered(1), START), Some(60));
        assert_eq!(throttle.retry_after_s(numbered(2), START), Some(60));
        assert_eq!(throttle.retry_after_s(numbered(3), START), None);
    }
}
