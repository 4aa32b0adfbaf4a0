//! Connections that never speak MQTT are closed: a socket accepted on one of the broker's listeners that
//! has not delivered its CONNECT within `handshake_timeout` (plain TCP, or after a finished TLS handshake)
//! is shut down, and at most `max_half_open` such sockets are kept at once (the oldest are shut down
//! first). Both are counted ([`Janitor::closed`]).
//!
//! Why here and not in the engine: rmqtt 0.24 reads the first packet of a connection without a timeout
//! (`Dispatcher::probe_version`; its `handshake_timeout` covers only the TLS handshake and the rest of the
//! CONNECT), and its accept loop is private. Silent sockets were still open after 60 s, did not count
//! against `max_connections`, and ~4,090 of them exhausted the unit's file descriptors. The janitor looks
//! at the process's own sockets (`/proc/self/fd`) every `handshake_timeout / 2`: a socket whose local
//! address is a listener's and whose peer has not sent a CONNECT (the policy's `ClientConnect` hook marks
//! peers in [`SpokenPeers`]) is shut down (`shutdown(2)`, both directions) once it is older than the
//! timeout; the engine's task then sees the end of the stream and closes it. The janitor never closes a
//! descriptor itself, so it cannot close one that the engine has already reused. It decides nothing about
//! logins or rights.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Peers (remote addresses) whose CONNECT has reached the broker, as the policy's connect hook saw them.
#[derive(Debug, Default)]
pub struct SpokenPeers(Mutex<HashSet<SocketAddr>>);

impl SpokenPeers {
    /// `peer` has sent its CONNECT.
    pub fn spoke(&self, peer: SocketAddr) {
        self.lock().insert(peer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        // A set of addresses: a panic elsewhere cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One accepted socket as seen in a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Accepted {
    fd: RawFd,
    local: SocketAddr,
    peer: SocketAddr,
}

/// What the janitor watches and the bounds it applies.
#[derive(Debug, Clone)]
pub struct JanitorSettings {
    /// Addresses the broker's listeners are bound to.
    pub listeners: Vec<SocketAddr>,
    pub handshake_timeout: Duration,
    /// Accepted sockets that have not sent a CONNECT yet, at most.
    pub max_half_open: usize,
}

/// The running janitor.
pub struct Janitor {
    closed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Janitor {
    /// Starts the periodic scan.
    pub fn start(settings: JanitorSettings, spoken: Arc<SpokenPeers>) -> Janitor {
        let closed = Arc::new(AtomicU64::new(0));
        let counter = closed.clone();
        let period = (settings.handshake_timeout / 2)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        let task = tokio::spawn(async move {
            let mut first_seen: HashMap<Accepted, Instant> = HashMap::new();
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let listeners = settings.listeners.clone();
                let Ok(sockets) =
                    tokio::task::spawn_blocking(move || accepted_sockets(&listeners)).await
                else {
                    continue;
                };
                let doomed = {
                    let mut spoken = spoken.lock();
                    sweep(
                        &sockets,
                        &mut spoken,
                        &mut first_seen,
                        Instant::now(),
                        &settings,
                    )
                };
                for socket in doomed {
                    if shut_down(socket) {
                        counter.fetch_add(1, Ordering::Relaxed);
                        log::debug!(
                            "broker: connection from {} closed: no CONNECT within handshake_timeout = {:?} (or over the half-open bound)",
                            socket.peer,
                            settings.handshake_timeout
                        );
                    }
                }
            }
        });
        Janitor { closed, task }
    }

    /// Silent connections shut down so far.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decides which sockets to shut down: those silent for longer than the timeout, and the oldest silent
/// ones beyond the half-open bound. Forgets peers and sockets that are gone.
fn sweep(
    sockets: &[Accepted],
    spoken: &mut HashSet<SocketAddr>,
    first_seen: &mut HashMap<Accepted, Instant>,
    now: Instant,
    settings: &JanitorSettings,
) -> Vec<Accepted> {
    let live_peers: HashSet<SocketAddr> = sockets.iter().map(|s| s.peer).collect();
    spoken.retain(|peer| live_peers.contains(peer));
    let live: HashSet<Accepted> = sockets.iter().copied().collect();
    first_seen.retain(|socket, _| live.contains(socket) && !spoken.contains(&socket.peer));
    let mut silent: Vec<(Instant, Accepted)> = sockets
        .iter()
        .filter(|s| !spoken.contains(&s.peer))
        .map(|s| (*first_seen.entry(*s).or_insert(now), *s))
        .collect();
    silent.sort_by_key(|(seen, _)| *seen);
    let over_bound = silent.len().saturating_sub(settings.max_half_open);
    let doomed: Vec<Accepted> = silent
        .iter()
        .enumerate()
        .filter(|(index, (seen, _))| {
            *index < over_bound
                || now.saturating_duration_since(*seen) >= settings.handshake_timeout
        })
        .map(|(_, (_, socket))| *socket)
        .collect();
    for socket in &doomed {
        first_seen.remove(socket);
    }
    doomed
}

/// The process's accepted sockets on the given listener addresses.
fn accepted_sockets(listeners: &[SocketAddr]) -> Vec<Accepted> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| {
            let (local, peer) = addresses(fd)?;
            listeners
                .iter()
                .any(|l| {
                    l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip())
                })
                .then_some(Accepted { fd, local, peer })
        })
        .collect()
}

/// Local and peer address of a connected TCP socket; None for anything else.
fn addresses(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    // SAFETY: the descriptor is only borrowed for the two getsockname/getpeername calls below, which
    // read addresses and change nothing; if it was closed meanwhile they fail (EBADF), and if its number
    // was reused they describe the new file, which the caller compares before acting.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    let local = socket.local_addr().ok()?.as_socket()?;
    let peer = socket.peer_addr().ok()?.as_socket()?;
    Some((local, peer))
}

/// Shuts the socket down if the descriptor still holds the same connection. Returns whether it did.
fn shut_down(socket: Accepted) -> bool {
    if addresses(socket.fd) != Some((socket.local, socket.peer)) {
        return false;
    }
    // SAFETY: as in `addresses`; the descriptor was just seen to hold this very connection (a TCP
    // 4-tuple is unique while the connection exists), and shutdown(2) does not close or free it.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
    socket2::SockRef::from(&fd)
        .shutdown(std::net::Shutdown::Both)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(fd: RawFd, port: u16) -> Accepted {
        Accepted {
            fd,
            local: SocketAddr::from(([127, 0, 0, 1], 1883)),
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn settings(max_half_open: usize) -> JanitorSettings {
        JanitorSettings {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            handshake_timeout: Duration::from_secs(5),
            max_half_open,
        }
    }

    #[test]
    fn silent_sockets_go_after_the_timeout_and_speakers_stay() {
        let t0 = Instant::now();
        let mut spoken = HashSet::new();
        let mut seen = HashMap::new();
        let sockets = [socket(10, 40000), socket(11, 40001)];
        assert!(sweep(&sockets, &mut spoken, &mut seen, t0, &settings(100)).is_empty());
        spoken.insert(sockets[1].peer);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            sweep(&sockets, &mut spoken, &mut seen, later, &settings(100)),
            vec![sockets[0]]
        );
    }

    #[test]
    fn beyond_the_half_open_bound_the_oldest_go_at_once() {
        let t0 = Instant::now();
        let mut spoken = HashSet::new();
        let mut seen = HashMap::new();
        let first = [socket(10, 40000), socket(11, 40001)];
        sweep(&first, &mut spoken, &mut seen, t0, &settings(2));
        let all = [first[0], first[1], socket(12, 40002)];
        let doomed = sweep(
            &all,
            &mut spoken,
            &mut seen,
            t0 + Duration::from_secs(1),
            &settings(2),
        );
        assert_eq!(doomed, vec![first[0]]);
    }

    #[test]
    fn peers_and_sockets_that_are_gone_are_forgotten() {
        let t0 = Instant::now();
        let mut spoken = HashSet::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
        let mut seen = HashMap::new();
        sweep(
            &[socket(10, 40000)],
            &mut spoken,
            &mut seen,
            t0,
            &settings(10),
        );
        assert!(spoken.is_empty());
        sweep(&[], &mut spoken, &mut seen, t0, &settings(10));
        assert!(seen.is_empty());
    }

    #[test]
    fn a_real_silent_connection_is_found_and_shut_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        let found = accepted_sockets(&[addr]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].peer, client.local_addr().unwrap());
        assert!(shut_down(found[0]));
        let mut buf = [0u8; 1];
        use std::io::Read;
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut buf).unwrap(), 0, "the client sees the end");
    }
}
