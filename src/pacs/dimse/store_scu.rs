//! A derived series filed back with C-STORE: every file's header read first (one study, one
//! series, valid UIDs), one association proposing each (SOP class, transfer syntax) the files
//! hold, then each instance sent as it is on disk (its data set bytes after the file meta
//! group: no transcoding) and its status read. A failed instance does not stop the others;
//! the whole is an error naming each that failed. A re-run sends the same SOP Instance UIDs,
//! which an archive files once.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::{ClientAssociation, ClientAssociationOptions};

use super::command::{self, Inbox, Incoming};
use super::watch::Watchdog;
use super::DimseAddr;

/// Our side of an association.
#[derive(Clone, Debug)]
pub struct Local {
    /// Our AE title (the calling AE the archive must know).
    pub aet: String,
    /// Connection, each PDU's read and write.
    pub timeout: Duration,
    /// One exchange, our request to its last answer (--archive-max-secs).
    pub exchange: Duration,
}

/// An association with the archive `to`, proposing `contexts` (abstract syntax, transfer
/// syntaxes); errors name the archive and say whether it was unreachable or refused us.
pub fn associate(
    to: &DimseAddr,
    local: &Local,
    contexts: &[(String, Vec<String>)],
) -> Result<(ClientAssociation<TcpStream>, Watchdog)> {
    let start = std::time::Instant::now();
    let mut o = ClientAssociationOptions::new()
        .calling_ae_title(local.aet.clone())
        .called_ae_title(to.aet.clone())
        .connection_timeout(local.timeout)
        .read_timeout(local.timeout)
        .write_timeout(local.timeout);
    for (class, ts) in contexts {
        o = o.with_presentation_context(class.clone(), ts.clone());
    }
    // dicom-ul opens the socket itself and reads the archive's A-ASSOCIATE-AC to its end, a
    // read timeout per read: the wait is bounded by --archive-max-secs from here, the
    // association left to its thread (and its socket to its read timeout) past it.
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = to.socket();
    std::thread::Builder::new()
        .name("archive-associate".into())
        .spawn(move || {
            let _ = tx.send(o.establish(addr));
        })?;
    let Ok(established) = rx.recv_timeout(local.exchange) else {
        let n = local.exchange.as_secs();
        bail!(
            "{to}: waited {n} s for the archive to accept the association: the exchange's \
             deadline, --archive-max-secs {n}"
        );
    };
    let mut a = established.map_err(|e| {
        use dicom_ul::association::Error as E;
        let cause = match &e {
            E::Rejected { association_rj, .. } => format!(
                "the association was rejected ({}; does the archive know our AE title {} \
                 and its own as {}?)",
                association_rj.source, local.aet, to.aet
            ),
            E::Connect { source, .. } | E::ToAddress { source, .. } => {
                format!("unreachable ({source})")
            }
            _ => format!("{e}"),
        };
        anyhow!("{to}: {cause}")
    })?;
    // A message is a command PDU then data PDUs, each awaited by the peer: without this,
    // Nagle's algorithm and the peer's delayed ACK add tens of milliseconds to each.
    let _ = a.inner_stream().set_nodelay(true);
    let watch = Watchdog::arm(a.inner_stream(), local.exchange, start + local.exchange)
        .map_err(|e| anyhow!("{to}: cannot watch the association's deadline: {e}"))?;
    Ok((a, watch))
}

/// One file to send.
struct Instance {
    file: PathBuf,
    class: String,
    sop: String,
    series: String,
    study: String,
    ts: String,
}

fn instance(file: &Path) -> Result<Instance> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| anyhow!("{}: not a DICOM file: {e}", file.display()))?;
    let text = |tag, name: &str| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
            .filter(|v| crate::image::dicom::valid_uid(v))
            .ok_or_else(|| anyhow!("{}: no valid {name}", file.display()))
    };
    Ok(Instance {
        file: file.to_path_buf(),
        class: text(tags::SOP_CLASS_UID, "SOP Class UID")?,
        sop: text(tags::SOP_INSTANCE_UID, "SOP Instance UID")?,
        series: text(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
        study: text(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
        ts: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_string(),
    })
}

/// The data set of a DICOM file's bytes: what follows its file meta group.
fn data_set<'a>(file: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    // (0002,0000) UL, explicit VR little endian, first in the group, as PS3.10 wants it.
    let head = bytes
        .get(132..144)
        .filter(|h| h[..6] == [2, 0, 0, 0, b'U', b'L']);
    let Some(h) = head else {
        bail!("{}: no file meta group length", file.display());
    };
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    bytes
        .get(144 + len..)
        .ok_or_else(|| anyhow!("{}: shorter than its file meta group", file.display()))
}

/// What was filed.
#[derive(Debug)]
pub struct Filed {
    pub study_uid: String,
    pub series_uid: String,
    pub instances: usize,
    pub bytes: u64,
    /// The instances the archive stored with a warning status (counted as filed: it keeps
    /// them, but not necessarily as sent).
    pub warnings: Vec<Warned>,
}

/// An instance stored with a warning.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Warned {
    pub sop_instance_uid: String,
    pub status: u16,
}

/// What a C-STORE warning status says (PS3.4 B.2.3, PS3.7 C); None: not a warning.
pub fn warning(status: u16) -> Option<&'static str> {
    Some(match status {
        0xB000 => "coercion of data elements",
        0xB007 => "data set does not match SOP class",
        0xB006 => "elements discarded",
        0x0001 => "a warning",
        0x0107 => "attribute list error",
        0x0116 => "attribute value out of range",
        0xB001..=0xB005 | 0xB008..=0xBFFF => "a warning of the archive's own",
        _ => return None,
    })
}

/// Files the DICOM `files` (one series of one study) into the archive `to`.
pub fn file_series(to: &DimseAddr, local: &Local, files: &[PathBuf], quiet: bool) -> Result<Filed> {
    if files.is_empty() {
        bail!("no DICOM file to file into {to}");
    }
    let all = files
        .iter()
        .map(|f| instance(f))
        .collect::<Result<Vec<_>>>()?;
    let (study, series) =
        crate::pacs::one_series(all.iter().map(|i| (&i.file, &i.study, &i.series)))?;
    // One presentation context per (class, transfer syntax) held: the files go as they are.
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for i in &all {
        if !contexts.iter().any(|(c, t)| *c == i.class && t[0] == i.ts) {
            contexts.push((i.class.clone(), vec![i.ts.clone()]));
        }
    }
    if contexts.len() > 127 {
        bail!(
            "{} kinds of instance (class and transfer syntax): at most 127 go on one association",
            contexts.len()
        );
    }
    let (mut a, watch) = associate(to, local, &contexts)?;
    let mut inbox = Inbox::default();
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    let mut bytes = 0u64;
    let result = (|| -> Result<()> {
        for (k, i) in all.iter().enumerate() {
            let pc = a.presentation_contexts().iter().find(|p| {
                p.reason == PresentationContextResultReason::Acceptance
                    && p.abstract_syntax == i.class
                    && p.transfer_syntax.trim_end_matches('\0') == i.ts
            });
            let Some(pc) = pc.map(|p| p.id) else {
                failed.push(format!(
                    "{} (SOP Instance UID {}): the archive accepts no SOP class {} in transfer \
                     syntax {}",
                    i.file.display(),
                    i.sop,
                    i.class,
                    i.ts
                ));
                continue;
            };
            let file = crate::image::read_file(&i.file)?;
            let data = data_set(&i.file, &file)?;
            let id = (k % 0xFFFF) as u16 + 1;
            // The exchange's deadline from the request's first byte to its answer's last.
            let deadline = watch.renew();
            let sent = command::send(
                &mut a,
                pc,
                &command::store_rq(&i.class, &i.sop, id),
                Some(data),
            );
            watch.passed(to, &format!("the archive to take {}", i.file.display()))?;
            sent.map_err(|e| anyhow!("{to}: sending {}: {e:#}", i.file.display()))?;
            bytes += file.len() as u64;
            inbox.set_deadline(Some(deadline));
            let got = inbox.receive(&mut a, 0);
            watch.passed(to, &format!("the C-STORE answer for {}", i.file.display()))?;
            let m = match got {
                Ok(Incoming::Message(m)) if m.field() == command::C_STORE_RSP => m,
                Ok(Incoming::Message(m)) => bail!("{to}: answered C-STORE with {:04X}H", m.field()),
                Ok(_) => bail!("{to}: the archive ended the association while storing"),
                Err(e) => bail!("{to}: waiting for the C-STORE answer: {e:#}"),
            };
            // An answer to another request than ours: its status says nothing of this one.
            let answers = command::ushort(&m.command, tags::MESSAGE_ID_BEING_RESPONDED_TO);
            if answers != Some(id) {
                bail!(
                    "{to}: the C-STORE answer for {} (message {id}) answers {}",
                    i.sop,
                    answers.map_or("no message".into(), |n| format!("message {n}"))
                );
            }
            // Optional in the answer (U(=)); when given, the instance sent.
            if let Some(u) = command::text(&m.command, tags::AFFECTED_SOP_INSTANCE_UID)
                .filter(|u| !u.is_empty() && *u != i.sop)
            {
                bail!(
                    "{to}: the C-STORE answer for {} (message {id}) names instance {u:?}",
                    i.sop
                );
            }
            match m.status() {
                Some(0) => {
                    if !quiet {
                        eprintln!(
                            "filed {}/{}: {} into {to}",
                            k + 1,
                            all.len(),
                            i.file.display()
                        );
                    }
                }
                // Stored, as the archive saw fit: said whatever --quiet, and counted.
                Some(s) if warning(s).is_some() => {
                    eprintln!(
                        "filed {}/{}: {} into {to} with warning {s:04X}H ({}): SOP Instance \
                         UID {}",
                        k + 1,
                        all.len(),
                        i.file.display(),
                        warning(s).unwrap_or_default(),
                        i.sop
                    );
                    warnings.push(Warned {
                        sop_instance_uid: i.sop.clone(),
                        status: s,
                    });
                }
                s => failed.push(format!(
                    "{} (SOP Instance UID {}): status {}",
                    i.file.display(),
                    i.sop,
                    s.map_or("none".into(), |s| format!("{s:04X}H"))
                )),
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            // Bounded as an exchange: an archive trickling its A-RELEASE-RP is cut.
            watch.renew();
            let _ = a.release();
        }
        Err(e) => {
            let _ = a.abort();
            return Err(e.context(format!(
                "nothing more filed into {to} (a re-run sends the same instances, which the \
                 archive holds once)"
            )));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} instances not filed into {to} (a re-run sends them again, and what the \
             archive holds is not duplicated): {}",
            failed.len(),
            all.len(),
            failed.join("; ")
        );
    }
    Ok(Filed {
        study_uid: study,
        series_uid: series,
        instances: all.len(),
        bytes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::slice;
    use super::*;
    use dicom_core::header::Header;
    use dicom_ul::ServerAssociationOptions;
    use std::net::TcpListener;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

    /// An archive of its own on 127.0.0.1 for one association: the k-th C-STORE (from 0),
    /// message `id` of instance `sop`, is answered with `answer(k, id, sop)`: the message id
    /// and SOP Instance UID it names (None: the answer leaves it out, as it may), and a
    /// status.
    fn archive(
        answer: impl Fn(usize, u16, &str) -> (u16, Option<String>, u16) + Send + 'static,
    ) -> (DimseAddr, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut a = ServerAssociationOptions::new()
                .accept_any()
                .ae_title("ARCHIVE")
                .with_abstract_syntax(CT)
                .with_transfer_syntax("1.2.840.10008.1.2.1")
                .read_timeout(Duration::from_secs(10))
                .establish(s)
                .unwrap();
            let mut inbox = Inbox::default();
            for k in 0.. {
                match inbox.receive(&mut a, 1 << 20) {
                    Ok(Incoming::Message(m)) => {
                        let sop = command::text(&m.command, tags::AFFECTED_SOP_INSTANCE_UID)
                            .unwrap_or_default();
                        let (id, named, status) = answer(k, m.id(), &sop);
                        let rsp =
                            command::store_rsp(CT, named.as_deref().unwrap_or(""), id, status);
                        let rsp = match named {
                            Some(_) => rsp,
                            None => dicom_object::InMemDicomObject::command_from_element_iter(
                                rsp.into_iter().filter(|e| {
                                    ![tags::AFFECTED_SOP_INSTANCE_UID, tags::COMMAND_GROUP_LENGTH]
                                        .contains(&e.tag())
                                }),
                            ),
                        };
                        if command::send(&mut a, m.pc, &rsp, None).is_err() {
                            return;
                        }
                    }
                    Ok(Incoming::Release) => {
                        let _ = a.send(&dicom_ul::Pdu::ReleaseRP);
                        return;
                    }
                    _ => return,
                }
            }
        });
        let to = DimseAddr {
            aet: "ARCHIVE".into(),
            host: "127.0.0.1".into(),
            port,
        };
        (to, h)
    }

    /// `n` slices of one series in `dir`, by SOP Instance UID order.
    fn series(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|k| {
                let p = dir.join(format!("{k}.dcm"));
                slice(
                    &p,
                    "1.2.826.0.1.3680043.8.498.2",
                    &format!("1.2.826.0.1.3680043.8.498.3.{k}"),
                    k as u16,
                );
                p
            })
            .collect()
    }

    fn local() -> Local {
        Local {
            aet: "PPDENOISE".into(),
            timeout: Duration::from_secs(10),
            exchange: Duration::from_secs(60),
        }
    }

    /// Warning statuses (B000H coerced, B007H not matching its class, B006H elements
    /// discarded, 0001H, 0107H attribute list error, 0116H value out of range) mean the
    /// archive stored the instance: counted as filed and each reported with its status; a
    /// failure status among them is still an error. An answer may leave out the instance's
    /// UID (every other one here does): it answers its message all the same.
    #[test]
    fn warning_statuses_are_filed_and_reported_failures_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let files = series(d.path(), 7);
        let statuses = [0x0000, 0xB000, 0xB007, 0xB006, 0x0001, 0x0107, 0x0116];
        let (to, h) =
            archive(move |k, id, sop| (id, (k % 2 == 1).then(|| sop.to_string()), statuses[k]));
        let f = file_series(&to, &local(), &files, true).unwrap();
        h.join().unwrap();
        assert_eq!(f.instances, 7);
        let warned: Vec<(String, u16)> = f
            .warnings
            .iter()
            .map(|w| (w.sop_instance_uid.clone(), w.status))
            .collect();
        assert_eq!(
            warned,
            (1..7)
                .map(|k| (format!("1.2.826.0.1.3680043.8.498.3.{k}"), statuses[k]))
                .collect::<Vec<_>>()
        );

        let statuses = [0xB000, 0xA700, 0x0000];
        let (to, h) = archive(move |k, id, sop| (id, Some(sop.to_string()), statuses[k]));
        let e = format!(
            "{:#}",
            file_series(&to, &local(), &files[..3], true).unwrap_err()
        );
        h.join().unwrap();
        assert!(
            e.contains("1 of 3 instances not filed")
                && e.contains("1.2.826.0.1.3680043.8.498.3.1")
                && e.contains("A700H"),
            "{e}"
        );
    }

    /// A C-STORE answer to another message, or naming another instance, answers nothing we
    /// sent: an error naming the archive, nothing more sent.
    #[test]
    fn an_answer_to_another_request_is_an_error_naming_the_archive() {
        let d = tempfile::tempdir().unwrap();
        let files = series(d.path(), 3);
        let (to, h) = archive(|k, id, sop| {
            let id = if k == 1 { id + 7 } else { id };
            (id, Some(sop.to_string()), 0)
        });
        let e = format!(
            "{:#}",
            file_series(&to, &local(), &files, true).unwrap_err()
        );
        h.join().unwrap();
        assert!(
            e.contains(&to.to_string())
                && e.contains("1.2.826.0.1.3680043.8.498.3.1")
                && e.contains("answers message 9"),
            "{e}"
        );

        let (to, h) = archive(|k, id, sop| {
            let sop = if k == 0 { "1.2.3.4" } else { sop };
            (id, Some(sop.to_string()), 0)
        });
        let e = format!(
            "{:#}",
            file_series(&to, &local(), &files, true).unwrap_err()
        );
        h.join().unwrap();
        assert!(
            e.contains(&to.to_string()) && e.contains("names instance \"1.2.3.4\""),
            "{e}"
        );
    }
}
