//! `share-study --from dimse:AET@HOST:PORT --study UID`: the study's series listed with C-FIND
//! (study root, SERIES level), one picked, its instances listed (IMAGE level), then the series
//! moved with C-MOVE to our own receiving AE, a C-STORE SCP started for the duration on our
//! port. What arrives must be exactly the instances listed (anything else, or anything
//! missing, is an error), so that nobody else's association slips an object into the study.

use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::ClientAssociation;

use super::command::{self, Inbox, Incoming};
use super::store_scp::{Expected, Receiver, ScpOptions, Until};
use super::store_scu::{associate, Local};
use super::watch::Watchdog;
use super::{DimseAddr, IMAGE_STORAGE};
use crate::pacs::pull::Fetched;
use crate::pacs::{first_of, printable, AnswerBudget, LISTED};

/// Our side of a DIMSE archive: our AE title, and where its C-MOVE reaches us.
#[derive(Clone, Debug)]
pub struct DimseLocal {
    pub scu: super::store_scu::Local,
    /// The address and port our receiving AE listens on during a C-MOVE.
    pub bind: String,
    pub port: u16,
    /// The most bytes of one instance received.
    pub max_instance: u64,
    /// The longest one association into our receiving AE may last (the archive's carries the
    /// whole series; anyone else's that reached the port is cut then).
    pub assoc_max: std::time::Duration,
    /// Addresses the archive's C-STOREs may come from besides its host's (--archive-from).
    pub archive_from: Vec<std::net::IpAddr>,
}

const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const LE: [&str; 2] = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"];
/// The bound of one C-FIND answer's identifier.
const MAX_IDENTIFIER: u64 = 1 << 20;
/// The most instances a series may list.
const MAX_INSTANCES: usize = crate::formats::study::MAX_SLICES;

fn el(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, dicom_value!(Str, v))
}

/// The accepted presentation context of `class`, and its transfer syntax.
fn context(a: &ClientAssociation<TcpStream>, class: &str, to: &DimseAddr) -> Result<(u8, String)> {
    a.presentation_contexts()
        .iter()
        .find(|p| {
            p.reason == PresentationContextResultReason::Acceptance && p.abstract_syntax == class
        })
        .map(|p| (p.id, p.transfer_syntax.trim_end_matches('\0').to_string()))
        .ok_or_else(|| {
            anyhow!(
                "{to}: the archive does not offer the study root {} model ({class})",
                if class == FIND { "C-FIND" } else { "C-MOVE" }
            )
        })
}

/// What a C-FIND with `query` answers: of each identifier, as it arrives, the text of the
/// attributes `keep` (cut to what is kept), the identifier itself dropped; its bytes and the
/// item taken from the command's `budget`. Each answer must answer our request (`id`), and
/// the last must come within the exchange's deadline (--archive-max-secs).
#[allow(clippy::too_many_arguments)]
fn find(
    a: &mut ClientAssociation<TcpStream>,
    watch: &Watchdog,
    to: &DimseAddr,
    scu: &Local,
    query: &InMemDicomObject,
    id: u16,
    keep: &[Tag],
    budget: &mut AnswerBudget,
) -> Result<Vec<Vec<Option<String>>>> {
    let (pc, ts) = context(a, FIND, to)?;
    let q = command::encode_data(query, &ts)?;
    let deadline = watch.renew();
    let sent = command::send(a, pc, &command::find_rq(FIND, id), Some(&q));
    watch.passed(to, "the archive to take our C-FIND")?;
    sent.map_err(|e| anyhow!("{to}: C-FIND: {e:#}"))?;
    let mut inbox = Inbox::until(deadline);
    let mut found = Vec::new();
    loop {
        let got = inbox.receive(a, MAX_IDENTIFIER);
        watch.passed(to, &format!("the C-FIND answers ({} so far)", found.len()))?;
        let m = match got {
            Ok(Incoming::Message(m)) if m.field() == command::C_FIND_RSP => m,
            Ok(Incoming::Message(m)) => bail!("{to}: answered C-FIND with {:04X}H", m.field()),
            Ok(_) => bail!(
                "{to}: the archive ended the association during C-FIND (as archives do when \
                 they do not know the calling AE title, ours {}: docs/pacs.md)",
                scu.aet
            ),
            Err(e) => bail!("{to}: C-FIND: {e:#} ({} answers so far)", found.len()),
        };
        answers_ours(&m, id, "C-FIND", to)?;
        match m.status() {
            Some(command::PENDING | command::PENDING_WARNING) => {
                let Some(d) = &m.data else {
                    bail!("{to}: a C-FIND answer without its identifier (or over 1 MiB)");
                };
                budget.take(d.len() as u64, 1, &format!("{to}: C-FIND"))?;
                let obj = command::decode_data(d, &ts)
                    .map_err(|e| anyhow!("{to}: a C-FIND identifier: {e}"))?;
                found.push(
                    keep.iter()
                        .map(|t| command::text(&obj, *t).map(|v| crate::pacs::kept_text(&v)))
                        .collect(),
                );
                if found.len() > MAX_INSTANCES {
                    bail!("{to}: C-FIND answered more than {MAX_INSTANCES} items");
                }
            }
            Some(command::SUCCESS) => return Ok(found),
            // Cancel: some archives end an answer so when it passes their limit on C-FIND
            // results (Orthanc's LimitFindInstances): what came is part of the list.
            Some(0xFE00) => bail!(
                "{to}: C-FIND ended early (status FE00H, matching terminated) after {} items: \
                 a capped answer? (a limit on C-FIND results, e.g. Orthanc's \
                 LimitFindInstances); nothing taken as whole",
                found.len()
            ),
            s => bail!(
                "{to}: C-FIND failed (status {}; does the archive know our AE title {} as a \
                 DICOM node? docs/pacs.md)",
                s.map_or("none".into(), |s| format!("{s:04X}H")),
                scu.aet
            ),
        }
        if Instant::now() >= deadline {
            bail!(
                "{to}: C-FIND: no last answer within --archive-max-secs {} s ({} answers, all \
                 pending): nothing taken",
                scu.exchange.as_secs(),
                found.len()
            );
        }
    }
}

/// Whether the answer `m` to our `what` request `id` answers it (Message ID Being Responded
/// To): an answer to another request says nothing of ours.
fn answers_ours(m: &command::Message, id: u16, what: &str, to: &DimseAddr) -> Result<()> {
    let answers = command::ushort(&m.command, tags::MESSAGE_ID_BEING_RESPONDED_TO);
    if answers != Some(id) {
        bail!(
            "{to}: a {what} answer to {}, not to our request (message {id}): nothing taken",
            answers.map_or("no message".into(), |n| format!("message {n}"))
        );
    }
    Ok(())
}

/// The longest our receiving AE waits for a connection to be associated during a move.
const NEGOTIATION: std::time::Duration = std::time::Duration::from_secs(30);

/// The addresses `to`'s host name resolves to: those our receiving AE takes connections from.
fn archive_addrs(to: &DimseAddr) -> Result<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<std::net::IpAddr> = (to.host.as_str(), to.port)
        .to_socket_addrs()
        .map_err(|e| anyhow!("{to}: cannot resolve {}: {e}", to.host))?
        .map(|a| a.ip().to_canonical())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The addresses our receiving AE serves during a move: the archive's and --archive-from.
fn allowed_peers(to: &DimseAddr, local: &DimseLocal) -> Result<Vec<std::net::IpAddr>> {
    let mut ips = archive_addrs(to)?;
    ips.extend(local.archive_from.iter().map(|a| a.to_canonical()));
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The move's outcome, led by the connections our receiving AE rejected, if any: an archive
/// whose C-STOREs come from another address than its name's is told how to be let in.
fn rejected_first(
    moved: Result<()>,
    rejected: &[String],
    peers: &[std::net::IpAddr],
) -> Result<()> {
    if rejected.is_empty() {
        return moved;
    }
    let mut from = rejected.to_vec();
    from.sort();
    from.dedup();
    let allowed: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let hint = format!(
        "our receiving AE rejected connections from {} (not the archive's address(es) {}): \
         give --archive-from {} if that is the archive",
        from.join(", "),
        allowed.join(", "),
        from[0]
    );
    moved.map_err(|e| anyhow!("{hint}; and the move: {e:#}"))
}

/// The move's outcome, told first when an association into our receiving AE was cut by
/// --our-assoc-max-secs (the move's own error, if any, is then its consequence).
fn cut_short(moved: Result<()>, cut: &[String], local: &DimseLocal) -> Result<()> {
    if cut.is_empty() {
        return moved;
    }
    bail!(
        "our receiving AE {}: the move's association hit its deadline, --our-assoc-max-secs {} \
         ({}){}; raise --our-assoc-max-secs for a series this large or an archive this slow",
        local.scu.aet,
        local.assoc_max.as_secs(),
        cut.join("; "),
        moved
            .err()
            .map_or(String::new(), |e| format!(", and the move: {e:#}"))
    )
}

/// Fetches series `series` (UID or Series Number; the study's one series when None) of study
/// `study` from `to` into `dir` (`dir/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`).
pub fn fetch_series(
    to: &DimseAddr,
    local: &DimseLocal,
    study: &str,
    series: Option<&str>,
    dir: &Path,
    quiet: bool,
) -> Result<Fetched> {
    let study = crate::pacs::checked_uid(study, "--study")?;
    let contexts: Vec<(String, Vec<String>)> = [FIND, MOVE]
        .iter()
        .map(|c| (c.to_string(), LE.iter().map(|t| t.to_string()).collect()))
        .collect();
    let (mut a, watch) = associate(to, &local.scu, &contexts)?;
    let r = fetch_on(&mut a, &watch, to, local, study, series, dir, quiet);
    match &r {
        Ok(_) => {
            // Bounded as an exchange: an archive trickling its A-RELEASE-RP is cut.
            watch.renew();
            let _ = a.release();
        }
        Err(_) => {
            let _ = a.abort();
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn fetch_on(
    a: &mut ClientAssociation<TcpStream>,
    watch: &Watchdog,
    to: &DimseAddr,
    local: &DimseLocal,
    study: &str,
    series: Option<&str>,
    dir: &Path,
    quiet: bool,
) -> Result<Fetched> {
    let q = InMemDicomObject::from_element_iter([
        el(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study),
        el(tags::SERIES_INSTANCE_UID, VR::UI, ""),
        el(tags::SERIES_NUMBER, VR::IS, ""),
        el(tags::MODALITY, VR::CS, ""),
        el(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
    ]);
    // One bound on what both of this command's C-FINDs may bring.
    let mut budget = AnswerBudget::default();
    let all = find(
        a,
        watch,
        to,
        &local.scu,
        &q,
        1,
        &[
            tags::SERIES_INSTANCE_UID,
            tags::SERIES_NUMBER,
            tags::MODALITY,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ],
        &mut budget,
    )?;
    // The archive's own count of each series' instances, where it gives one: the IMAGE-level
    // list must hold as many (an archive that caps its C-FIND answers would otherwise hand
    // over part of a series as the whole).
    let counts: Vec<(String, Option<usize>)> = all
        .iter()
        .map(|s| {
            (
                s[0].clone().unwrap_or_default(),
                s[3].as_deref().and_then(|n| n.trim().parse().ok()),
            )
        })
        .collect();
    if all.is_empty() {
        bail!("--study {study}: no such study at {to} (C-FIND at SERIES level found nothing)");
    }
    let found: Vec<(String, Option<String>, String)> = all
        .into_iter()
        .map(|mut s| {
            (
                s[0].take().unwrap_or_default(),
                s[1].take()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty()),
                s[2].take().unwrap_or_default(),
            )
        })
        .collect();
    let series_uid = crate::pacs::pick_series(&found, series, study, to)?;
    let q = InMemDicomObject::from_element_iter([
        el(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study),
        el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        el(tags::SOP_INSTANCE_UID, VR::UI, ""),
        el(tags::SOP_CLASS_UID, VR::UI, ""),
    ]);
    let mut sops: Vec<String> = Vec::new();
    let mut skipped = 0usize;
    let mut listed = 0usize;
    let keep = [tags::SOP_INSTANCE_UID, tags::SOP_CLASS_UID];
    for mut i in find(a, watch, to, &local.scu, &q, 2, &keep, &mut budget)? {
        let sop = i[0].take().unwrap_or_default();
        crate::pacs::checked_uid(&sop, &format!("{to}: an instance's SOP Instance UID"))?;
        listed += 1;
        // A non-image object beside the images (a structured report, a presentation
        // state) is left in the archive with a line, as `--in` skips one in a folder; an
        // archive that does not return the class lets our receiving AE judge.
        match i[1].take().filter(|c| !c.is_empty()) {
            Some(c) if !IMAGE_STORAGE.contains(&c.as_str()) => {
                eprintln!(
                    "skipped instance {sop} of series {series_uid} at {to}: SOP class {}, not \
                     an image",
                    printable(&c)
                );
                skipped += 1;
            }
            _ => sops.push(sop),
        }
    }
    if let Some(n) = counts
        .iter()
        .find(|(u, _)| *u == series_uid)
        .and_then(|(_, n)| *n)
        .filter(|&n| n != listed)
    {
        bail!(
            "series {series_uid} of study {study} at {to}: the archive counts {n} instances \
             (C-FIND at SERIES level) but listed {listed} (at IMAGE level): a capped answer? \
             Nothing shared; raise the archive's C-FIND limit"
        );
    }
    sops.sort();
    sops.dedup();
    if sops.is_empty() {
        bail!(
            "series {series_uid} of study {study} at {to}: no image ({listed} instances, \
             {skipped} not images)"
        );
    }

    // Our receiving AE, for the duration of the move: it serves the archive's addresses
    // only (anyone else who reaches our port then could hold it, at least until its
    // negotiation deadline, while the archive's association waits).
    let peers = allowed_peers(to, local)?;
    let mut rx = Receiver::bind(ScpOptions {
        aet: local.scu.aet.clone(),
        bind: local.bind.clone(),
        port: local.port,
        out: dir.to_path_buf(),
        max_instance: local.max_instance,
        // The listed instances at their bound each, no more.
        max_total: local.max_instance.saturating_mul(sops.len() as u64),
        calling: None,
        assoc_timeout: local.scu.timeout,
        assoc_max: local.assoc_max,
        negotiation: local.scu.timeout.min(NEGOTIATION),
        peers: Some(peers.clone()),
        quiet,
        expect: Some(Expected {
            study: study.to_string(),
            series: series_uid.clone(),
            instances: sops.iter().cloned().collect(),
        }),
    })
    .map_err(|e| anyhow!("our receiving AE {}: {e:#}", local.scu.aet))?;
    let stop = rx.stopper();
    let (pc, ts) = context(a, MOVE, to)?;
    // The whole series in one move; with objects skipped, each image on its own (IMAGE
    // level), so that the archive never sends what our AE would refuse.
    let mut moves = Vec::new();
    if skipped == 0 {
        moves.push(InMemDicomObject::from_element_iter([
            el(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"),
            el(tags::STUDY_INSTANCE_UID, VR::UI, study),
            el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        ]));
    } else {
        for sop in &sops {
            moves.push(InMemDicomObject::from_element_iter([
                el(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"),
                el(tags::STUDY_INSTANCE_UID, VR::UI, study),
                el(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
                el(tags::SOP_INSTANCE_UID, VR::UI, sop),
            ]));
        }
    }
    let moves = moves
        .iter()
        .map(|q| command::encode_data(q, &ts))
        .collect::<Result<Vec<_>>>()?;
    let mut refused = Vec::new();
    let mut cut = Vec::new();
    let mut rejected = Vec::new();
    let moved = std::thread::scope(|s| {
        let (refused, cut, rejected) = (&mut refused, &mut cut, &mut rejected);
        let h = s.spawn(move || {
            rx.run(
                Until {
                    once: false,
                    idle: None,
                },
                &mut |r| {
                    // The archive's strings, escaped: they reach the operator's terminal.
                    refused.extend(r.refused.iter().map(|f| {
                        format!(
                            "{} ({:04X}H): {}",
                            printable(&f.sop_instance_uid),
                            f.status,
                            printable(&f.reason)
                        )
                    }));
                    if !r.accepted && r.end.starts_with("rejected: a connection from") {
                        rejected.push(r.peer_addr.clone());
                    }
                    if r.accepted && r.end.starts_with("deadline: ended by its deadline") {
                        let end = printable(&r.end);
                        cut.push(format!("{} from {}: {end}", r.peer_aet, r.peer_addr));
                    }
                },
            )
        });
        let mut inbox = Inbox::default();
        let moved = moves
            .iter()
            .enumerate()
            .try_for_each(|(k, q)| -> Result<()> {
                let id = (k % 0xFFF0) as u16 + 3;
                // However often the archive answers "pending", the move ends by its deadline.
                let deadline = watch.renew();
                inbox.set_deadline(Some(deadline));
                let waited = |last: &str| {
                    anyhow!(
                        "{to}: C-MOVE: no last answer within --archive-max-secs {} s{last}: \
                         waited for the archive to end the move of series {series_uid}; \
                         nothing shared",
                        local.scu.exchange.as_secs()
                    )
                };
                let sent =
                    command::send(a, pc, &command::move_rq(MOVE, id, &local.scu.aet), Some(q));
                if watch.fired() {
                    return Err(waited(""));
                }
                sent.map_err(|e| anyhow!("{to}: C-MOVE: {e:#}"))?;
                let mut last = String::new();
                loop {
                    let got = inbox.receive(a, MAX_IDENTIFIER);
                    // The watchdog cut a wait inside a PDU (or between them).
                    if watch.fired() {
                        return Err(waited(&last));
                    }
                    let m = match got {
                        Ok(Incoming::Message(m)) if m.field() == command::C_MOVE_RSP => m,
                        Ok(Incoming::Message(m)) => {
                            bail!("{to}: answered C-MOVE with {:04X}H", m.field())
                        }
                        Ok(_) => bail!("{to}: the archive ended the association during C-MOVE"),
                        Err(_) if Instant::now() >= deadline => return Err(waited(&last)),
                        Err(e) => bail!("{to}: C-MOVE: {e:#}"),
                    };
                    answers_ours(&m, id, "C-MOVE", to)?;
                    let n = |t| command::ushort(&m.command, t).unwrap_or(0);
                    match m.status() {
                        Some(command::PENDING | command::PENDING_WARNING) => {
                            last = format!(
                                " (its last: pending, {} done, {} to go)",
                                n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
                                n(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)
                            );
                            if Instant::now() >= deadline {
                                return Err(waited(&last));
                            }
                            if !quiet {
                                eprintln!(
                                    "moving from {to}: {} done, {} to go",
                                    n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
                                    n(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)
                                );
                            }
                        }
                        Some(command::SUCCESS) => return Ok(()),
                        Some(0xA801) => bail!(
                        "{to}: the archive does not know our AE title {} as a move destination \
                         (add it, with our host and port {}, to the archive's DICOM nodes: \
                         docs/pacs.md)",
                        local.scu.aet,
                        local.port
                    ),
                        Some(s) => bail!(
                        "{to}: C-MOVE ended with status {s:04X}H: {} sub-operations completed, \
                         {} failed, {} with warnings{}",
                        n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
                        n(tags::NUMBER_OF_FAILED_SUBOPERATIONS),
                        n(tags::NUMBER_OF_WARNING_SUBOPERATIONS),
                        if n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS) == 0 {
                            format!(
                                " (does the archive know our AE title {} at our host, port {}, \
                                 as a move destination? docs/pacs.md)",
                                local.scu.aet, local.port
                            )
                        } else {
                            String::new()
                        }
                    ),
                        None => bail!("{to}: a C-MOVE answer without a status"),
                    }
                }
            });
        // Every instance answered is written (before its C-STORE-RSP).
        stop.stop();
        let ran = h.join().map_err(|_| anyhow!("our receiving AE panicked"))?;
        moved.and(ran.map(|_| ()))
    });
    cut_short(rejected_first(moved, &rejected, &peers), &cut, local)?;
    if !refused.is_empty() {
        bail!(
            "our receiving AE {} refused {} instances of the move: {}",
            local.scu.aet,
            refused.len(),
            first_of(&refused, LISTED)
        );
    }
    // Exactly what was listed, in the one series folder.
    let mut got: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    for e in std::fs::read_dir(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != series_uid {
            bail!("{to}: the move brought series {name}, not the one asked ({series_uid})");
        }
        for f in std::fs::read_dir(e.path())? {
            let f = f?;
            bytes += f.metadata()?.len();
            got.push(
                f.file_name()
                    .to_string_lossy()
                    .trim_end_matches(".dcm")
                    .to_string(),
            );
        }
    }
    got.sort();
    let missing: Vec<&String> = sops
        .iter()
        .filter(|s| got.binary_search(s).is_err())
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|s| sops.binary_search(s).is_err())
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        bail!(
            "{to}: the move brought {} of the {} instances listed ({} missing{}){}",
            got.len() - extra.len(),
            sops.len(),
            missing.len(),
            missing
                .first()
                .map_or(String::new(), |m| format!(", e.g. {m}")),
            if extra.is_empty() {
                String::new()
            } else {
                format!(", and {} not listed", extra.len())
            }
        );
    }
    Ok(Fetched {
        series_uid,
        instances: sops.len(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> DimseLocal {
        DimseLocal {
            scu: super::super::store_scu::Local {
                aet: "PPDENOISE".into(),
                timeout: std::time::Duration::from_secs(10),
                exchange: std::time::Duration::from_secs(60),
            },
            bind: "127.0.0.1".into(),
            port: 11112,
            max_instance: 1 << 20,
            assoc_max: std::time::Duration::from_secs(600),
            archive_from: Vec::new(),
        }
    }

    /// The move's receiving AE serves the archive's addresses and those of --archive-from
    /// (store_scp's tests serve and reject connections by such a set).
    #[test]
    fn archive_from_adds_to_the_archive_addresses() {
        let to = DimseAddr {
            aet: "ARCHIVE".into(),
            host: "192.0.2.1".into(),
            port: 104,
        };
        let mut l = local();
        let one: Vec<std::net::IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        assert_eq!(allowed_peers(&to, &l).unwrap(), one);
        l.archive_from = vec![
            "127.0.0.1".parse().unwrap(),
            "::ffff:10.0.0.5".parse().unwrap(),
        ];
        let want: Vec<std::net::IpAddr> = ["10.0.0.5", "127.0.0.1", "192.0.2.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(allowed_peers(&to, &l).unwrap(), want);
    }

    /// Connections our receiving AE rejected lead a failed move's error, with the option that
    /// lets them in; a move that succeeded, or one with nothing rejected, stands as it is.
    #[test]
    fn rejected_connections_lead_the_moves_error() {
        let peers: Vec<std::net::IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let rejected = vec!["172.17.0.2".to_string(), "172.17.0.2".to_string()];
        let e = format!(
            "{:#}",
            rejected_first(Err(anyhow!("status A702H")), &rejected, &peers).unwrap_err()
        );
        assert!(
            e.starts_with(
                "our receiving AE rejected connections from 172.17.0.2 (not the archive's \
                 address(es) 192.0.2.1): give --archive-from 172.17.0.2 if that is the archive; \
                 and the move: status A702H"
            ),
            "{e}"
        );
        assert!(rejected_first(Ok(()), &rejected, &peers).is_ok());
        let e = rejected_first(Err(anyhow!("refused")), &[], &peers).unwrap_err();
        assert_eq!(e.to_string(), "refused");
    }

    /// A move whose association into our receiving AE was cut by its deadline says so, and
    /// how to mend it, whether the move itself then failed or not; without one, the move's
    /// own outcome stands.
    #[test]
    fn a_move_cut_by_our_deadline_says_so_and_names_the_option() {
        let cut = [
            "ORTHANC from 127.0.0.1: deadline: ended by its deadline, 600 s after its \
                    connection was taken (failed: closed)"
                .to_string(),
        ];
        for moved in [Ok(()), Err(anyhow!("C-MOVE ended with status A702H"))] {
            let failed = moved.is_err();
            let e = format!("{:#}", cut_short(moved, &cut, &local()).unwrap_err());
            assert!(
                e.contains("hit its deadline, --our-assoc-max-secs 600")
                    && e.contains("raise --our-assoc-max-secs")
                    && e.contains("ORTHANC from 127.0.0.1")
                    && e.contains("A702H") == failed,
                "{e}"
            );
        }
        assert!(cut_short(Ok(()), &[], &local()).is_ok());
        let e = cut_short(Err(anyhow!("refused")), &[], &local()).unwrap_err();
        assert_eq!(e.to_string(), "refused");
    }

    /// Our receiving AE takes connections from the addresses the archive's host resolves to.
    #[test]
    fn the_archive_addresses_are_those_its_host_resolves_to() {
        let to = DimseAddr {
            aet: "ARCHIVE".into(),
            host: "127.0.0.1".into(),
            port: 4242,
        };
        assert_eq!(
            archive_addrs(&to).unwrap(),
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }
}
