//! A client association's watchdog: dicom-ul reads a PDU until it is whole, each read bounded
//! only by the socket's read timeout, so an archive sending a byte inside every timeout would
//! hold a wait for ever. A clone of the socket is shut down when the exchange's deadline
//! (--archive-max-secs) passes, so that whatever read or write is blocked returns an error,
//! which the caller then reports as the deadline.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

pub struct Watchdog {
    renew: Sender<Instant>,
    fired: Arc<AtomicBool>,
    limit: Duration,
}

impl Watchdog {
    /// Cuts `socket` at `until` unless renewed; disarmed when dropped.
    pub fn arm(socket: &TcpStream, limit: Duration, until: Instant) -> std::io::Result<Watchdog> {
        let s = socket.try_clone()?;
        let (renew, wait) = channel::<Instant>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        std::thread::Builder::new()
            .name("archive-deadline".into())
            .spawn(move || {
                let mut until = until;
                loop {
                    match wait.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(u) => until = u,
                        Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {
                            if Instant::now() < until {
                                continue;
                            }
                            f.store(true, Ordering::SeqCst);
                            let _ = s.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                }
            })?;
        Ok(Watchdog {
            renew,
            fired,
            limit,
        })
    }

    /// A new exchange: the socket is cut at `deadline` (its own, from its start).
    pub fn until(&self, deadline: Instant) {
        let _ = self.renew.send(deadline);
    }

    /// A new exchange starting now.
    pub fn renew(&self) -> Instant {
        let d = Instant::now() + self.limit;
        self.until(d);
        d
    }

    /// Whether the deadline passed and the socket was cut.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// An error naming the deadline when it cut the socket during the wait for `what`.
    pub fn passed(&self, to: &dyn std::fmt::Display, what: &str) -> Result<()> {
        if self.fired() {
            let n = self.limit.as_secs();
            return Err(anyhow!(
                "{to}: waited {n} s for {what}: the exchange's deadline, --archive-max-secs {n}"
            ));
        }
        Ok(())
    }
}
