//! The connections a node holds (issue 19): capacity that strangers cannot take from
//! authenticated clients and member nodes.
//!
//! Every accepted connection is in one of three classes:
//! - **unproven**: nothing yet says who is on the other end: it is still in its TLS handshake,
//!   presented no certificate and has not yet made a request that authenticated (a token
//!   client, before its first request), or, on a plain-text node, has not yet made a request;
//! - **client**: a certificate naming a user of this cluster, or a request that authenticated;
//! - **node**: a certificate naming a node of this cluster (TLS only).
//!
//! What the classes get:
//! - An unproven connection must prove itself within `limits.unauthenticated_timeout_ms`
//!   (10 s), handshake included, or it is closed: a connection that never sends a request,
//!   or sends its first one a byte at a time, holds nothing for long.
//! - At most `limits.max_unauthenticated_connections` (512) are unproven at once, and at most
//!   `limits.max_unauthenticated_per_source` (64) from one address; past either, the **oldest**
//!   unproven connection (of that address) is closed to make room. A flood of idle
//!   connections then only ever closes other idle connections: a real client proves itself
//!   with its first request, milliseconds after it connects, and is out of reach.
//! - Past `limits.max_connections` (4096) in all, the oldest unproven connection is closed for
//!   a new one; only when every open connection has proven itself is a new one refused
//!   (answered OVERLOADED and closed a second later, as before).
//! - A proven client connection that reads nothing for `limits.idle_timeout_ms` (5 minutes)
//!   is closed (the client reconnects when it needs to); node connections are never closed
//!   for idleness (they carry long-lived exchange streams).
//!
//! Closing is done by the connection's own reader ([`ConnState::closing`]): it ends its input,
//! and the HTTP/2 server ends the connection.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load_shedding::Budget;
use crate::metrics::Metrics;

/// Who a connection has shown itself to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Unproven = 0,
    Client = 1,
    Node = 2,
}

/// One open connection's state, shared by its reader, its requests and the table.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    source: Option<IpAddr>,
    opened: Instant,
    class: AtomicU8,
    /// Milliseconds after `opened` of the last read that brought bytes.
    last_read_ms: AtomicU64,
    closing: AtomicBool,
    waker: AtomicWaker,
    table: std::sync::Weak<Connections>,
    /// The bytes of request bodies this connection is sending now (`intake.rs`).
    pub bytes: Arc<Budget>,
}

impl ConnState {
    pub fn class(&self) -> Class {
        match self.class.load(Ordering::Relaxed) {
            2 => Class::Node,
            1 => Class::Client,
            _ => Class::Unproven,
        }
    }

    /// The connection showed who it is: it leaves the unproven class (never goes back).
    pub fn prove(&self, class: Class) {
        if class == Class::Unproven || self.class() >= class {
            return;
        }
        if let Some(table) = self.table.upgrade() {
            table.prove(self, class);
        } else {
            self.class.store(class as u8, Ordering::Relaxed);
        }
    }

    /// Bytes arrived: the connection is not idle.
    pub fn read_something(&self) {
        self.read_at(Instant::now());
    }

    fn read_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.opened).as_millis() as u64;
        self.last_read_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether the connection should end. Registers `cx`'s waker to be told when it should.
    pub fn closing(&self, cx: &std::task::Context<'_>) -> bool {
        if self.closing.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once the connection should end.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| {
            if self.closing(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn idle_for(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// A connection's place in the table, given back when it is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    pub state: Arc<ConnState>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(table) = self.state.table.upgrade() {
            table.remove(&self.state);
        }
    }
}

/// What a new connection gets.
#[derive(Debug)]
pub enum Admission {
    Admitted(ConnectionSlot),
    /// Every place is taken by connections that proved themselves: (open, cap).
    Full(usize, usize),
}

/// The caps (from `limits`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_unproven: usize,
    pub max_unproven_per_source: usize,
    pub unproven_timeout: Duration,
    pub idle_timeout: Duration,
    /// The request bytes one connection may be sending at once.
    pub bytes_per_connection: usize,
}

#[derive(Debug, Default)]
struct Table {
    /// Every connection counted (closing ones are not).
    open: HashMap<u64, Arc<ConnState>>,
    /// Unproven connections, oldest first (by id: ids grow).
    unproven: BTreeMap<u64, Arc<ConnState>>,
    /// Unproven connections per source address.
    unproven_by_source: HashMap<IpAddr, BTreeMap<u64, ()>>,
    next_id: u64,
}

impl Table {
    fn forget(&mut self, c: &ConnState) -> bool {
        let was = self.open.remove(&c.id).is_some();
        if self.unproven.remove(&c.id).is_some()
            && let Some(src) = c.source
            && let Some(ids) = self.unproven_by_source.get_mut(&src)
        {
            ids.remove(&c.id);
            if ids.is_empty() {
                self.unproven_by_source.remove(&src);
            }
        }
        was
    }
}

/// The connections of a node.
#[derive(Debug)]
pub struct Connections {
    pub limits: ConnectionLimits,
    table: Mutex<Table>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    /// A place for a new connection from `source`, closing the oldest unproven connections
    /// (of that source, or of all) where a cap is reached.
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Admission {
        let mut evicted = Vec::new();
        let admission = {
            let mut t = lock(&self.table);
            let l = &self.limits;
            if let Some(src) = source {
                let of_source = t.unproven_by_source.get(&src).map_or(0, BTreeMap::len);
                if of_source >= l.max_unproven_per_source
                    && let Some((&oldest, _)) =
                        t.unproven_by_source.get(&src).and_then(|m| m.iter().next())
                    && let Some(c) = t.unproven.get(&oldest).cloned()
                {
                    t.forget(&c);
                    evicted.push((c, "source"));
                }
            }
            if t.unproven.len() >= l.max_unproven
                && let Some((_, c)) = t.unproven.iter().next().map(|(k, v)| (*k, Arc::clone(v)))
            {
                t.forget(&c);
                evicted.push((c, "unauthenticated"));
            }
            if t.open.len() >= l.max_connections {
                if let Some((_, c)) = t.unproven.iter().next().map(|(k, v)| (*k, Arc::clone(v))) {
                    t.forget(&c);
                    evicted.push((c, "connections"));
                }
            }
            if t.open.len() >= l.max_connections {
                Admission::Full(t.open.len(), l.max_connections)
            } else {
                t.next_id += 1;
                let state = Arc::new(ConnState {
                    id: t.next_id,
                    source,
                    opened: Instant::now(),
                    class: AtomicU8::new(Class::Unproven as u8),
                    last_read_ms: AtomicU64::new(0),
                    closing: AtomicBool::new(false),
                    waker: AtomicWaker::new(),
                    table: Arc::downgrade(self),
                    bytes: Arc::new(Budget::new(l.bytes_per_connection)),
                });
                t.open.insert(state.id, Arc::clone(&state));
                t.unproven.insert(state.id, Arc::clone(&state));
                if let Some(src) = source {
                    t.unproven_by_source
                        .entry(src)
                        .or_default()
                        .insert(state.id, ());
                }
                Admission::Admitted(ConnectionSlot { state })
            }
        };
        for (c, why) in evicted {
            self.metrics.connection_closed(why);
            tracing::debug!(peer = ?c.source, cap = why, "closed the oldest unauthenticated connection to make room");
            c.close();
        }
        self.publish();
        admission
    }

    fn prove(&self, c: &ConnState, class: Class) {
        let mut t = lock(&self.table);
        c.class.store(class as u8, Ordering::Relaxed);
        if t.unproven.remove(&c.id).is_some()
            && let Some(src) = c.source
            && let Some(ids) = t.unproven_by_source.get_mut(&src)
        {
            ids.remove(&c.id);
            if ids.is_empty() {
                t.unproven_by_source.remove(&src);
            }
        }
        drop(t);
        self.publish();
    }

    fn remove(&self, c: &ConnState) {
        let mut t = lock(&self.table);
        t.forget(c);
        drop(t);
        self.publish();
    }

    fn publish(&self) {
        let t = lock(&self.table);
        self.metrics.connections_open.set(t.open.len() as i64);
        self.metrics
            .connections_unauthenticated
            .set(t.unproven.len() as i64);
    }

    /// Closes the connections past their time: unproven ones older than the unproven timeout,
    /// client ones idle for longer than the idle timeout. Returns how many it closed.
    pub fn reap(&self, now: Instant) -> usize {
        let l = self.limits;
        let doomed: Vec<(Arc<ConnState>, &'static str)> = {
            let mut t = lock(&self.table);
            let doomed: Vec<_> = t
                .open
                .values()
                .filter_map(|c| match c.class() {
                    Class::Unproven
                        if now.saturating_duration_since(c.opened) >= l.unproven_timeout =>
                    {
                        Some((Arc::clone(c), "unauthenticated_timeout"))
                    }
                    Class::Client if c.idle_for(now) >= l.idle_timeout => {
                        Some((Arc::clone(c), "idle_timeout"))
                    }
                    _ => None,
                })
                .collect();
            for (c, _) in &doomed {
                t.forget(c);
            }
            doomed
        };
        for (c, why) in &doomed {
            self.metrics.connection_closed(why);
            tracing::debug!(peer = ?c.source, reason = why, "closing a connection");
            c.close();
        }
        if !doomed.is_empty() {
            self.publish();
        }
        doomed.len()
    }

    /// Reaps every second until `stop`.
    pub fn run_reaper(self: &Arc<Self>, stop: CancellationToken) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(this) = this.upgrade() else { return };
                this.reap(Instant::now());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4,
            max_unproven: 3,
            max_unproven_per_source: 2,
            unproven_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            bytes_per_connection: 1 << 20,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    fn slot(a: Admission) -> ConnectionSlot {
        match a {
            Admission::Admitted(s) => s,
            Admission::Full(open, cap) => panic!("refused: {open} of {cap}"),
        }
    }

    fn closing(c: &ConnectionSlot) -> bool {
        c.state.closing.load(Ordering::Acquire)
    }

    #[tokio::test]
    async fn idle_strangers_make_room_for_each_other_never_for_proven_connections() {
        let table = Connections::new(limits(), Arc::new(Metrics::new()));
        let a = slot(table.admit(ip(1)));
        a.state.prove(Class::Client);
        let b = slot(table.admit(ip(2)));
        b.state.prove(Class::Node);
        // Two strangers from one source: the third closes the oldest of them.
        let s1 = slot(table.admit(ip(9)));
        let s2 = slot(table.admit(ip(9)));
        let s3 = slot(table.admit(ip(9)));
        assert!(closing(&s1) && !closing(&s2) && !closing(&s3));
        // The cap in all (4): a new connection closes the oldest stranger, never a proven one.
        let c = slot(table.admit(ip(3)));
        assert!(closing(&s2) && !closing(&a) && !closing(&b));
        // Once every connection has proven itself, a new one is refused.
        s3.state.prove(Class::Client);
        c.state.prove(Class::Client);
        assert!(matches!(table.admit(ip(4)), Admission::Full(4, 4)));
        // A dropped connection gives its place back.
        drop(c);
        assert!(matches!(table.admit(ip(4)), Admission::Admitted(_)));
    }

    #[tokio::test]
    async fn strangers_past_their_time_and_idle_clients_are_closed_nodes_are_not() {
        let table = Connections::new(limits(), Arc::new(Metrics::new()));
        let t0 = Instant::now();
        let stranger = slot(table.admit(ip(1)));
        let client = slot(table.admit(ip(2)));
        client.state.prove(Class::Client);
        let node = slot(table.admit(ip(3)));
        node.state.prove(Class::Node);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(table.reap(at(9)), 0);
        assert_eq!(table.reap(at(11)), 1);
        assert!(closing(&stranger));
        // Reading at 45 s keeps the client until 45 + 60.
        client.state.read_at(at(45));
        assert_eq!(table.reap(at(104)), 0);
        assert_eq!(table.reap(at(106)), 1);
        assert!(closing(&client) && !closing(&node));
        assert_eq!(table.reap(at(36_000)), 0);
    }
}
