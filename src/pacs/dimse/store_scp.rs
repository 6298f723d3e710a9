//! A C-STORE SCP: the `receive` command, and the receiving end of `share-study --from dimse:`'s
//! C-MOVE. Every instance received whole, checked (an image storage class, its UIDs valid and
//! those of its command, pixel data present, within the bounds) is written atomically to
//! `<out>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm` before its C-STORE-RSP says success: the
//! received data set byte for byte, behind a file meta group naming its transfer syntax. A
//! path is never made from a sender's string that is not a valid UID. Associations are served
//! one at a time; each ends with a report (the audit line of `receive`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use dicom_dictionary_std::tags;
use dicom_ul::association::Association;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};

use super::command::{self, Inbox, Incoming};
use super::{IMAGE_STORAGE, TRANSFER_SYNTAXES, VERIFICATION};

/// How the SCP runs.
#[derive(Clone, Debug)]
pub struct ScpOptions {
    /// Our AE title: an association calling another is rejected.
    pub aet: String,
    /// The address to listen on and its port (0: any free one).
    pub bind: String,
    pub port: u16,
    /// Where the series' folders go.
    pub out: PathBuf,
    /// The most bytes of one instance's data set.
    pub max_instance: u64,
    /// The most bytes written in all, this run.
    pub max_total: u64,
    /// Only these calling AE titles (None: any).
    pub calling: Option<Vec<String>>,
    /// The longest wait for the peer's next PDU within an association.
    pub assoc_timeout: Duration,
    /// The longest one association may last, from when the receiver takes its connection
    /// from the queue: the wait above is per read, and a peer sending a byte now and then
    /// would otherwise hold it forever.
    pub assoc_max: Duration,
    /// The longest a connection may take to be associated (our A-ASSOCIATE-AC sent), from the
    /// same moment (at most `assoc_max`): a peer dripping its request, whoever it claims to
    /// be (its AE title is checked only once the request is whole), holds the receiver no
    /// longer than this.
    pub negotiation: Duration,
    /// Only connections from these addresses (None: any): during a move, the archive's.
    pub peers: Option<Vec<std::net::IpAddr>>,
    /// No line per instance.
    pub quiet: bool,
    /// During a move: only these instances of this study and series are taken (anyone who
    /// reaches the port could otherwise add or swap an object of the study being shared).
    pub expect: Option<Expected>,
}

/// What a move asked for: the study, the series and its listed SOP Instance UIDs.
#[derive(Clone, Debug)]
pub struct Expected {
    pub study: String,
    pub series: String,
    pub instances: std::collections::BTreeSet<String>,
}

/// One instance refused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refusal {
    pub sop_instance_uid: String,
    pub status: u16,
    pub reason: String,
}

/// What one association brought.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AssocReport {
    pub peer_aet: String,
    pub peer_addr: String,
    /// "released", "aborted", "rejected: ...", "deadline: ..." or "failed: ...".
    pub end: String,
    /// Whether the association was accepted (a bare connection, or one rejected, was not).
    #[serde(skip)]
    pub accepted: bool,
    /// Instances written, by series; each series' study.
    pub series: BTreeMap<String, SeriesCount>,
    pub stored: usize,
    pub bytes: u64,
    pub refused: Vec<Refusal>,
    /// The SOP Instance UIDs written (not in the audit line: counts are enough there).
    #[serde(skip)]
    pub sops: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SeriesCount {
    pub study_uid: String,
    pub instances: usize,
}

/// Stops a running [`Receiver`] from another thread: no new association, and the current
/// one's connection shut (every instance already answered is written, atomically).
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    current: Arc<Mutex<Option<TcpStream>>>,
}

impl Stopper {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(s) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A listening C-STORE SCP.
pub struct Receiver {
    listener: TcpListener,
    opts: ScpOptions,
    stopper: Stopper,
    /// Bytes written so far.
    total: u64,
    /// How long an unbroken run of accept failures for want of descriptors or buffers may
    /// last before the receiver ends ([`STARVED`]; a test shortens it).
    starved: Duration,
}

/// Accept failing for want of descriptors or buffers (or refused), unbroken by a success or
/// an idle poll, this long: the receiver ends with an
/// error (a leak, or a limit too low for its load, is for its supervisor to restart or fix;
/// waiting on would look alive while serving nobody).
const STARVED: Duration = Duration::from_secs(600);

/// When [`Receiver::run`] returns.
#[derive(Clone, Copy, Debug)]
pub struct Until {
    /// After the first association.
    pub once: bool,
    /// After this long without an association.
    pub idle: Option<Duration>,
}

impl Receiver {
    /// Listens on `bind:port` (an error naming them when it cannot).
    pub fn bind(opts: ScpOptions) -> Result<Receiver> {
        let addr = if opts.bind.contains(':') {
            format!("[{}]:{}", opts.bind, opts.port)
        } else {
            format!("{}:{}", opts.bind, opts.port)
        };
        let listener =
            TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("{addr}: cannot poll"))?;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("--out {}: cannot create", opts.out.display()))?;
        Ok(Receiver {
            listener,
            opts,
            stopper: Stopper {
                flag: Arc::new(AtomicBool::new(false)),
                current: Arc::new(Mutex::new(None)),
            },
            total: 0,
            starved: STARVED,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves associations until stopped, or `until` says; `each` is told of every one
    /// (connections that never became an association too). The count: associations accepted.
    pub fn run(&mut self, until: Until, each: &mut dyn FnMut(&AssocReport)) -> Result<usize> {
        self.run_with(until, each, &mut |l| l.accept())
    }

    /// [`Receiver::run`], its connections taken by `accept` (a test makes it fail).
    fn run_with(
        &mut self,
        until: Until,
        each: &mut dyn FnMut(&AssocReport),
        accept: &mut dyn FnMut(&TcpListener) -> std::io::Result<(TcpStream, SocketAddr)>,
    ) -> Result<usize> {
        let mut served = 0;
        let mut last = Instant::now();
        // Transient accept errors are logged, the first of a run and then once a minute.
        let mut logged: Option<Instant> = None;
        let mut unlogged = 0usize;
        // Since when accept has failed for want of descriptors or buffers, unbroken.
        let mut starved: Option<Instant> = None;
        loop {
            if self.stopper.stopped() {
                break;
            }
            if until.idle.is_some_and(|d| last.elapsed() >= d) {
                break;
            }
            let (socket, peer) = match accept(&self.listener) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Nothing pending, and no resource missing to say so: the run is broken.
                    starved = None;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => {
                    let Some(pause) = transient(&e) else {
                        return Err(anyhow!("accepting a connection: {e}"));
                    };
                    // Only an unbroken run of resource failures counts toward the limit.
                    if !starving(&e) {
                        starved = None;
                    } else {
                        let since = *starved.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.starved {
                            return Err(anyhow!(
                                "accepting a connection: {e}, an unbroken run of such failures for \
                                 {} s: ending (raise the file descriptor limit, or restart)",
                                self.starved.as_secs()
                            ));
                        }
                    }
                    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        let more = if unlogged > 0 {
                            format!(" ({unlogged} more since the last line)")
                        } else {
                            String::new()
                        };
                        eprintln!("accepting a connection: {e}{more}; going on");
                        logged = Some(Instant::now());
                        unlogged = 0;
                    } else {
                        unlogged += 1;
                    }
                    std::thread::sleep(pause);
                    continue;
                }
            };
            logged = None;
            starved = None;
            // ::ffff:10.0.0.5 (a v4 peer on a v6 socket) is told as 10.0.0.5.
            let report = self.serve(socket, peer.ip().to_canonical().to_string());
            *self
                .stopper
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            each(&report);
            // A bare connection (a port scan, a health check) or a rejected call is no
            // association: it neither ends `--once` nor counts as activity for `idle`.
            if !report.accepted {
                continue;
            }
            served += 1;
            last = Instant::now();
            if until.once {
                break;
            }
        }
        Ok(served)
    }

    fn options(
        &self,
    ) -> ServerAssociationOptions<
        'static,
        CallingAllowed,
        dicom_ul::association::server::DefaultNegotiation,
    > {
        let mut o = ServerAssociationOptions::new()
            .ae_access_control(CallingAllowed(self.opts.calling.clone()))
            .ae_title(self.opts.aet.clone())
            .read_timeout(self.opts.assoc_timeout)
            .write_timeout(self.opts.assoc_timeout)
            .with_abstract_syntax(VERIFICATION);
        for c in IMAGE_STORAGE {
            o = o.with_abstract_syntax(*c);
        }
        for t in TRANSFER_SYNTAXES {
            o = o.with_transfer_syntax(*t);
        }
        o
    }

    fn serve(&mut self, socket: TcpStream, peer_addr: String) -> AssocReport {
        let mut r = AssocReport {
            peer_addr,
            ..AssocReport::default()
        };
        let _ = socket.set_nonblocking(false);
        // Each answer is a small PDU the sender waits for: sent at once, not held by Nagle.
        let _ = socket.set_nodelay(true);
        let ip = socket.peer_addr().map(|a| a.ip().to_canonical());
        if let Some(peers) = &self.opts.peers {
            // An archive named by a loopback address is on this host, and may connect from
            // any of its addresses: the one this connection reached us at is one of them.
            let here = socket.local_addr().map(|a| a.ip().to_canonical());
            let this_host = |ip: &std::net::IpAddr| {
                peers.iter().any(|p| p.is_loopback()) && here.as_ref().is_ok_and(|h| h == ip)
            };
            if !ip
                .as_ref()
                .is_ok_and(|ip| peers.contains(ip) || this_host(ip))
            {
                let _ = socket.shutdown(std::net::Shutdown::Both);
                let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                r.end = format!(
                    "rejected: a connection from {}, not from {}: shut before negotiation",
                    r.peer_addr,
                    list.join(", ")
                );
                // Someone else on our port while the archive moves a series: said, always.
                eprintln!("our receiving AE {}: {}", self.opts.aet, r.end);
                return r;
            }
        }
        // No association without its deadline: one that cannot be armed is not served.
        let start = Instant::now();
        let negotiation = self.opts.negotiation.min(self.opts.assoc_max);
        let deadline = match Deadline::arm(&socket, start, negotiation) {
            Ok(d) => d,
            Err(e) => {
                let _ = socket.shutdown(std::net::Shutdown::Both);
                r.end = format!("failed: cannot arm its deadline: {e}");
                return r;
            }
        };
        if let Ok(c) = socket.try_clone() {
            *self
                .stopper
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
        r.end = match self.options().establish(socket) {
            Ok(mut a) => {
                // Associated: the rest of the association's time, from the same start.
                deadline.extend(self.opts.assoc_max);
                r.accepted = true;
                // Shown on the operator's terminal and in the audit line: a caller's title
                // is escaped there, never printed raw (an escape sequence would be obeyed).
                r.peer_aet = crate::pacs::printable(a.peer_ae_title());
                match self.associated(&mut a, &mut r) {
                    Ok(e) => e.to_string(),
                    Err(e) => {
                        let _ = a.abort();
                        format!("failed: {e:#}")
                    }
                }
            }
            Err(e) => format!("rejected: {e}"),
        };
        // Whatever the association was doing when its connection was shut, it ended so.
        match deadline.disarm() {
            // The deadline fired as the association was accepted, before it was extended.
            Some(Phase::Negotiation) if r.accepted => {
                r.end = format!(
                    "deadline: cut at its negotiation deadline as it was associated, {} s after \
                     its connection was taken ({})",
                    negotiation.as_secs_f64(),
                    r.end
                );
            }
            Some(Phase::Negotiation) => {
                r.end = format!(
                    "deadline: not associated within its negotiation deadline, {} s after its \
                     connection was taken ({})",
                    negotiation.as_secs_f64(),
                    r.end
                );
            }
            Some(Phase::Association) if r.end != "released" => {
                r.end = format!(
                    "deadline: ended by its deadline, {} s after its connection was taken ({})",
                    self.opts.assoc_max.as_secs_f64(),
                    r.end
                );
            }
            _ => {}
        }
        r
    }

    fn associated(
        &mut self,
        a: &mut ServerAssociation<TcpStream>,
        r: &mut AssocReport,
    ) -> Result<&'static str> {
        let mut inbox = Inbox::default();
        loop {
            let m = match inbox.receive(a, self.opts.max_instance)? {
                Incoming::Release => {
                    a.send(&Pdu::ReleaseRP).map_err(|e| anyhow!("{e}"))?;
                    return Ok("released");
                }
                Incoming::Aborted => return Ok("aborted"),
                Incoming::Message(m) => m,
            };
            match m.field() {
                command::C_ECHO_RQ => {
                    command::send(a, m.pc, &command::echo_rsp(m.id()), None)?;
                }
                command::C_STORE_RQ => {
                    let class =
                        command::text(&m.command, tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                    let sop = command::text(&m.command, tags::AFFECTED_SOP_INSTANCE_UID)
                        .unwrap_or_default();
                    let status = match self.store(a, &m, &class, &sop) {
                        // 0 bytes: held already, the very same data set (a retry): filed
                        // for the sender, not counted again.
                        Ok((_, _, 0)) => command::SUCCESS,
                        Ok((series, study, bytes)) => {
                            let s = r.series.entry(series.clone()).or_default();
                            s.study_uid = study;
                            s.instances += 1;
                            r.stored += 1;
                            r.bytes += bytes;
                            r.sops.push(sop.clone());
                            if !self.opts.quiet {
                                eprintln!("received {sop} of series {series} from {}", r.peer_aet);
                            }
                            command::SUCCESS
                        }
                        Err((status, reason)) => {
                            if !self.opts.quiet {
                                eprintln!(
                                    "refused {sop:?} from {} ({status:04X}H): {reason}",
                                    r.peer_aet
                                );
                            }
                            r.refused.push(Refusal {
                                sop_instance_uid: sop.clone(),
                                status,
                                reason,
                            });
                            status
                        }
                    };
                    command::send(
                        a,
                        m.pc,
                        &command::store_rsp(&class, &sop, m.id(), status),
                        None,
                    )?;
                }
                other => anyhow::bail!("a command this SCP does not serve ({other:04X}H)"),
            }
        }
    }

    /// Checks and writes one C-STORE's instance: its series, study and file size, or the
    /// status and reason of its refusal.
    fn store(
        &mut self,
        a: &ServerAssociation<TcpStream>,
        m: &command::Message,
        class: &str,
        sop: &str,
    ) -> std::result::Result<(String, String, u64), (u16, String)> {
        let mismatch = |why: String| (command::DATA_SET_MISMATCH, why);
        let pc = a
            .presentation_contexts()
            .iter()
            .find(|p| p.id == m.pc && p.reason == PresentationContextResultReason::Acceptance)
            .ok_or((
                command::CANNOT_UNDERSTAND,
                "no such presentation context".to_string(),
            ))?;
        if !IMAGE_STORAGE.contains(&class) || pc.abstract_syntax != class {
            return Err((
                command::CLASS_NOT_SUPPORTED,
                format!("SOP class {class:?} is not an image storage class"),
            ));
        }
        if m.over() {
            return Err((
                command::OUT_OF_RESOURCES,
                format!(
                    "{} bytes, more than --max-instance-mib allows ({} bytes)",
                    m.data_len, self.opts.max_instance
                ),
            ));
        }
        let data = m.data.as_deref().unwrap_or_default();
        if self.total + data.len() as u64 > self.opts.max_total {
            return Err((
                command::OUT_OF_RESOURCES,
                format!(
                    "{} bytes would pass --max-total-mib ({} bytes; {} written)",
                    data.len(),
                    self.opts.max_total,
                    self.total
                ),
            ));
        }
        let ts = pc.transfer_syntax.trim_end_matches(['\0', ' ']);
        let obj = command::decode_data(data, ts)
            .map_err(|e| (command::CANNOT_UNDERSTAND, format!("the data set: {e}")))?;
        let uid = |tag, name: &str| -> std::result::Result<String, (u16, String)> {
            let v = command::text(&obj, tag).unwrap_or_default();
            if !crate::image::dicom::valid_uid(&v) {
                return Err(mismatch(format!("{name} {v:?} is not a DICOM UID")));
            }
            Ok(v)
        };
        let series = uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
        let study = uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
        if uid(tags::SOP_INSTANCE_UID, "SOP Instance UID")? != sop {
            return Err(mismatch("its SOP Instance UID is not its command's".into()));
        }
        if command::text(&obj, tags::SOP_CLASS_UID).as_deref() != Some(class) {
            return Err(mismatch("its SOP Class UID is not its command's".into()));
        }
        let pixels = [
            tags::PIXEL_DATA,
            tags::FLOAT_PIXEL_DATA,
            tags::DOUBLE_FLOAT_PIXEL_DATA,
        ];
        if !pixels.iter().any(|t| obj.element(*t).is_ok()) {
            return Err(mismatch("no pixel data: not an image".into()));
        }
        if let Some(x) = &self.opts.expect {
            if study != x.study || series != x.series || !x.instances.contains(sop) {
                return Err(mismatch(format!(
                    "not an instance the move asked for (study {}, series {}, {} listed \
                     instances)",
                    x.study,
                    x.series,
                    x.instances.len()
                )));
            }
        }
        let path = self.opts.out.join(&series).join(format!("{sop}.dcm"));
        // An instance already received is kept: the same one again is taken as filed (a
        // sender's retry), another one under its UID is refused, never written over it.
        if path.exists() {
            // The whole data set held, not a tail of it: one data set's bytes can end
            // another's (the same elements, less some at the start).
            let same = std::fs::read(&path)
                .is_ok_and(|held| held_data_set(&held).is_some_and(|h| h == data));
            if same {
                return Ok((series, study, 0));
            }
            return Err(mismatch(
                "another data set of this SOP Instance UID was received already; it is kept".into(),
            ));
        }
        let bytes = write_instance(&path, class, sop, ts, data, a.peer_ae_title())
            .map_err(|e| (command::OUT_OF_RESOURCES, format!("{e:#}")))?;
        self.total += bytes;
        Ok((series, study, bytes))
    }
}

/// An association's deadlines: a thread that shuts the connection down (both ways: a blocked
/// read returns, and nothing more is sent or taken) once its time has passed, unless disarmed
/// first. Armed with the negotiation deadline; once associated, extended to the association's
/// (both from the same start). An instance whose data set was still arriving is then never
/// written (it is written only whole, before its answer).
struct Deadline {
    extend: std::sync::mpsc::Sender<Duration>,
    watch: std::thread::JoinHandle<Option<Phase>>,
}

/// Which deadline cut a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Negotiation,
    Association,
}

impl Deadline {
    fn arm(socket: &TcpStream, start: Instant, first: Duration) -> std::io::Result<Deadline> {
        let s = socket.try_clone()?;
        let (extend, wait) = std::sync::mpsc::channel::<Duration>();
        let watch = std::thread::Builder::new()
            .name("assoc-deadline".into())
            .spawn(move || {
                let mut until = start + first;
                let mut phase = Phase::Negotiation;
                loop {
                    match wait.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(total) => {
                            until = start + total;
                            phase = Phase::Association;
                        }
                        // Disarmed: the sender dropped before the time ran out.
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                            return Some(phase);
                        }
                    }
                }
            })?;
        Ok(Deadline { extend, watch })
    }

    /// Associated: the connection may now last `total` from its start.
    fn extend(&self, total: Duration) {
        let _ = self.extend.send(total);
    }

    /// Ends the watch: the deadline that had cut the connection, if one had.
    fn disarm(self) -> Option<Phase> {
        drop(self.extend);
        self.watch.join().unwrap_or(None)
    }
}

/// How long to wait before accepting again after `e`, when `e` passes (None: it ends the
/// receiver). A connection reset or aborted before it was taken, refused by a security
/// module, or a signal, concerns that one connection (accept(2) on Linux also hands over pending network errors, which are to be
/// taken so); running out of file descriptors or buffers passes as connections close.
fn transient(e: &std::io::Error) -> Option<Duration> {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::Interrupted | K::ConnectionAborted | K::ConnectionReset
    ) {
        return Some(Duration::ZERO);
    }
    match e.raw_os_error()? {
        // EPERM: a security module (a firewall hook) refused that one connection.
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPERM => {
            Some(Duration::from_millis(250))
        }
        libc::EPROTO
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETDOWN
        | libc::ENETUNREACH => Some(Duration::ZERO),
        _ => None,
    }
}

/// Whether `e` is one of the failures that may last (out of descriptors or buffers, or refused
/// every time): an unbroken run of them for [`STARVED`] ends the receiver.
fn starving(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPERM)
    )
}

/// The data set of a file [`write_instance`] wrote: what follows its file meta group, whose
/// length its first element, (0002,0000) UL, gives. None when the file is not so.
fn held_data_set(held: &[u8]) -> Option<&[u8]> {
    if held.get(128..132)? != b"DICM" || held.get(132..138)? != b"\x02\x00\x00\x00UL" {
        return None;
    }
    let len = u32::from_le_bytes(held.get(140..144)?.try_into().ok()?) as usize;
    held.get(144usize.checked_add(len)?..)
}

/// Writes the instance: preamble, `DICM`, the file meta group, then `data` as received.
fn write_instance(
    path: &Path,
    class: &str,
    sop: &str,
    ts: &str,
    data: &[u8],
    source_aet: &str,
) -> Result<u64> {
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(sop)
        .transfer_syntax(ts)
        .source_application_entity_title(source_aet)
        .build()
        .map_err(|e| anyhow!("{}: a file meta group: {e}", path.display()))?;
    let mut head = vec![0u8; 128];
    head.extend_from_slice(b"DICM");
    meta.write(&mut head)
        .map_err(|e| anyhow!("{}: a file meta group: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    crate::fileio::atomic::write_with(path, |w| {
        w.write_all(&head)?;
        w.write_all(data)?;
        Ok(())
    })?;
    Ok((head.len() + data.len()) as u64)
}

/// The calling AE titles an association may come from, and our own title called.
pub struct CallingAllowed(Option<Vec<String>>);

impl dicom_ul::association::server::AccessControl for CallingAllowed {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&dicom_ul::pdu::UserIdentity>,
    ) -> std::result::Result<(), dicom_ul::pdu::AssociationRJServiceUserReason> {
        use dicom_ul::pdu::AssociationRJServiceUserReason as R;
        if this_ae_title.trim() != called_ae_title.trim() {
            return Err(R::CalledAETitleNotRecognized);
        }
        match &self.0 {
            Some(allowed) if !allowed.iter().any(|a| a == calling_ae_title.trim()) => {
                Err(R::CallingAETitleNotRecognized)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::slice;
    use super::*;
    use dicom_core::{dicom_value, DataElement, VR};
    use dicom_object::InMemDicomObject;

    /// Our receiving AE during a move takes only the instances asked for (a third party
    /// reaching the port adds nothing), and no receiver writes over an instance it holds:
    /// the same data set again is filed for the sender, another under its UID is refused.
    /// In process, over 127.0.0.1, with the project's own sender.
    #[test]
    fn a_receiver_takes_only_what_was_asked_and_never_writes_over_what_it_holds() {
        let d = tempfile::tempdir().unwrap();
        let series = "1.2.826.0.1.3680043.8.498.2";
        let (asked, other) = ("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.4");
        let file = |name: &str, sop: &str, v: u16| {
            let p = d.path().join(name);
            slice(&p, series, sop, v);
            p
        };
        let (a1, a2, b) = (
            file("a1.dcm", asked, 5),
            file("a2.dcm", asked, 6),
            file("b.dcm", other, 5),
        );
        let out = d.path().join("in");
        let rx = Receiver::bind(ScpOptions {
            aet: "OURS".into(),
            bind: "127.0.0.1".into(),
            port: 0,
            out: out.clone(),
            max_instance: 1 << 20,
            max_total: 1 << 24,
            calling: None,
            assoc_timeout: Duration::from_secs(10),
            assoc_max: Duration::from_secs(60),
            negotiation: Duration::from_secs(30),
            peers: None,
            quiet: true,
            expect: Some(Expected {
                study: "1.2.826.0.1.3680043.8.498.1".into(),
                series: series.into(),
                instances: [asked.to_string()].into(),
            }),
        })
        .unwrap();
        let to = to(&rx);
        let server = serve(rx, false, Some(Duration::from_secs(3)));
        let local = super::super::store_scu::Local {
            aet: "SENDER".into(),
            timeout: Duration::from_secs(10),
            exchange: Duration::from_secs(60),
        };
        let send = |f: &PathBuf| {
            super::super::store_scu::file_series(&to, &local, std::slice::from_ref(f), true)
        };
        assert_eq!(send(&a1).unwrap().instances, 1);
        let held = std::fs::read(out.join(series).join(format!("{asked}.dcm"))).unwrap();
        // Not asked for: refused, nothing written.
        let e = format!("{:#}", send(&b).unwrap_err());
        assert!(e.contains(other), "{e}");
        assert!(!out.join(series).join(format!("{other}.dcm")).exists());
        // The same again: filed; another data set under the same UID: refused, kept.
        assert_eq!(send(&a1).unwrap().instances, 1);
        let e = format!("{:#}", send(&a2).unwrap_err());
        assert!(e.contains(asked), "{e}");
        assert_eq!(
            std::fs::read(out.join(series).join(format!("{asked}.dcm"))).unwrap(),
            held
        );
        let (_, reports) = server.join().unwrap();
        let stored: usize = reports.iter().map(|r| r.stored).sum();
        let refused: Vec<String> = reports
            .iter()
            .flat_map(|r| r.refused.iter().map(|x| x.reason.clone()))
            .collect();
        assert_eq!(stored, 1, "counted once: {refused:?}");
        assert!(
            refused
                .iter()
                .any(|r| r.contains("not an instance the move asked for")),
            "{refused:?}"
        );
        assert!(
            refused.iter().any(|r| r.contains("received already")),
            "{refused:?}"
        );
    }

    /// A receiver on 127.0.0.1 writing into `out`, each association's reads bounded by 2 s
    /// (a stall of a loaded machine is not taken for a silent peer), its negotiation by 2 s
    /// and the association by `assoc_max`.
    fn receiver(out: &Path, assoc_max: Duration) -> Receiver {
        receiver_from(out, assoc_max, None)
    }

    /// [`receiver`], serving only connections from `peers` (None: any).
    fn receiver_from(
        out: &Path,
        assoc_max: Duration,
        peers: Option<Vec<std::net::IpAddr>>,
    ) -> Receiver {
        Receiver::bind(ScpOptions {
            aet: "OURS".into(),
            bind: "127.0.0.1".into(),
            port: 0,
            out: out.to_path_buf(),
            max_instance: 1 << 20,
            max_total: 1 << 24,
            calling: None,
            assoc_timeout: Duration::from_secs(2),
            assoc_max,
            negotiation: Duration::from_secs(2),
            peers,
            quiet: true,
            expect: None,
        })
        .unwrap()
    }

    fn to(rx: &Receiver) -> super::super::DimseAddr {
        super::super::DimseAddr {
            aet: "OURS".into(),
            host: "127.0.0.1".into(),
            port: rx.port(),
        }
    }

    /// `rx` run on a thread of its own until `once` / `idle`: the associations it served
    /// and every connection's report.
    fn serve(
        mut rx: Receiver,
        once: bool,
        idle: Option<Duration>,
    ) -> std::thread::JoinHandle<(usize, Vec<AssocReport>)> {
        std::thread::spawn(move || {
            let mut reports = Vec::new();
            let n = rx.run(Until { once, idle }, &mut |r| reports.push(r.clone()));
            (n.unwrap(), reports)
        })
    }

    fn sender() -> super::super::store_scu::Local {
        super::super::store_scu::Local {
            aet: "SENDER".into(),
            timeout: Duration::from_secs(10),
            exchange: Duration::from_secs(60),
        }
    }

    /// Sends `head` on `s`, then one byte every 100 ms (each well inside the receiver's 2 s
    /// read timeout) until the receiver cuts the connection, or 15 s: how long that took
    /// from `t`.
    fn drip(mut s: TcpStream, head: &[u8], t: Instant) -> Duration {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s.write_all(head).unwrap();
        let mut buf = [0u8; 256];
        while t.elapsed() < Duration::from_secs(15) {
            match s.read(&mut buf) {
                // The receiver's end closed (0), or an abort from it: cut.
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
            if s.write_all(&[0]).is_err() {
                break;
            }
        }
        t.elapsed()
    }

    /// A peer that sends a byte within every read timeout holds the receiver no longer than
    /// a deadline: one dripping its A-ASSOCIATE-RQ is cut at the 2 s negotiation deadline,
    /// well before the association's 6 s; one dripping the data set of a C-STORE on an
    /// accepted association is cut at 6 s, the instance not written; the receiver then
    /// serves a well-behaved sender.
    #[test]
    fn a_dripping_peer_is_cut_at_the_association_deadline_and_the_next_is_served() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("in");
        let rx = receiver(&out, Duration::from_secs(6));
        let (to, stop) = (to(&rx), rx.stopper());
        let server = serve(rx, false, None);
        let addr = ("127.0.0.1", to.port);
        // A-ASSOCIATE-RQ (type 01H) declaring 200 bytes, then one byte at a time.
        let t = Instant::now();
        let before = drip(TcpStream::connect(addr).unwrap(), &[1, 0, 0, 0, 0, 200], t);
        // An accepted association, a C-STORE-RQ's command, then a P-DATA-TF (04H) of
        // 1000 bytes, its data set, one byte at a time.
        let (class, sop) = ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.9");
        // From before the association: its deadline runs from its connection.
        let t = Instant::now();
        let (mut a, _watch) = super::super::store_scu::associate(
            &to,
            &sender(),
            &[(class.to_string(), vec!["1.2.840.10008.1.2.1".to_string()])],
        )
        .unwrap();
        let pc = a.presentation_contexts()[0].id;
        command::send(&mut a, pc, &command::store_rq(class, sop, 1), None).unwrap();
        let s = a.inner_stream().try_clone().unwrap();
        let during = drip(s, &[4, 0, 0, 0, 0x03, 0xE8, 0, 0, 0x03, 0xE4, pc, 0], t);
        drop(a);
        // The upper bounds leave room for a loaded machine's stalls.
        assert!(
            before >= Duration::from_millis(1500) && before < Duration::from_secs(5),
            "a peer dripping its association request was cut after {before:?}, not at its 2 s \
             negotiation deadline"
        );
        assert!(
            during >= Duration::from_millis(5500) && during < Duration::from_secs(12),
            "an accepted association dripping a data set was cut after {during:?}, not at its \
             6 s deadline"
        );
        // Served next, as ever.
        let series = "1.2.826.0.1.3680043.8.498.2";
        let f = d.path().join("a.dcm");
        let good = "1.2.826.0.1.3680043.8.498.3";
        slice(&f, series, good, 5);
        let filed =
            super::super::store_scu::file_series(&to, &sender(), std::slice::from_ref(&f), true)
                .unwrap();
        assert_eq!(filed.instances, 1);
        stop.stop();
        let (served, reports) = server.join().unwrap();
        let ends: Vec<(&str, bool)> = reports
            .iter()
            .map(|r| (r.end.as_str(), r.accepted))
            .collect();
        assert_eq!(reports.len(), 3, "{ends:?}");
        assert!(
            reports[0]
                .end
                .starts_with("deadline: not associated within its negotiation deadline")
                && !reports[0].accepted,
            "{ends:?}"
        );
        assert!(
            reports[1]
                .end
                .starts_with("deadline: ended by its deadline")
                && reports[1].accepted,
            "{ends:?}"
        );
        assert_eq!(
            (reports[2].end.as_str(), reports[2].stored),
            ("released", 1)
        );
        assert_eq!(served, 2, "only accepted associations count: {ends:?}");
        // The instance cut short is nowhere; the good one is filed.
        let written: Vec<String> = std::fs::read_dir(out.join(series))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(written, [format!("{good}.dcm")]);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    }

    /// `--once`: a bare connection (a port scan, a health check) that never asks for an
    /// association is not "the" association; the first accepted one is.
    #[test]
    fn once_ends_after_an_accepted_association_not_a_bare_connection() {
        let d = tempfile::tempdir().unwrap();
        let rx = receiver(&d.path().join("in"), Duration::from_secs(30));
        let to = to(&rx);
        let server = serve(rx, true, None);
        // Connected and closed at once, then one that says nothing until the read timeout.
        drop(TcpStream::connect(("127.0.0.1", to.port)).unwrap());
        let silent = TcpStream::connect(("127.0.0.1", to.port)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        drop(silent);
        let f = d.path().join("a.dcm");
        slice(
            &f,
            "1.2.826.0.1.3680043.8.498.2",
            "1.2.826.0.1.3680043.8.498.3",
            5,
        );
        let filed =
            super::super::store_scu::file_series(&to, &sender(), std::slice::from_ref(&f), true)
                .unwrap();
        assert_eq!(filed.instances, 1);
        let (served, reports) = server.join().unwrap();
        let ends: Vec<&str> = reports.iter().map(|r| r.end.as_str()).collect();
        assert_eq!(served, 1, "{ends:?}");
        assert_eq!(reports.len(), 3, "{ends:?}");
        assert!(
            ends[..2].iter().all(|e| e.starts_with("rejected")),
            "{ends:?}"
        );
        assert_eq!(ends[2], "released");
    }

    /// During a move the receiving AE serves the archive's addresses only: a connection from
    /// any other is shut at once, before a byte of negotiation, and never counts; one from
    /// the archive's address is served.
    #[test]
    fn a_connection_from_another_address_than_the_archive_is_shut_before_negotiation() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.dcm");
        slice(
            &f,
            "1.2.826.0.1.3680043.8.498.2",
            "1.2.826.0.1.3680043.8.498.3",
            5,
        );
        // TEST-NET-1 (RFC 5737): an address no connection here comes from.
        let elsewhere: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let rx = receiver_from(
            &d.path().join("in"),
            Duration::from_secs(30),
            Some(vec![elsewhere]),
        );
        let (to, stop) = (to(&rx), rx.stopper());
        let server = serve(rx, false, None);
        let t = Instant::now();
        let e =
            super::super::store_scu::file_series(&to, &sender(), std::slice::from_ref(&f), true)
                .unwrap_err();
        // Shut before our request was read: not held for the 2 s negotiation deadline.
        assert!(
            t.elapsed() < Duration::from_millis(1900),
            "{:?}: {e:#}",
            t.elapsed()
        );
        stop.stop();
        let (served, reports) = server.join().unwrap();
        assert_eq!(served, 0);
        assert_eq!(reports.len(), 1);
        assert!(
            reports[0]
                .end
                .starts_with("rejected: a connection from 127.0.0.1, not from 192.0.2.1"),
            "{}",
            reports[0].end
        );
        assert!(!d
            .path()
            .join("in")
            .join("1.2.826.0.1.3680043.8.498.2")
            .exists());

        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let rx = receiver_from(
            &d.path().join("in2"),
            Duration::from_secs(30),
            Some(vec![elsewhere, local]),
        );
        let to = self::to(&rx);
        let server = serve(rx, true, None);
        let filed =
            super::super::store_scu::file_series(&to, &sender(), std::slice::from_ref(&f), true)
                .unwrap();
        assert_eq!(filed.instances, 1);
        assert_eq!(server.join().unwrap().0, 1);
    }

    /// One series filed from 127.0.0.1 into a receiver serving `peers` only: the associations
    /// it served and how each connection ended.
    fn filed_from_here(d: &Path, peers: Vec<std::net::IpAddr>) -> (usize, Vec<String>) {
        std::fs::create_dir_all(d).unwrap();
        let f = d.join("a.dcm");
        slice(
            &f,
            "1.2.826.0.1.3680043.8.498.2",
            "1.2.826.0.1.3680043.8.498.3",
            5,
        );
        let rx = receiver_from(&d.join("in"), Duration::from_secs(30), Some(peers));
        let (to, stop) = (to(&rx), rx.stopper());
        let server = serve(rx, false, None);
        let _ = super::super::store_scu::file_series(&to, &sender(), &[f], true);
        stop.stop();
        let (n, reports) = server.join().unwrap();
        (n, reports.into_iter().map(|r| r.end).collect())
    }

    /// The move's receiving AE serves the archive's addresses and those given with
    /// --archive-from; an archive named by a loopback address also from this host's address
    /// the connection reached (here 127.0.0.1, the archive 127.0.0.2).
    #[test]
    fn archive_from_and_a_loopback_archive_let_their_connections_in() {
        // TEST-NET-1 (RFC 5737): an address no connection here comes from; with 127.0.0.1
        // the set the move makes of it and --archive-from 127.0.0.1.
        let archive: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let given: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let d = tempfile::tempdir().unwrap();
        let (served, ends) = filed_from_here(&d.path().join("1"), vec![archive]);
        assert_eq!(served, 0, "{ends:?}");
        assert!(
            ends.len() == 1 && ends[0].starts_with("rejected: a connection from 127.0.0.1"),
            "{ends:?}"
        );

        let (served, ends) = filed_from_here(&d.path().join("2"), vec![given, archive]);
        assert_eq!((served, ends), (1, vec!["released".to_string()]));

        let (served, ends) =
            filed_from_here(&d.path().join("3"), vec!["127.0.0.2".parse().unwrap()]);
        assert_eq!((served, ends), (1, vec!["released".to_string()]));
    }

    /// Accept errors that concern one connection or pass (out of file descriptors, a
    /// connection reset, aborted or refused by a security module before it was taken, a
    /// signal) are passed over and the receiver goes on to serve the next; running out of
    /// descriptors without a connection taken for its limit, or any other error, ends it.
    #[test]
    fn transient_accept_errors_are_passed_over_and_others_end_the_receiver() {
        let d = tempfile::tempdir().unwrap();
        let mut rx = receiver(&d.path().join("in"), Duration::from_secs(30));
        let to = to(&rx);
        let server = std::thread::spawn(move || {
            let errors = [
                libc::EMFILE,
                libc::ENFILE,
                libc::EPERM,
                libc::ECONNABORTED,
                libc::ECONNRESET,
                libc::EINTR,
            ];
            let mut failed = 0;
            let t = Instant::now();
            let n = rx.run_with(
                Until {
                    once: true,
                    idle: None,
                },
                &mut |_| {},
                &mut |l| {
                    if let Some(e) = errors.get(failed) {
                        failed += 1;
                        return Err(std::io::Error::from_raw_os_error(*e));
                    }
                    l.accept()
                },
            );
            (n.map_err(|e| e.to_string()), failed, t.elapsed())
        });
        let f = d.path().join("a.dcm");
        slice(
            &f,
            "1.2.826.0.1.3680043.8.498.2",
            "1.2.826.0.1.3680043.8.498.3",
            5,
        );
        let filed =
            super::super::store_scu::file_series(&to, &sender(), std::slice::from_ref(&f), true)
                .unwrap();
        assert_eq!(filed.instances, 1);
        let (n, failed, took) = server.join().unwrap();
        assert_eq!((n, failed), (Ok(1), 6));
        // Backed off after running out of descriptors and a refusal: 3 x 250 ms.
        assert!(took >= Duration::from_millis(750), "{took:?}");

        let mut rx = receiver(&d.path().join("in2"), Duration::from_secs(30));
        let e = rx
            .run_with(
                Until {
                    once: true,
                    idle: None,
                },
                &mut |_| {},
                &mut |_| Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("accepting a connection"), "{e}");
    }

    /// A receiver into `out` with a 1 s limit on an unbroken run of resource failures, run
    /// (`--once`, idle limit `idle`) on its own thread with `accept(time since start)` in
    /// place of its listener's: its result, the error as text, and how long it ran. Bounded:
    /// a receiver that waits on for ever fails here after 15 s rather than hanging the run.
    fn starved_run(
        out: &Path,
        idle: Option<Duration>,
        mut accept: impl FnMut(Duration) -> std::io::Result<(TcpStream, SocketAddr)> + Send + 'static,
    ) -> (Result<usize, String>, Duration) {
        let mut rx = receiver(out, Duration::from_secs(30));
        rx.starved = Duration::from_secs(1);
        let (tx, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = Instant::now();
            let until = Until { once: true, idle };
            let r = rx.run_with(until, &mut |_| {}, &mut |_| accept(t.elapsed()));
            let _ = tx.send((r.map_err(|e| e.to_string()), t.elapsed()));
        });
        got.recv_timeout(Duration::from_secs(15))
            .expect("still accepting after 15 s")
    }

    /// Out of file descriptors on and on, never a connection taken: the receiver ends with
    /// an error at its limit (1 s here), for its supervisor to act on.
    #[test]
    fn a_receiver_out_of_descriptors_for_its_limit_ends() {
        let d = tempfile::tempdir().unwrap();
        let (r, took) = starved_run(&d.path().join("in"), None, |_| {
            Err(std::io::Error::from_raw_os_error(libc::EMFILE))
        });
        let e = r.unwrap_err();
        assert!(
            e.contains("an unbroken run of such failures for 1 s"),
            "{e}"
        );
        assert!(took >= Duration::from_secs(1), "{took:?}");
    }

    /// Out of descriptors briefly, then an idle poll (nothing pending: descriptors were
    /// there), then out again after the limit: two short runs, not one long one, and the
    /// receiver goes on (it ends here at its idle limit, with no error).
    #[test]
    fn a_run_of_accept_failures_broken_by_an_idle_poll_starts_anew() {
        let d = tempfile::tempdir().unwrap();
        let idle = Some(Duration::from_millis(2500));
        let (r, _) = starved_run(&d.path().join("in"), idle, |at| {
            let out = at < Duration::from_millis(100)
                || (Duration::from_millis(1300)..Duration::from_millis(1900)).contains(&at);
            Err(if out {
                std::io::Error::from_raw_os_error(libc::EMFILE)
            } else {
                std::io::ErrorKind::WouldBlock.into()
            })
        });
        assert_eq!(r, Ok(0));
    }

    #[test]
    fn an_instance_is_written_as_received_behind_its_file_meta_group() {
        let (class, sop) = ("1.2.840.10008.5.1.4.1.1.7", "1.2.826.0.1.3680043.8.498.7");
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, dicom_value!(Str, class)),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, dicom_value!(Str, sop)),
            DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [1])),
            DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_value!(U8, [7, 0])),
        ]);
        let ts = "1.2.840.10008.1.2.1";
        let data = command::encode_data(&obj, ts).unwrap();
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("1.2.3").join(format!("{sop}.dcm"));
        let n = write_instance(&path, class, sop, ts, &data, "SENDER").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, n);
        assert_eq!(&bytes[128..132], b"DICM");
        // The data set, byte for byte, after the meta group.
        assert!(bytes.ends_with(&data));
        let f = dicom_object::open_file(&path).unwrap();
        assert_eq!(f.meta().transfer_syntax().trim_end_matches('\0'), ts);
        assert_eq!(
            f.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            sop
        );
        assert_eq!(
            f.meta().source_application_entity_title().map(str::trim),
            Some("SENDER")
        );
        assert_eq!(
            command::text(&f, tags::SOP_CLASS_UID).as_deref(),
            Some(class)
        );
    }
}
