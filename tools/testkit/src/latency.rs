//! A latency proxy: a plain TCP proxy that sits between the functions under test and one local
//! server (moto, the WeChat simulator) and delays every byte, to model the network a deployment
//! sees. One proxy per destination, each with its own one-way delay (see [`NetworkProfile`]).
//! TLS passes through end to end (the servers behind terminate it), so its handshake round trips
//! are delayed like any other bytes.
//!
//! The model, per accepted connection (`accepted_at` is when the proxy accepted it, `one_way` the
//! delay current when a chunk is read):
//!
//! - Each direction is a reader thread and a writer thread joined by a channel. A chunk read at
//!   `read_at` is written to the other side at its deadline, in order: a later chunk never
//!   overtakes an earlier one (after [`LatencyProxy::set_one_way`] lowers the delay it waits for
//!   the chunks ahead of it), and chunks are neither coalesced nor held past their deadline.
//!   Waiting is `std::thread::sleep` on OS threads with blocking sockets (tokio's timer has 1 ms
//!   granularity and rounds up), ending 100 µs early and finished with `yield_now`, since Linux
//!   wakes sleepers 50–80 µs late; a delay is then met within some 30–50 µs. TCP_NODELAY is set
//!   on both sockets.
//! - Server to client: deadline = `read_at + one_way`.
//! - Client to server: deadline = `max(read_at + one_way, accepted_at + 3 × one_way)`. The client's
//!   `connect()` to the local proxy returns at once, whereas on the modelled network it takes a
//!   round trip; the client's first bytes therefore arrive no earlier than that round trip plus
//!   their own one-way trip.
//! - The proxy connects to the upstream right after accepting (locally, with no delay); if the
//!   upstream refuses, the client connection is closed.
//! - End of stream in one direction shuts down the write half of the other side once the chunks
//!   before it are written (so it is delayed like them). A read error (say a reset) closes both
//!   sockets after the pending chunks of that direction; a write error closes both at once. Errors
//!   end the connection quietly; the threads never panic.
//! - The proxy buffers without limit: there is no flow control beyond the sockets' own buffers
//!   and no bandwidth limit, only delay.
//! - With a zero delay the proxy adds only its own cost: two thread hand-offs and a copy per
//!   chunk.
//!
//! Dropping the proxy stops accepting; open connections go on until their ends close them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One-way delays per destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkProfile {
    pub name: &'static str,
    /// To AWS endpoints (DynamoDB, Secrets Manager).
    pub aws: Duration,
    /// To WeChat's API endpoints.
    pub wechat: Duration,
    /// To WeChat Pay's API endpoints.
    pub wechat_pay: Duration,
}

impl NetworkProfile {
    /// No added delay: what the local servers and the proxy cost by themselves.
    pub const ZERO: Self = Self {
        name: "zero",
        aws: Duration::ZERO,
        wechat: Duration::ZERO,
        wechat_pay: Duration::ZERO,
    };

    /// A function in AWS Hong Kong (ap-east-1) calling AWS endpoints in its region and WeChat's
    /// mainland endpoints: AWS 1 ms, WeChat 15 ms, WeChat Pay 15 ms one way.
    pub const HONG_KONG: Self = Self {
        name: "hong-kong",
        aws: Duration::from_millis(1),
        wechat: Duration::from_millis(15),
        wechat_pay: Duration::from_millis(15),
    };
}

/// A TCP proxy on 127.0.0.1 in front of one upstream, delaying every byte by a one-way delay in
/// each direction (see the module doc for the model).
pub struct LatencyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    one_way_nanos: AtomicU64,
    connections: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn one_way(&self) -> Duration {
        Duration::from_nanos(self.one_way_nanos.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl LatencyProxy {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `upstream`, each byte
    /// delayed by `one_way` in each direction.
    ///
    /// Panics if it cannot bind the listener or start its accept thread.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the latency proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("the latency proxy's address");
        let shared = Arc::new(Shared {
            one_way_nanos: AtomicU64::new(nanos(one_way)),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("latency-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, upstream, shared))
                .expect("start the latency proxy's accept thread")
        };
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The address the proxy listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT` (the name test TLS leaves are made for).
    pub fn https_endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Changes the delay for bytes read from now on (a bench switches profiles between runs).
    /// Chunks already read keep their deadlines; applies to open connections too.
    pub fn set_one_way(&self, one_way: Duration) {
        self.shared.one_way_nanos.store(nanos(one_way), Ordering::Relaxed);
    }

    /// The current one-way delay.
    pub fn one_way(&self) -> Duration {
        self.shared.one_way()
    }

    /// Connections accepted so far (a bench counts the connections each step opens).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for LatencyProxy {
    /// Stops accepting (and joins the accept thread); open connections may finish on their own.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns, closing the listener.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(accept) = self.accept.take()
            && woke
        {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((client, _)) => {
                let accepted_at = Instant::now();
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                // If the thread cannot start, the closure (and the client) is dropped: closed.
                let _ = thread::Builder::new()
                    .name("latency-conn".into())
                    .spawn(move || connection(client, upstream, accepted_at, shared));
            }
            // Out of descriptors and the like: do not spin.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// What a reader hands its writer.
enum Chunk {
    Data(Vec<u8>),
    /// End of stream: shut down the write half of the destination.
    Eof,
    /// A read error: close both sockets.
    Reset,
}

/// Which way bytes flow, for the deadline.
#[derive(Clone, Copy)]
enum Direction {
    ToServer,
    ToClient,
}

fn connection(client: TcpStream, upstream: SocketAddr, accepted_at: Instant, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return; // dropping `client` closes it
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let client = Arc::new(client);
    let server = Arc::new(server);

    let (to_server_tx, to_server_rx) = mpsc::channel();
    let (to_client_tx, to_client_rx) = mpsc::channel();

    let spawned = [
        spawn("latency-s2c-read", {
            let (src, dst, shared) = (server.clone(), client.clone(), shared.clone());
            move || read_side(&src, &dst, to_client_tx, Direction::ToClient, accepted_at, &shared)
        }),
        spawn("latency-s2c-write", {
            let (dst, src) = (client.clone(), server.clone());
            move || write_side(&dst, &src, to_client_rx)
        }),
        spawn("latency-c2s-write", {
            let (dst, src) = (server.clone(), client.clone());
            move || write_side(&dst, &src, to_server_rx)
        }),
    ];
    if spawned.iter().any(|ok| !ok) {
        close_both(&client, &server);
        return;
    }
    read_side(
        &client,
        &server,
        to_server_tx,
        Direction::ToServer,
        accepted_at,
        &shared,
    );
}

/// Spawns a named thread; false if it could not start (its closure is dropped then).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> bool {
    thread::Builder::new().name(name.into()).spawn(f).is_ok()
}

fn close_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn read_side(
    src: &TcpStream,
    dst: &TcpStream,
    tx: Sender<(Instant, Chunk)>,
    direction: Direction,
    accepted_at: Instant,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = (&*src).read(&mut buf);
        let read_at = Instant::now();
        let one_way = shared.one_way();
        let mut deadline = read_at.checked_add(one_way).unwrap_or(read_at);
        if let Direction::ToServer = direction {
            let connected = accepted_at
                .checked_add(one_way.saturating_mul(3))
                .unwrap_or(accepted_at);
            deadline = deadline.max(connected);
        }
        let (chunk, last) = match read {
            Ok(0) => (Chunk::Eof, true),
            Ok(n) => (Chunk::Data(buf[..n].to_vec()), false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => (Chunk::Reset, true),
        };
        if tx.send((deadline, chunk)).is_err() {
            // The writer is gone after a write error; it closed both sockets already.
            close_both(src, dst);
            return;
        }
        if last {
            return;
        }
    }
}

fn write_side(dst: &TcpStream, src: &TcpStream, rx: Receiver<(Instant, Chunk)>) {
    while let Ok((deadline, chunk)) = rx.recv() {
        sleep_until(deadline);
        match chunk {
            Chunk::Data(bytes) => {
                if (&*dst).write_all(&bytes).is_err() {
                    close_both(dst, src);
                    return;
                }
            }
            Chunk::Eof => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Chunk::Reset => {
                close_both(dst, src);
                return;
            }
        }
    }
}

/// How early a sleep ends before a deadline, to be finished by yielding: Linux wakes a sleeping
/// thread some 50–80 µs late (timer slack and wake-up), which would add to every one-way delay.
const SPIN: Duration = Duration::from_micros(100);

fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            thread::sleep(left - SPIN);
        } else {
            thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An echo server on 127.0.0.1: echoes each connection until EOF, then closes it.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    /// Writes one byte and reads its echo; the time it took.
    fn round_trip(stream: &mut TcpStream, byte: u8) -> Duration {
        let start = Instant::now();
        stream.write_all(&[byte]).unwrap();
        let mut got = [0u8; 1];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got[0], byte);
        start.elapsed()
    }

    #[test]
    fn a_large_payload_arrives_intact_and_in_order() {
        let proxy = LatencyProxy::start(echo_server(), 5 * MS);
        let mut stream = connect(proxy.addr());
        let payload: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
            .collect();
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            let payload = payload.clone();
            thread::spawn(move || {
                for piece in payload.chunks(4000) {
                    stream.write_all(piece).unwrap();
                }
                stream.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        writer.join().unwrap();
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload, "the echo differs from the payload");
    }

    #[test]
    fn requests_are_delayed_by_the_handshake_and_each_one_way_trip() {
        let one_way = 20 * MS;
        let proxy = LatencyProxy::start(echo_server(), one_way);
        assert_eq!(proxy.one_way(), one_way);
        let start = Instant::now();
        let mut stream = connect(proxy.addr());
        round_trip(&mut stream, 1);
        let first = start.elapsed();
        assert!(first >= 4 * one_way, "connect + first request took {first:?}");
        let second = round_trip(&mut stream, 2);
        assert!(second >= 2 * one_way, "second request took {second:?}");
    }

    #[test]
    fn connections_are_counted() {
        let proxy = LatencyProxy::start(echo_server(), Duration::ZERO);
        assert_eq!(proxy.connections(), 0);
        let mut streams: Vec<TcpStream> = (0..3).map(|_| connect(proxy.addr())).collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            round_trip(stream, i as u8);
        }
        assert_eq!(proxy.connections(), 3);
        round_trip(&mut streams[0], 9);
        assert_eq!(
            proxy.connections(),
            3,
            "a request on an open connection is not a new one"
        );
        assert!(proxy.https_endpoint().starts_with("https://localhost:"));
        assert!(proxy.https_endpoint().ends_with(&format!(":{}", proxy.addr().port())));
    }

    #[test]
    fn set_one_way_changes_the_delay_of_later_bytes() {
        let proxy = LatencyProxy::start(echo_server(), Duration::ZERO);
        let mut stream = connect(proxy.addr());
        round_trip(&mut stream, 1);
        proxy.set_one_way(25 * MS);
        assert_eq!(proxy.one_way(), 25 * MS);
        let slower = round_trip(&mut stream, 2);
        assert!(
            slower >= 50 * MS,
            "after set_one_way(25 ms) a round trip took {slower:?}"
        );
        proxy.set_one_way(Duration::ZERO);
        round_trip(&mut stream, 3);
    }

    #[test]
    fn eof_propagates_both_ways() {
        let one_way = 5 * MS;
        let proxy = LatencyProxy::start(echo_server(), one_way);
        let mut stream = connect(proxy.addr());
        stream.write_all(b"last words").unwrap();
        let start = Instant::now();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap(); // EOF, not the read timeout
        assert_eq!(rest, b"last words");
        let waited = start.elapsed();
        assert!(waited >= 2 * one_way, "the EOF came back after {waited:?}");
    }

    #[test]
    fn a_refused_upstream_closes_the_client_connection() {
        let refused = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let proxy = LatencyProxy::start(refused, MS);
        let mut stream = connect(proxy.addr());
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes from a refused upstream"),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
                "expected the connection closed, got {e:?}"
            ),
        }
        assert_eq!(proxy.connections(), 1);
        // The proxy still works for the next connection (and dropping it does not hang).
        let mut again = connect(proxy.addr());
        let _ = again.read(&mut buf);
        assert_eq!(proxy.connections(), 2);
    }

    #[test]
    fn dropping_the_proxy_stops_accepting() {
        let proxy = LatencyProxy::start(echo_server(), Duration::ZERO);
        let addr = proxy.addr();
        let mut open = connect(addr);
        round_trip(&mut open, 1);
        drop(proxy);
        // The open connection goes on; new ones are refused.
        round_trip(&mut open, 2);
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed after drop");
    }

    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    /// Not an assertion, a measurement: `cargo test -p testkit latency::tests::proxy_cost -- --nocapture`.
    /// Round trips go direct, through a zero-delay proxy and through a 1 ms proxy in turn, so
    /// that drift in the machine's load hits all three alike.
    #[test]
    fn proxy_cost() {
        let echo = echo_server();
        let zero = LatencyProxy::start(echo, Duration::ZERO);
        let one = LatencyProxy::start(echo, MS);
        let mut streams = [connect(echo), connect(zero.addr()), connect(one.addr())];
        for stream in &mut streams {
            round_trip(stream, 0); // past the modelled handshake
        }
        let rounds = 200;
        let mut samples = [vec![], vec![], vec![]];
        for i in 0..rounds {
            for (stream, samples) in streams.iter_mut().zip(&mut samples) {
                samples.push(round_trip(stream, i as u8));
            }
        }
        let [direct, zero, one] = samples.map(median);
        let added_zero = zero.saturating_sub(direct);
        let added_one = one.saturating_sub(direct);
        println!(
            "latency proxy, 1-byte echo round trip, median of {rounds}: direct {direct:?}; \
             through the proxy at 0 ms: {zero:?} (adds {added_zero:?}); \
             at 1 ms one way: {one:?} (adds {added_one:?}, i.e. {:?} over the modelled 2 ms)",
            added_one.saturating_sub(2 * MS),
        );
    }
}
