//! A hostile or broken DIMSE archive and hostile senders, against fakes in the test (no
//! Orthanc, no dcmtk): an archive answering C-FIND on and on with fat identifiers (refused at
//! the command's one bound on its lists), a C-MOVE answered "pending, 0 to go" for ever
//! (refused at --archive-max-secs, saying what it waited for), answers to another message
//! than ours (refused); and, sent to `receive`: a calling AE title holding an escape sequence
//! (escaped on the terminal), a data set whose bytes are a suffix of the one held and another
//! data set under a held SOP Instance UID (refused, the held one kept), and UIDs that would
//! climb out of `--out` (refused, nothing written outside it). These run in every `cargo
//! test`.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::{ClientAssociationOptions, ServerAssociation, ServerAssociationOptions};
use ppdenoise::pacs::dimse::command::{self, Inbox, Incoming};

use crate::common;
use common::free_port;

const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const STUDY: &str = "1.2.826.0.1.3680043.8.498.7";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.71";
const SOP: &str = "1.2.826.0.1.3680043.8.498.71.1";

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn st(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, dicom_value!(Str, v))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

/// A C-FIND-RSP or C-MOVE-RSP (`field`) of `class` answering message `id` with `status`, an
/// identifier following when `data`, with the unsigned shorts `extra` (sub-operations).
fn rsp(
    class: &str,
    field: u16,
    id: u16,
    status: u16,
    data: bool,
    extra: &[(Tag, u16)],
) -> InMemDicomObject {
    let mut e = vec![
        st(tags::AFFECTED_SOP_CLASS_UID, VR::UI, class),
        us(tags::COMMAND_FIELD, field),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id),
        us(tags::COMMAND_DATA_SET_TYPE, if data { 0 } else { 0x0101 }),
        us(tags::STATUS, status),
    ];
    e.extend(extra.iter().map(|(t, v)| us(*t, *v)));
    InMemDicomObject::command_from_element_iter(e)
}

/// One association of the fake archive: its answers go on the request's context.
struct Conn {
    a: ServerAssociation<TcpStream>,
}

impl Conn {
    /// Sends `cmd` and its identifier `data` on context `pc` (transfer syntax `ts`): false
    /// once the peer is gone.
    fn answer(
        &mut self,
        pc: u8,
        ts: &str,
        cmd: &InMemDicomObject,
        data: Option<&InMemDicomObject>,
    ) -> bool {
        let bytes = data.map(|d| command::encode_data(d, ts).unwrap());
        command::send(&mut self.a, pc, cmd, bytes.as_deref()).is_ok()
    }
}

/// What the fake archive does.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// C-FIND answered with 1500 identifiers of 500 KB each (a new series each), then success.
    Flood,
    /// The series and its one instance listed; the C-MOVE answered "pending, 0 done, 0 to go"
    /// every 200 ms, for 120 s.
    PendingForever,
    /// C-FIND answered as to another message than the one asked.
    FindAnswersAnother,
    /// C-FIND as it should; the C-MOVE answered success, as to another message.
    MoveAnswersAnother,
    /// C-FIND answered with a P-DATA PDU declaring 1000 bytes, sent one byte every 500 ms:
    /// each read inside any read timeout, the PDU whole only after 500 s.
    Trickle,
}

/// A fake DIMSE archive (AE title ARCHIVE) on a free port of 127.0.0.1, serving C-FIND and
/// C-MOVE as `mode` says: its port, and how many C-FIND identifiers it sent.
fn archive(mode: Mode) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    std::thread::spawn(move || {
        for socket in l.incoming() {
            let Ok(socket) = socket else { continue };
            let Ok(a) = ServerAssociationOptions::new()
                .accept_any()
                .ae_title("ARCHIVE")
                .with_abstract_syntax(FIND)
                .with_abstract_syntax(MOVE)
                .with_transfer_syntax(EXPLICIT)
                .with_transfer_syntax(IMPLICIT)
                .read_timeout(Duration::from_secs(30))
                .establish(socket)
            else {
                continue;
            };
            serve(&mut Conn { a }, mode, &count);
        }
    });
    (port, sent)
}

fn serve(c: &mut Conn, mode: Mode, count: &AtomicU64) {
    let mut inbox = Inbox::default();
    let junk = "x".repeat(500_000);
    loop {
        let m = match inbox.receive(&mut c.a, 1 << 20) {
            Ok(Incoming::Message(m)) => m,
            _ => return,
        };
        let ts =
            c.a.presentation_contexts()
                .iter()
                .find(|p| p.id == m.pc)
                .map(|p| p.transfer_syntax.trim_end_matches('\0').to_string())
                .unwrap();
        let (pc, id) = (m.pc, m.id());
        if mode == Mode::Trickle {
            use std::io::Write;
            let s = c.a.inner_stream();
            let _ = s.write_all(&[4, 0, 0, 0, 0x03, 0xE8]);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(120) {
                if s.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            return;
        }
        match m.field() {
            command::C_FIND_RQ => {
                let q = command::decode_data(m.data.as_deref().unwrap(), &ts).unwrap();
                let level = command::text(&q, tags::QUERY_RETRIEVE_LEVEL).unwrap_or_default();
                let answers: Vec<InMemDicomObject> = match (mode, level.as_str()) {
                    (Mode::Flood, _) => {
                        for k in 0..1500u32 {
                            let item = InMemDicomObject::from_element_iter([
                                st(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"),
                                st(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
                                st(tags::SERIES_INSTANCE_UID, VR::UI, &format!("{SERIES}.{k}")),
                                st(tags::MODALITY, VR::CS, "CT"),
                                st(tags::TEXT_VALUE, VR::UT, &junk),
                            ]);
                            let cmd =
                                rsp(FIND, command::C_FIND_RSP, id, command::PENDING, true, &[]);
                            if !c.answer(pc, &ts, &cmd, Some(&item)) {
                                return;
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Vec::new()
                    }
                    (_, "SERIES") => vec![InMemDicomObject::from_element_iter([
                        st(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"),
                        st(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
                        st(tags::SERIES_INSTANCE_UID, VR::UI, SERIES),
                        st(tags::SERIES_NUMBER, VR::IS, "1"),
                        st(tags::MODALITY, VR::CS, "CT"),
                        st(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, "1"),
                    ])],
                    _ => vec![InMemDicomObject::from_element_iter([
                        st(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"),
                        st(tags::SOP_INSTANCE_UID, VR::UI, SOP),
                        st(tags::SOP_CLASS_UID, VR::UI, CT),
                    ])],
                };
                let to = if mode == Mode::FindAnswersAnother {
                    id + 1
                } else {
                    id
                };
                for item in &answers {
                    let cmd = rsp(FIND, command::C_FIND_RSP, to, command::PENDING, true, &[]);
                    if !c.answer(pc, &ts, &cmd, Some(item)) {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let done = rsp(FIND, command::C_FIND_RSP, to, command::SUCCESS, false, &[]);
                if !c.answer(pc, &ts, &done, None) {
                    return;
                }
            }
            command::C_MOVE_RQ => {
                let t = Instant::now();
                let counts = [
                    (tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, 0),
                    (tags::NUMBER_OF_REMAINING_SUBOPERATIONS, 0),
                    (tags::NUMBER_OF_FAILED_SUBOPERATIONS, 0),
                    (tags::NUMBER_OF_WARNING_SUBOPERATIONS, 0),
                ];
                if mode == Mode::MoveAnswersAnother {
                    let cmd = rsp(
                        MOVE,
                        command::C_MOVE_RSP,
                        id + 1,
                        command::SUCCESS,
                        false,
                        &counts,
                    );
                    if !c.answer(pc, &ts, &cmd, None) {
                        return;
                    }
                    continue;
                }
                while t.elapsed() < Duration::from_secs(120) {
                    let cmd = rsp(
                        MOVE,
                        command::C_MOVE_RSP,
                        id,
                        command::PENDING,
                        false,
                        &counts,
                    );
                    if !c.answer(pc, &ts, &cmd, None) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                return;
            }
            _ => return,
        }
    }
}

/// `share-study --from dimse:ARCHIVE@127.0.0.1:PORT` into `dir`, our receiving AE on a free
/// port, with `extra` options, killed after 40 s: its output and how long it ran.
fn share(dir: &Path, port: u16, extra: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let child = Command::new(common::bin())
        .args([
            "share-study",
            "--from",
            &format!("dimse:ARCHIVE@127.0.0.1:{port}"),
            "--study",
            STUDY,
            "--our-port",
            "0",
            "--archive-timeout",
            "10",
            "--out",
            &s(&dir.join("study")),
            "--sigma",
            "20HU",
            "--quiet",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::wait_limit(child, Duration::from_secs(40));
    (o, t.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Nothing of a share in `dir`.
fn nothing_shared(dir: &Path, what: &str) {
    for p in ["study", "study.fetched", "study.sources.json"] {
        assert!(!dir.join(p).exists(), "{what}: {p} was written");
    }
}

/// A C-FIND answered with 1500 identifiers of 500 KB each: refused at the command's one
/// bound on its lists (256 MiB, about 537 of them), naming the archive and the bound, each
/// identifier reduced to what is used as it came (the command ends quickly), with nothing
/// shared; the fake counts what it sent before the client stopped.
#[test]
fn a_cfind_answering_on_and_on_is_refused_at_the_commands_bound() {
    let (port, sent) = archive(Mode::Flood);
    let d = tempfile::tempdir().unwrap();
    let (o, took) = share(d.path(), port, &[]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert!(
        e.contains(&format!(
            "dimse:ARCHIVE@127.0.0.1:{port}: C-FIND: the archive's list answers passed this \
             command's bound (268435456 bytes"
        )),
        "{e}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let n = sent.load(Ordering::SeqCst);
    assert!((500..600).contains(&n), "{n} identifiers sent");
    assert!(took < Duration::from_secs(30), "refused after {took:?}");
    nothing_shared(d.path(), "a C-FIND flood");
}

/// A C-MOVE the archive answers "pending, 0 done, 0 to go" every 200 ms without end: refused
/// at --archive-max-secs (3 s here), saying what it waited for and the archive's last
/// answer, with nothing shared.
#[test]
fn a_move_pending_for_ever_is_refused_at_its_deadline() {
    let (port, _) = archive(Mode::PendingForever);
    let d = tempfile::tempdir().unwrap();
    let (o, took) = share(d.path(), port, &["--archive-max-secs", "3"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted after {took:?}: {e}");
    assert!(
        e.contains(&format!(
            "dimse:ARCHIVE@127.0.0.1:{port}: C-MOVE: no last answer within --archive-max-secs \
             3 s (its last: pending, 0 done, 0 to go): waited for the archive to end the move \
             of series {SERIES}"
        )),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "refused after {took:?}"
    );
    nothing_shared(d.path(), "a move pending for ever");
}

/// An archive answering C-FIND with one PDU a byte at a time, each byte well inside the
/// read timeout (10 s): cut at --archive-max-secs (3 s here) by the association's watchdog,
/// inside the PDU, naming the wait and the option, with nothing shared.
#[test]
fn an_answer_trickled_inside_the_read_timeout_is_cut_at_the_deadline() {
    let (port, _) = archive(Mode::Trickle);
    let d = tempfile::tempdir().unwrap();
    let (o, took) = share(d.path(), port, &["--archive-max-secs", "3"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted after {took:?}: {e}");
    assert!(
        e.contains(&format!(
            "dimse:ARCHIVE@127.0.0.1:{port}: waited 3 s for the C-FIND answers (0 so far): \
             the exchange's deadline, --archive-max-secs 3"
        )),
        "{e}"
    );
    assert!(took < Duration::from_secs(8), "refused after {took:?}");
    nothing_shared(d.path(), "a trickled answer");
}

/// An archive trickling its A-ASSOCIATE-AC a byte every 500 ms: the wait for the association
/// is cut at --archive-max-secs (3 s here), naming it.
#[test]
fn an_association_accepted_a_byte_at_a_time_is_cut_at_the_deadline() {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in l.incoming() {
            let Ok(mut socket) = socket else { continue };
            std::thread::spawn(move || {
                let mut rq = [0u8; 64];
                let _ = socket.read(&mut rq);
                let _ = socket.write_all(&[2, 0, 0, 0, 0x03, 0xE8]);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(120) {
                    if socket.write_all(&[0]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
        }
    });
    let d = tempfile::tempdir().unwrap();
    let (o, took) = share(d.path(), port, &["--archive-max-secs", "3"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted after {took:?}: {e}");
    assert!(
        e.contains(&format!(
            "dimse:ARCHIVE@127.0.0.1:{port}: waited 3 s for the archive to accept the \
             association: the exchange's deadline, --archive-max-secs 3"
        )),
        "{e}"
    );
    assert!(took < Duration::from_secs(8), "refused after {took:?}");
    nothing_shared(d.path(), "a trickled association");
}

/// A C-FIND, then a C-MOVE, answered as if to another message than ours (Message ID Being
/// Responded To): refused, naming both messages, with nothing shared.
#[test]
fn answers_to_another_message_than_ours_are_refused() {
    for (mode, says) in [
        (
            Mode::FindAnswersAnother,
            "a C-FIND answer to message 2, not to our request (message 1)",
        ),
        (
            Mode::MoveAnswersAnother,
            "a C-MOVE answer to message 4, not to our request (message 3)",
        ),
    ] {
        let (port, _) = archive(mode);
        let d = tempfile::tempdir().unwrap();
        let (o, _) = share(d.path(), port, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "accepted: {e}");
        assert!(e.contains(says), "{says:?} not in {e}");
        nothing_shared(d.path(), says);
    }
}

/// `ppdenoise receive --aet PPDRX` into `out`, auditing to `audit`, once it listens: the
/// child and its port.
fn receive(out: &Path, audit: &Path) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(common::bin())
        .args(["--json", "--audit", &s(audit), "receive", "--aet", "PPDRX"])
        .args(["--port", &port.to_string(), "--out", &s(out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "receive never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// Stops `receive` with SIGTERM: its output.
fn stop(child: Child) -> Output {
    // SAFETY: a signal to the child this test started, by its id.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let o = common::wait_limit(child, Duration::from_secs(20));
    assert!(o.status.success(), "receive: {}", stderr(&o));
    o
}

/// A CT instance's data set (explicit VR little endian) of series `series`, SOP Instance
/// `sop`, one pixel of value `v`; with `image_type`, an Image Type element first.
fn data_set(series: &str, sop: &str, v: u16, image_type: bool) -> Vec<u8> {
    let mut e = Vec::new();
    if image_type {
        e.push(st(tags::IMAGE_TYPE, VR::CS, "ORIGINAL"));
    }
    e.extend([
        st(tags::SOP_CLASS_UID, VR::UI, CT),
        st(tags::SOP_INSTANCE_UID, VR::UI, sop),
        st(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
        st(tags::SERIES_INSTANCE_UID, VR::UI, series),
        us(tags::SAMPLES_PER_PIXEL, 1),
        st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, 1),
        us(tags::COLUMNS, 1),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 12),
        us(tags::HIGH_BIT, 11),
        us(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_value!(U16, [v])),
    ]);
    command::encode_data(&InMemDicomObject::from_element_iter(e), EXPLICIT).unwrap()
}

/// One C-STORE of `data` as SOP Instance `sop` into `receive` on `port`, calling as
/// `calling`, in its own association: the status answered.
fn store(port: u16, calling: &str, sop: &str, data: &[u8]) -> u16 {
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title(calling.to_string())
        .called_ae_title("PPDRX")
        .with_presentation_context(CT, vec![EXPLICIT])
        .read_timeout(Duration::from_secs(20))
        .establish(("127.0.0.1", port))
        .expect("associated");
    let pc = a.presentation_contexts()[0].id;
    command::send(&mut a, pc, &command::store_rq(CT, sop, 1), Some(data)).unwrap();
    let status = match Inbox::default().receive(&mut a, 0).unwrap() {
        Incoming::Message(m) => m.status().unwrap(),
        _ => panic!("no C-STORE answer"),
    };
    let _ = a.release();
    status
}

/// A caller whose AE title holds an escape sequence (ESC [31m, red): `receive`'s lines show
/// it escaped, never the raw escape a terminal would obey.
#[test]
fn receive_escapes_a_callers_ae_title_on_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let (child, port) = receive(&d.path().join("in"), &d.path().join("audit.jsonl"));
    let status = store(port, "\x1b[31mEVIL", SOP, &data_set(SERIES, SOP, 5, false));
    assert_eq!(status, 0);
    let o = stop(child);
    let e = stderr(&o);
    assert!(!e.contains('\x1b'), "a raw escape on the terminal: {e:?}");
    assert!(e.contains("from \\u{1b}[31mEVIL"), "{e}");
}

/// `receive` never writes over an instance it holds: another data set under its SOP
/// Instance UID is refused (A900H), and so is one whose bytes are a tail of the held one
/// (the same elements, less the first); the very same data set again is taken (a retry).
/// The file holds the first data set throughout.
#[test]
fn receive_never_writes_over_what_it_holds_nor_takes_a_tail_for_it() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("in");
    let (child, port) = receive(&out, &d.path().join("audit.jsonl"));
    let first = data_set(SERIES, SOP, 5, true);
    // Image Type, (0008,0008) CS "ORIGINAL": 8 bytes of header and 8 of value.
    let tail = first[16..].to_vec();
    assert_eq!(
        tail,
        data_set(SERIES, SOP, 5, false),
        "not the same less its first element"
    );
    let other = data_set(SERIES, SOP, 6, true);
    let held = out.join(SERIES).join(format!("{SOP}.dcm"));
    let held_data = || {
        let b = std::fs::read(&held).unwrap();
        let len = u32::from_le_bytes(b[140..144].try_into().unwrap()) as usize;
        b[144 + len..].to_vec()
    };
    assert_eq!(store(port, "HOSPITAL", SOP, &first), 0);
    assert_eq!(held_data(), first);
    for (what, data, want) in [
        (
            "a tail of the held data set",
            &tail,
            command::DATA_SET_MISMATCH,
        ),
        ("another data set", &other, command::DATA_SET_MISMATCH),
        ("the same again", &first, 0),
    ] {
        assert_eq!(store(port, "HOSPITAL", SOP, data), want, "{what}");
        assert_eq!(held_data(), first, "{what}: the held instance changed");
    }
    let o = stop(child);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (j["stored"].as_u64(), j["refused"].as_u64()),
        (Some(1), Some(2)),
        "{j}"
    );
}

/// Every file and folder under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            all.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    all.sort();
    all
}

/// An instance whose Series and SOP Instance UIDs would climb out of `--out` (`1.2/../../x`,
/// `1.2/../x`; the same in the command and the data set): refused (A900H), and nothing is
/// written, inside `--out` or beside it.
#[test]
fn receive_refuses_uids_that_climb_out_of_its_folder_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let top = d.path().join("a");
    let out = top.join("b").join("in");
    std::fs::create_dir_all(&out).unwrap();
    let (child, port) = receive(&out, &d.path().join("audit.jsonl"));
    let (series, sop) = ("1.2/../../x", "1.2/../x");
    let status = store(port, "HOSPITAL", sop, &data_set(series, sop, 5, false));
    assert_eq!(status, command::DATA_SET_MISMATCH);
    let o = stop(child);
    let e = stderr(&o);
    assert!(e.contains("is not a DICOM UID"), "{e}");
    assert_eq!(tree(&top), ["b", "b/in"], "written: {e}");
}
