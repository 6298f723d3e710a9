//! `relay`: a shaping TCP relay between the two servers, for benchmarks (see [`crate::net::relay`]).

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use super::Summary;
use crate::net::relay::{LinkShape, Relay};

/// Benchmark tooling: relay TCP to a server, imposing a bandwidth and a one-way delay on each
/// direction, like a link between two clouds.
///
/// Put it between the servers: S0 listens on --to, S1 connects to --listen. Bytes pass through
/// untouched (the TLS between the servers stays end to end). Prints one line with the bound
/// address on start, then runs until killed, or until --max-connections connections have
/// been relayed to the end (a link between the servers is two connections, one per
/// direction).
#[derive(Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks a free port; the start line says which).
    #[arg(long, default_value = "127.0.0.1:7456")]
    pub listen: SocketAddr,
    /// Address of the server to forward each connection to.
    #[arg(long, default_value = "127.0.0.1:7455")]
    pub to: SocketAddr,
    /// <bandwidth>,<delay> for each direction, e.g. 1gbit,5ms (1 Gbit/s, 5 ms one way, 10 ms
    /// round trip). Units: bit, kbit, mbit, gbit; s, ms, us.
    #[arg(long)]
    pub link: LinkShape,
    /// Exit after this many connections have been accepted and have finished (two per
    /// link between the servers).
    #[arg(long)]
    pub max_connections: Option<u64>,
    /// Seconds to keep trying to reach --to for each accepted connection.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
}

pub fn relay(a: RelayArgs, json: bool) -> Result<Summary> {
    let relay = Relay::bind(a.listen, a.to, a.link)
        .with_context(|| format!("cannot listen on {}", a.listen))?
        .with_connect_timeout(Duration::from_secs(a.connect_timeout));
    let local = relay.local_addr();
    let shape = a.link;
    let delay_ms = shape.one_way_delay.as_secs_f64() * 1e3;
    // The start line comes before the relay blocks: whoever spawned it reads the bound address
    // (port 0) from it and knows the relay is accepting.
    let start = if json {
        serde_json::json!({"ok": true, "command": "relay", "event": "listening",
            "listen": local.to_string(), "to": a.to.to_string(), "link": shape.to_string(),
            "bits_per_second": shape.bits_per_second, "one_way_delay_ms": delay_ms})
        .to_string()
    } else {
        format!(
            "relay listening on {local}, forwarding to {}; each direction {shape} \
             ({} bit/s, {delay_ms} ms one way, {} ms round trip)",
            a.to,
            shape.bits_per_second,
            2.0 * delay_ms
        )
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{start}")
        .and_then(|()| out.flush())
        .context("writing the start line")?;
    drop(out);

    let stats = relay.stats();
    let t0 = Instant::now();
    relay
        .run(a.max_connections)
        .with_context(|| format!("relay on {local}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let (up, down, n) = (
        stats.client_to_target_bytes(),
        stats.target_to_client_bytes(),
        stats.connections(),
    );
    Ok(Summary {
        lines: vec![format!(
            "relay done: {n} connection(s) in {secs:.1} s; {up} bytes to {}, {down} bytes back",
            a.to
        )],
        json: serde_json::json!({"ok": true, "command": "relay", "event": "done",
            "connections": n, "client_to_target_bytes": up, "target_to_client_bytes": down,
            "seconds": secs}),
    })
}
