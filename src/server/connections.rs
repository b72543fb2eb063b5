//! Bounds on connections: how many one client may hold, and how long one may sit idle.
//!
//! hyper closes an HTTP/1.1 connection whose headers are slow, but has no idle limit for
//! keep-alive connections and none at all for HTTP/2, where a client that answers pings keeps
//! a connection (a task and its buffers) forever. [`watch`] closes any connection that has
//! had no request in flight for the idle limit, or none at all within the first-request
//! limit, and drains it when the server shuts down. [`PerIp`] caps the connections one
//! address holds at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How long a connection may go without a request in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Before its first request (`server.header_read_timeout`).
    pub first_request: Duration,
    /// After a request (`server.idle_timeout`).
    pub idle: Duration,
}

/// A connection's requests in flight and when that last changed.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds after `opened` of the last request start or end.
    changed_ms: AtomicU64,
}

impl Activity {
    /// A new connection's.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            changed_ms: AtomicU64::new(0),
        })
    }

    /// A request started; it counts as in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.touch();
        Busy(Arc::clone(self))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed_ms.store(ms, Ordering::Release);
    }

    /// Whether the connection has been without a request for longer than allowed.
    fn idle_too_long(&self, limits: Limits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let limit = if self.served.load(Ordering::Acquire) {
            limits.idle
        } else {
            limits.first_request
        };
        let since = Duration::from_millis(self.changed_ms.load(Ordering::Acquire));
        self.opened.elapsed().saturating_sub(since) >= limit
    }
}

/// A request in flight: dropped when its response body has been sent (or abandoned).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

impl Busy {
    /// `response` with this guard riding on its body, so a stream counts as in flight until
    /// its last byte.
    pub fn hold_until_sent(self, response: Response) -> Response {
        response.map(|inner| Body::new(Tracked { inner, _busy: self }))
    }
}

struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Drives `connection` to its end, closing it gracefully (`shut_down`: hyper-util's
/// `graceful_shutdown`) when it idles too long or the server drains.
pub async fn watch<C: Future>(
    connection: C,
    shut_down: impl FnOnce(Pin<&mut C>),
    activity: Arc<Activity>,
    limits: Limits,
    draining: CancellationToken,
) {
    tokio::pin!(connection);
    let tick = (limits.idle.min(limits.first_request) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let idle = loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = draining.cancelled() => break false,
            _ = ticks.tick() => if activity.idle_too_long(limits) {
                break true;
            },
        }
    };
    shut_down(connection.as_mut());
    if idle {
        // Nothing is in flight: a peer that ignores GOAWAY or a close gets a moment, no more.
        let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        crate::metrics::record_connection_closed("idle");
    } else {
        // Shutdown: in-flight requests finish; the server bounds this by its grace period.
        let _ = connection.await;
    }
}

/// A connection's [`Slot`], reachable from the requests it serves: a request that takes the
/// connection over (a Realtime session's upgrade) takes the slot with it, so the connection
/// stays counted after hyper lets go of it. Otherwise the slot goes when the connection does.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSlot(Arc<Mutex<Option<Slot>>>);

impl ConnectionSlot {
    /// The connection's slot (`None` for a trusted proxy's, which is not counted).
    pub fn new(slot: Option<Slot>) -> Self {
        Self(Arc::new(Mutex::new(slot)))
    }

    /// Takes the slot for whatever outlives the connection's HTTP handling.
    pub fn take(&self) -> Option<Slot> {
        self.0.lock().ok()?.take()
    }
}

/// Open connections per client address, capped.
#[derive(Debug, Clone)]
pub struct PerIp {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PerIp`], given back on drop.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    /// At most `cap` connections per address.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub fn claim(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let per_ip = PerIp::new(2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = per_ip.claim(a).unwrap();
        let _second = per_ip.claim(a).unwrap();
        assert!(per_ip.claim(a).is_none());
        assert!(per_ip.claim(b).is_some());
        drop(first);
        assert!(per_ip.claim(a).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_only_without_requests_in_flight() {
        let limits = Limits {
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        };
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!activity.idle_too_long(limits));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(activity.idle_too_long(limits), "no first request in time");
        let busy = activity.begin();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(
            !activity.idle_too_long(limits),
            "a long request is not idleness"
        );
        drop(busy);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!activity.idle_too_long(limits));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(activity.idle_too_long(limits));
    }
}
