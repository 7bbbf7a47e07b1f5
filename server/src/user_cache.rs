//! What a node remembers of users between requests (issue 19): a bounded cache of what it read
//! of each user, and the throttle of sources whose authentications keep failing. Pure: no
//! I/O, no clock (every call is given `now`), tested in-module.
//!
//! **Cache.** An entry is what one read of a user found (the record, or that there is no such
//! user) and when that read *began*, so its age bounds how old what it says is. An entry
//! younger than the validity (`security.cache_ms`) admits requests; from half the validity a
//! request also asks for a refresh in the background, so a user in use is read again before
//! its entry expires and its requests never wait; an older entry admits nothing and the
//! request waits for a read. Hence a revoke is in force on every node within the validity of
//! its acknowledgement. Known users and unknown names are kept apart, each in a pool of
//! `security.cache_max_users` entries, the oldest evicted first, so names that do not exist
//! (a token spray) never push out the users in use; an expired entry of a known user stays
//! until evicted, to tell a known user from a sprayed name.
//!
//! **Throttle.** Failed authentications are counted per source (an IPv4 address, or the /64
//! an IPv6 address is in: one host commonly holds a whole /64) in fixed windows; a source past
//! `security.auth_failure_limit` failures in a window of `security.auth_failure_window_ms` is
//! refused without a read for names not known to be users until the window ends, so a spray
//! costs at most that many quorum reads per window and source. Known users (a valid token
//! from behind the same NAT) still get in. At most [`MAX_SOURCES`] sources are tracked, the
//! oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default of `security.cache_max_users`.
pub const DEFAULT_CACHE_MAX_USERS: usize = 16_384;
/// Default of `security.auth_failure_limit`.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 20;
/// Default of `security.auth_failure_window_ms`.
pub const DEFAULT_AUTH_FAILURE_WINDOW_MS: u64 = 10_000;
/// The most sources the throttle tracks at once.
pub const MAX_SOURCES: usize = 16_384;

/// A bounded map that evicts the entry inserted (or replaced) longest ago.
#[derive(Debug)]
struct Fifo<K, V> {
    cap: usize,
    entries: HashMap<K, (V, u64)>,
    /// Keys in insertion order with the sequence number they were inserted with; a key
    /// replaced or removed since leaves a stale pair, skipped when it comes up and dropped
    /// when the queue grows past twice the cap.
    order: VecDeque<(K, u64)>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> Fifo<K, V> {
    fn new(cap: usize) -> Self {
        Fifo {
            cap: cap.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    fn insert(&mut self, key: K, value: V) {
        self.next += 1;
        self.entries.insert(key.clone(), (value, self.next));
        self.order.push_back((key, self.next));
        while self.entries.len() > self.cap {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|(_, s)| *s == seq) {
                self.entries.remove(&old);
            }
        }
        if self.order.len() > 2 * self.cap + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(k, seq)| entries.get(k).is_some_and(|(_, s)| s == seq));
        }
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What one read of a user found, and when it began.
#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    read_at: Instant,
}

/// What the cache holds of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V> {
    /// Read less than the validity ago: admit by it. `refresh`: it is past half the validity,
    /// read it again in the background.
    Fresh { value: Option<V>, refresh: bool },
    /// Nothing that may admit a request: read it. `known_user`: an expired entry of a user
    /// that existed.
    Read { known_user: bool },
}

/// The users a node read lately (see the module doc); `V` is what a read of a user gives.
#[derive(Debug)]
pub struct UserCache<V> {
    validity: Duration,
    known: Fifo<Arc<str>, Entry<V>>,
    unknown: Fifo<Arc<str>, Entry<()>>,
    /// Bumped by every [`forget`](Self::forget): a read that began before one is not kept.
    epoch: u64,
}

impl<V: Clone> UserCache<V> {
    /// A cache whose entries admit requests for `validity`, holding at most `max_users` known
    /// users and as many unknown names.
    pub fn new(validity: Duration, max_users: usize) -> Self {
        UserCache {
            validity,
            known: Fifo::new(max_users),
            unknown: Fifo::new(max_users),
            epoch: 0,
        }
    }

    /// How long an entry admits requests.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    pub fn lookup(&self, name: &str, now: Instant) -> Lookup<V> {
        let fresh = |read_at: Instant| {
            let age = now.saturating_duration_since(read_at);
            (age < self.validity).then_some(age >= self.validity / 2)
        };
        if let Some(e) = self.known.get(&Arc::from(name)) {
            return match fresh(e.read_at) {
                Some(refresh) => Lookup::Fresh {
                    value: Some(e.value.clone()),
                    refresh,
                },
                None => Lookup::Read { known_user: true },
            };
        }
        if let Some(e) = self.unknown.get(&Arc::from(name))
            && let Some(refresh) = fresh(e.read_at)
        {
            return Lookup::Fresh {
                value: None,
                refresh,
            };
        }
        Lookup::Read { known_user: false }
    }

    /// The epoch a read that begins now is to be remembered with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps what a read of `name` that began at `read_at`, in `epoch`, found: `Some` for a
    /// user, `None` for no such user. Ignored if `name` was forgotten since it began.
    pub fn remember(&mut self, name: &str, found: Option<V>, read_at: Instant, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        let key: Arc<str> = Arc::from(name);
        match found {
            Some(value) => {
                self.unknown.remove(&key);
                self.known.insert(key, Entry { value, read_at });
            }
            None => {
                self.known.remove(&key);
                self.unknown.insert(key, Entry { value: (), read_at });
            }
        }
    }

    /// Drops what is cached of `name` (this node just changed it), and keeps reads that began
    /// before from being remembered.
    pub fn forget(&mut self, name: &str) {
        let key: Arc<str> = Arc::from(name);
        self.known.remove(&key);
        self.unknown.remove(&key);
        self.epoch += 1;
    }

    /// Entries held: known users, unknown names.
    pub fn len(&self) -> (usize, usize) {
        (self.known.len(), self.unknown.len())
    }

    /// Entries of the eviction queues, stale ones included (bounded too).
    #[cfg(test)]
    fn queued(&self) -> (usize, usize) {
        (self.known.order.len(), self.unknown.order.len())
    }
}

/// Where a request came from, as the throttle counts it: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(addr: IpAddr) -> Source {
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(prefix.into()))
                }
            },
            v4 => Source(v4),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Failed authentications per source in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Counts failed authentications per source (see the module doc).
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    sources: Fifo<Source, Failures>,
}

impl Throttle {
    /// Past `limit` failures in `window`, a source is throttled until the window ends.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_SOURCES)
    }

    fn with_capacity(limit: u32, window: Duration, sources: usize) -> Self {
        Throttle {
            limit,
            window,
            sources: Fifo::new(sources),
        }
    }

    /// How long `source` is still throttled, if it is.
    pub fn throttled(&self, source: Source, now: Instant) -> Option<Duration> {
        let f = self.sources.get(&source)?;
        let left = self
            .window
            .checked_sub(now.saturating_duration_since(f.since))?;
        (f.count >= self.limit && !left.is_zero()).then_some(left)
    }

    /// Counts a failed authentication of `source`.
    pub fn failed(&mut self, source: Source, now: Instant) {
        if let Some(f) = self.sources.get_mut(&source)
            && now.saturating_duration_since(f.since) < self.window
        {
            f.count = f.count.saturating_add(1);
            return;
        }
        self.sources.insert(
            source,
            Failures {
                since: now,
                count: 1,
            },
        );
    }

    /// The limit and window, for messages.
    pub fn limits(&self) -> (u32, Duration) {
        (self.limit, self.window)
    }

    /// Sources tracked, and entries of the eviction queue (stale ones included).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.sources.len(), self.sources.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALIDITY: Duration = Duration::from_millis(2_000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_entry_admits_for_the_validity_from_when_its_read_began_and_never_after() {
        let t0 = Instant::now();
        let mut c: UserCache<&str> = UserCache::new(VALIDITY, 8);
        c.remember("alice", Some("record"), t0, c.epoch());
        c.remember("nobody", None, t0, c.epoch());
        for (name, value) in [("alice", Some("record")), ("nobody", None)] {
            assert_eq!(
                c.lookup(name, t0 + ms(999)),
                Lookup::Fresh {
                    value,
                    refresh: false
                }
            );
            // From half the validity: still admits, and asks for a refresh.
            assert_eq!(
                c.lookup(name, t0 + ms(1_000)),
                Lookup::Fresh {
                    value,
                    refresh: true
                }
            );
            assert_eq!(
                c.lookup(name, t0 + ms(1_999)),
                Lookup::Fresh {
                    value,
                    refresh: true
                }
            );
        }
        // At the validity, nothing it says admits a request any more.
        assert_eq!(
            c.lookup("alice", t0 + VALIDITY),
            Lookup::Read { known_user: true }
        );
        assert_eq!(
            c.lookup("nobody", t0 + VALIDITY),
            Lookup::Read { known_user: false }
        );
        assert_eq!(
            c.lookup("never-read", t0),
            Lookup::Read { known_user: false }
        );
        // A user that is removed becomes an unknown name, and back.
        c.remember("alice", None, t0 + ms(10), c.epoch());
        assert_eq!(c.len(), (0, 2));
        c.remember("alice", Some("again"), t0 + ms(20), c.epoch());
        assert_eq!(c.len(), (1, 1));
    }

    #[test]
    fn a_read_that_began_before_a_forget_is_not_kept() {
        let t0 = Instant::now();
        let mut c: UserCache<u32> = UserCache::new(VALIDITY, 8);
        let epoch = c.epoch();
        c.forget("alice");
        c.remember("alice", Some(1), t0, epoch);
        assert_eq!(c.lookup("alice", t0), Lookup::Read { known_user: false });
        c.remember("alice", Some(2), t0, c.epoch());
        assert_eq!(
            c.lookup("alice", t0),
            Lookup::Fresh {
                value: Some(2),
                refresh: false
            }
        );
    }

    #[test]
    fn a_million_unknown_names_stay_within_the_cap_and_keep_the_known_users() {
        let t0 = Instant::now();
        let cap = 1_000;
        let mut c: UserCache<u32> = UserCache::new(VALIDITY, cap);
        for i in 0..cap as u32 {
            c.remember(&format!("user-{i}"), Some(i), t0, c.epoch());
        }
        for i in 0..1_000_000u32 {
            // Names as a spray makes them: random, never seen again.
            let name = format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            c.remember(&name, None, t0, c.epoch());
            if i % 100_000 == 0 {
                let (known, unknown) = c.len();
                let (known_q, unknown_q) = c.queued();
                assert!(known == cap && unknown <= cap, "{known} {unknown}");
                assert!(known_q <= 2 * cap + 16 && unknown_q <= 2 * cap + 16);
            }
        }
        assert_eq!(c.len(), (cap, cap));
        for i in 0..cap as u32 {
            assert_eq!(
                c.lookup(&format!("user-{i}"), t0),
                Lookup::Fresh {
                    value: Some(i),
                    refresh: false
                },
                "a known user was pushed out by unknown names"
            );
        }
        // Refreshing one name over and over does not grow the queue either.
        for _ in 0..100_000 {
            c.remember("user-0", Some(0), t0, c.epoch());
        }
        assert!(c.queued().0 <= 2 * cap + 16);
        assert_eq!(c.len().0, cap);
    }

    #[test]
    fn the_oldest_entry_is_evicted_first() {
        let t0 = Instant::now();
        let mut c: UserCache<u32> = UserCache::new(VALIDITY, 2);
        c.remember("a", Some(1), t0, c.epoch());
        c.remember("b", Some(2), t0, c.epoch());
        c.remember("a", Some(3), t0, c.epoch()); // a is now the newest
        c.remember("c", Some(4), t0, c.epoch());
        assert_eq!(c.lookup("b", t0), Lookup::Read { known_user: false });
        assert!(matches!(
            c.lookup("a", t0),
            Lookup::Fresh { value: Some(3), .. }
        ));
        assert!(matches!(
            c.lookup("c", t0),
            Lookup::Fresh { value: Some(4), .. }
        ));
    }

    #[test]
    fn a_source_past_the_limit_is_throttled_until_its_window_ends() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, ms(10_000));
        let a = Source::of("10.0.0.1".parse().unwrap());
        let b = Source::of("10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            t.failed(a, t0);
        }
        assert_eq!(t.throttled(a, t0), None);
        t.failed(a, t0 + ms(1_000));
        assert_eq!(t.throttled(a, t0 + ms(1_000)), Some(ms(9_000)));
        assert_eq!(t.throttled(b, t0 + ms(1_000)), None);
        assert_eq!(t.throttled(a, t0 + ms(10_000)), None);
        // A new window starts from scratch.
        t.failed(a, t0 + ms(10_000));
        assert_eq!(t.throttled(a, t0 + ms(10_001)), None);
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_bit_prefix() {
        let host = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(host("2001:db8:1:2::1"), host("2001:db8:1:2:ffff::9"));
        assert_ne!(host("2001:db8:1:2::1"), host("2001:db8:1:3::1"));
        assert_eq!(host("::ffff:10.0.0.1"), host("10.0.0.1"));
        assert_eq!(host("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_million_sources_stay_within_the_cap() {
        let t0 = Instant::now();
        let mut t = Throttle::with_capacity(3, ms(10_000), 1_000);
        for i in 0..1_000_000u32 {
            t.failed(Source::of(IpAddr::V4(i.into())), t0);
        }
        let (sources, queued) = t.len();
        assert!(sources <= 1_000 && queued <= 2 * 1_000 + 16);
    }
}
