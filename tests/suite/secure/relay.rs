//! The shaping relay of the benchmarks (`ppdenoise::net::relay`, `ppdenoise relay`) is honest:
//! it never delivers faster than the bandwidth, delays every byte by at least the one-way delay
//! in each direction, passes the bytes through intact and in order, and is not much slower than
//! the shape it imposes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ppdenoise::net::relay::{LinkShape, Relay};

fn localhost0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn shape(s: &str) -> LinkShape {
    LinkShape::parse(s).unwrap()
}

/// The byte at position `i` of a transfer: depends on the position, so a lost, repeated or
/// reordered chunk shows up.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Send `total` pattern bytes through a relay shaped `link` to a checking sink. Returns the
/// time from the client's connect to the sink's end of stream.
fn transfer(link: &str, total: u64) -> Duration {
    let sink = TcpListener::bind(localhost0()).unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let receiver = thread::spawn(move || {
        let (mut s, _) = sink.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = 0u64;
        let mut first_bad = None;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (k, &b) in buf[..n].iter().enumerate() {
                if first_bad.is_none() && b != pattern(pos + k as u64) {
                    first_bad = Some(pos + k as u64);
                }
            }
            pos += n as u64;
        }
        (pos, first_bad, Instant::now())
    });

    let relay = Relay::bind(localhost0(), sink_addr, shape(link)).unwrap();
    let (addr, stats) = (relay.local_addr(), relay.stats());
    let relay = relay.spawn(Some(1));

    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(sent + k as u64);
        }
        c.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
    c.shutdown(Shutdown::Write).unwrap();
    let (got, first_bad, t_end) = receiver.join().unwrap();
    let elapsed = t_end - t0;
    assert_eq!(got, total, "bytes received");
    assert_eq!(
        first_bad, None,
        "first byte that differs from what was sent"
    );
    // The sink closed: its end of stream reaches the client and the relay finishes.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    relay.join().unwrap().unwrap();
    assert_eq!(stats.client_to_target_bytes(), total);
    assert_eq!(stats.target_to_client_bytes(), 0);
    assert_eq!(stats.connections(), 1);
    elapsed
}

#[test]
fn bandwidth_is_a_hard_cap_and_bytes_arrive_intact() {
    // 100 MB at 100 Mbit/s is 8.0 s of serialization alone.
    let t = transfer("100mbit,1ms", 100_000_000);
    eprintln!("100 MB at 100mbit,1ms: {:.3} s", t.as_secs_f64());
    assert!(t >= Duration::from_secs(8), "took {t:?}, below 8 s");
    assert!(
        t < Duration::from_secs(30),
        "took {t:?}: far slower than 8 s"
    );
}

#[test]
fn not_slower_than_reason_at_1gbit() {
    // 10 MB at 1 Gbit/s: 80 ms on the wire.
    let t = transfer("1gbit,1ms", 10_000_000);
    eprintln!("10 MB at 1gbit,1ms: {:.3} s", t.as_secs_f64());
    assert!(t >= Duration::from_millis(80), "took {t:?}, below 80 ms");
    assert!(t < Duration::from_secs(5), "took {t:?}");
}

/// An echo server for one connection: sends back everything until the client half-closes.
fn echo_server() -> (SocketAddr, thread::JoinHandle<()>) {
    let l = TcpListener::bind(localhost0()).unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || echo_one(&l));
    (addr, h)
}

fn echo_one(l: &TcpListener) {
    let (mut s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    // A fault fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return;
        }
        s.write_all(&buf[..n]).unwrap();
    }
}

/// Ping-pong single bytes through `addr`; returns each round trip.
fn pings(addr: SocketAddr, n: u8) -> Vec<Duration> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let rtts = (0..n)
        .map(|i| {
            let t = Instant::now();
            c.write_all(&[i]).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i);
            t.elapsed()
        })
        .collect();
    // End of stream goes through the relay both ways.
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    rtts
}

#[test]
fn every_round_trip_takes_twice_the_one_way_delay() {
    let (echo, echo_done) = echo_server();
    let relay = Relay::bind(localhost0(), echo, shape("10gbit,10ms")).unwrap();
    let (addr, stats) = (relay.local_addr(), relay.stats());
    let relay = relay.spawn(Some(1));
    let rtts = pings(addr, 8);
    eprintln!("round trips at 10gbit,10ms: {rtts:?}");
    for rtt in &rtts {
        assert!(*rtt >= Duration::from_millis(20), "round trip {rtt:?}");
        assert!(*rtt < Duration::from_secs(1), "round trip {rtt:?}");
    }
    echo_done.join().unwrap();
    relay.join().unwrap().unwrap();
    assert_eq!(stats.client_to_target_bytes(), 8);
    assert_eq!(stats.target_to_client_bytes(), 8);
}

#[test]
fn waits_for_a_late_target_and_serves_every_connection() {
    // A port with nothing behind it yet (free a moment ago).
    let target = TcpListener::bind(localhost0())
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = Relay::bind(localhost0(), target, shape("1gbit,1ms"))
        .unwrap()
        .with_connect_timeout(Duration::from_secs(20));
    let addr = relay.local_addr();
    let relay = relay.spawn(Some(2));
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let l = TcpListener::bind(target).unwrap();
        echo_one(&l);
        echo_one(&l);
    });
    assert_eq!(pings(addr, 2).len(), 2);
    // A client that reconnects is relayed again.
    assert_eq!(pings(addr, 2).len(), 2);
    late.join().unwrap();
    relay.join().unwrap().unwrap();
}

#[test]
fn link_shapes_parse_and_errors_say_what_is_expected() {
    let ok = |s: &str, bps: u64, delay: Duration| {
        let l = LinkShape::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            l,
            LinkShape {
                bits_per_second: bps,
                one_way_delay: delay
            },
            "{s}"
        );
    };
    ok("1gbit,5ms", 1_000_000_000, Duration::from_millis(5));
    ok("100mbit,1ms", 100_000_000, Duration::from_millis(1));
    ok("2.5Gbit, 0.5ms", 2_500_000_000, Duration::from_micros(500));
    ok("64kbit,1s", 64_000, Duration::from_secs(1));
    ok("1200bit,250us", 1200, Duration::from_micros(250));
    ok("10mbit,0ms", 10_000_000, Duration::ZERO);
    assert_eq!(
        "1gbit,5ms".parse::<LinkShape>().unwrap().to_string(),
        "1gbit,5ms"
    );
    assert_eq!(shape("2.5gbit,0.25ms").to_string(), "2500mbit,250us");

    let err = |s: &str| LinkShape::parse(s).unwrap_err().to_string();
    assert_eq!(
        err("1gbit"),
        "link shape '1gbit': expected <bandwidth>,<delay> such as 1gbit,5ms"
    );
    for (bad, says) in [
        ("1gbps,5ms", "bps"),
        ("1GB,5ms", "not one of bit, kbit, mbit, gbit"),
        ("1000,5ms", "needs a unit"),
        ("fast,5ms", "not a number"),
        ("-1gbit,5ms", "not a number"),
        ("1e3mbit,5ms", "not one of"),
        ("0mbit,5ms", "must be between"),
        ("1gbit,5", "needs a unit"),
        ("1gbit,-5ms", "not a number"),
        ("1gbit,5min", "not one of s, ms, us"),
        ("1gbit,5ms,1", "not one of s, ms, us"),
        ("1gbit,2h", "not one of"),
        ("1gbit,7200s", "longer than"),
        ("1gbit,", "not a number"),
        ("", "expected <bandwidth>,<delay>"),
    ] {
        let e = err(bad);
        assert!(e.starts_with(&format!("link shape '{bad}': ")), "{e}");
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_relay_subcommand_prints_its_address_and_exits_after_max_connections() {
    let (echo, echo_done) = echo_server();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .args(["--json", "relay", "--listen", "127.0.0.1:0", "--to"])
        .arg(echo.to_string())
        .args(["--link", "1gbit,2ms", "--max-connections", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let start: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(start["event"], "listening", "{line}");
    assert_eq!(start["link"], "1gbit,2ms", "{line}");
    let addr: SocketAddr = start["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    for rtt in pings(addr, 3) {
        assert!(rtt >= Duration::from_millis(4), "round trip {rtt:?}");
    }
    echo_done.join().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let done: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(done["event"], "done", "{line}");
    assert_eq!(done["client_to_target_bytes"], 3, "{line}");
    assert!(child.wait().unwrap().success());

    let o = Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .args(["relay", "--link", "1gbit"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("expected <bandwidth>,<delay> such as 1gbit,5ms"),
        "{err}"
    );
}
