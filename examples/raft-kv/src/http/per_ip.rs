//! How many connections one client address may hold at once.
//!
//! The server's connection permits (`HttpLimits::max_connections`) are shared by every
//! client; without a cap per address, one host that opens that many connections and keeps
//! each busy within the timeouts (a request head every few seconds, a body just inside its
//! deadline) leaves none for anyone else. [`ConnectionsPerIp`] counts the open connections of
//! each address; a connection past its address's cap is closed at once, before it is read, so
//! that it holds a permit for no time at all.
//!
//! The count is by IP address: clients behind one NAT or proxy share it, and so do the
//! relays of a follower (all from the follower's address) and, on loopback, every client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The open connections of each client address, each at most `cap`.
#[derive(Debug)]
pub(crate) struct ConnectionsPerIp {
    cap: usize,
    /// Invariant: every count is from 1 to `cap`; an address with none has no entry.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of `ip`, counted until dropped.
#[derive(Debug)]
pub(crate) struct IpConnection {
    counts: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// At most `cap` connections per address (at least one).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap: cap.max(1), open: Mutex::new(HashMap::new()) })
    }

    /// Count a new connection of `ip`, or `None` if `ip` already holds `cap`.
    pub(crate) fn open(self: &Arc<Self>, ip: IpAddr) -> Option<IpConnection> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(IpConnection { counts: self.clone(), ip })
    }
}

impl Drop for IpConnection {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::ConnectionsPerIp;

    #[test]
    fn each_address_holds_at_most_its_cap_and_a_closed_connection_frees_a_place() {
        let (a, b) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        let counts = ConnectionsPerIp::new(2);
        let first = counts.open(a).unwrap();
        let _second = counts.open(a).unwrap();
        assert!(counts.open(a).is_none(), "a third connection of one address");
        let _other = counts.open(b).expect("another address has its own cap");
        drop(first);
        let _third = counts.open(a).expect("a place freed by a closed connection");
        assert!(counts.open(a).is_none());
    }

    #[test]
    fn an_address_without_connections_leaves_no_entry() {
        let counts = ConnectionsPerIp::new(1);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        drop(counts.open(ip).unwrap());
        assert!(counts.open.lock().unwrap().is_empty());
    }
}
