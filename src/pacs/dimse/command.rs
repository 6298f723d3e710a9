//! DIMSE messages on a dicom-ul association: the command sets (implicit VR little endian, as
//! PS3.7 fixes them) of C-ECHO, C-STORE, C-FIND and C-MOVE, and one message sent or received
//! whole, its command and data set carried as P-DATA fragments. A data set larger than the
//! receiver's bound is read to its end and dropped (counted), so that the association stays
//! in step and the peer gets a failure status rather than a cut connection.

use std::collections::VecDeque;
use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::association::{CloseSocket, SyncAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_FIND_RSP: u16 = 0x8020;
pub const C_MOVE_RQ: u16 = 0x0021;
pub const C_MOVE_RSP: u16 = 0x8021;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
const NO_DATA_SET: u16 = 0x0101;

/// Statuses (PS3.7 annex C).
pub const SUCCESS: u16 = 0x0000;
pub const PENDING: u16 = 0xFF00;
pub const PENDING_WARNING: u16 = 0xFF01;
/// Refused: out of resources (a bound passed).
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: the data set does not match the SOP class (not an image, UIDs that disagree).
pub const DATA_SET_MISMATCH: u16 = 0xA900;
/// Error: cannot understand (the data set does not parse).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Refused: SOP class not supported.
pub const CLASS_NOT_SUPPORTED: u16 = 0x0122;

fn implicit_le() -> dicom_transfer_syntax_registry::TransferSyntax {
    dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()
}

/// A command set's bytes.
pub fn encode(cmd: &InMemDicomObject) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    cmd.write_dataset_with_ts(&mut out, &implicit_le())
        .map_err(|e| anyhow!("cannot encode a DIMSE command: {e}"))?;
    Ok(out)
}

/// A data set's bytes in transfer syntax `ts` (a C-FIND identifier).
pub fn encode_data(obj: &InMemDicomObject, ts: &str) -> Result<Vec<u8>> {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| anyhow!("transfer syntax {ts}: not known"))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| anyhow!("cannot encode a DIMSE data set: {e}"))?;
    Ok(out)
}

/// A data set read from `bytes` in transfer syntax `ts`.
pub fn decode_data(bytes: &[u8], ts: &str) -> Result<InMemDicomObject> {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| anyhow!("transfer syntax {ts}: not known"))?;
    // A peer's bytes: the parser sizes each value by its declared length and nests
    // sequences recursively, so the lengths and the nesting are walked first, as a file's.
    crate::image::dicom::check_bare_dataset(bytes, ts.uid())
        .map_err(|e| anyhow!("a malformed data set: {e}"))?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| anyhow!("{e}"))
}

fn decode(bytes: &[u8]) -> Result<InMemDicomObject> {
    // As [`decode_data`]: walked before it is parsed (commands are implicit VR LE).
    crate::image::dicom::check_bare_dataset(bytes, implicit_le().uid())
        .map_err(|e| anyhow!("not a DIMSE command set: {e}"))?;
    InMemDicomObject::read_dataset_with_ts(bytes, &implicit_le())
        .map_err(|e| anyhow!("not a DIMSE command set: {e}"))
}

/// A text attribute of `obj`, its padding trimmed; None when absent.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.element(tag).ok()?.to_str().ok()?;
    Some(v.trim_end_matches(['\0', ' ']).to_string())
}

/// An unsigned short of `obj`; None when absent.
pub fn ushort(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.element(tag).ok()?.to_int::<u16>().ok()
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

fn ui(tag: Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, dicom_value!(Str, v))
}

/// C-STORE-RQ of instance `sop` of class `class`.
pub fn store_rq(class: &str, sop: &str, id: u16) -> InMemDicomObject {
    InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, 0),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop),
    ])
}

/// C-STORE-RSP to message `id` with `status`.
pub fn store_rsp(class: &str, sop: &str, id: u16, status: u16) -> InMemDicomObject {
    InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop),
    ])
}

/// C-ECHO-RSP to message `id`.
pub fn echo_rsp(id: u16) -> InMemDicomObject {
    InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, super::VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, SUCCESS),
    ])
}

/// C-FIND-RQ in information model `class` (an identifier follows).
pub fn find_rq(class: &str, id: u16) -> InMemDicomObject {
    InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_FIND_RQ),
        us(tags::MESSAGE_ID, id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, 0),
    ])
}

/// C-MOVE-RQ in information model `class` to the AE `destination` (an identifier follows).
pub fn move_rq(class: &str, id: u16, destination: &str) -> InMemDicomObject {
    InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_MOVE_RQ),
        us(tags::MESSAGE_ID, id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, 0),
        DataElement::new(
            tags::MOVE_DESTINATION,
            VR::AE,
            dicom_value!(Str, destination),
        ),
    ])
}

/// One message received.
pub struct Message {
    /// Its presentation context.
    pub pc: u8,
    pub command: InMemDicomObject,
    /// Its data set, when it has one and it fit the bound.
    pub data: Option<Vec<u8>>,
    /// The data set's length, also when it was dropped for its size.
    pub data_len: u64,
}

impl Message {
    pub fn field(&self) -> u16 {
        ushort(&self.command, tags::COMMAND_FIELD).unwrap_or(0)
    }

    pub fn status(&self) -> Option<u16> {
        ushort(&self.command, tags::STATUS)
    }

    pub fn id(&self) -> u16 {
        ushort(&self.command, tags::MESSAGE_ID).unwrap_or(0)
    }

    /// Whether the data set was longer than the bound (and dropped).
    pub fn over(&self) -> bool {
        self.data.is_none() && self.data_len > 0
    }
}

/// What the peer sent next.
pub enum Incoming {
    Message(Message),
    /// A-RELEASE-RQ (answered by the caller).
    Release,
    /// A-ABORT, or the connection closed.
    Aborted,
}

/// The P-DATA values received and not yet used: a PDU may carry the end of one message and
/// the start of the next.
#[derive(Default)]
pub struct Inbox {
    pending: VecDeque<PDataValue>,
    /// When set, no new PDU is awaited past it: an exchange's overall deadline, checked
    /// between PDUs. A peer trickling one PDU's bytes inside every read timeout is cut by
    /// the association's watchdog (super::watch), which shuts the socket at the deadline.
    deadline: Option<std::time::Instant>,
}

impl Inbox {
    /// An inbox that awaits nothing past `deadline`.
    pub fn until(deadline: std::time::Instant) -> Inbox {
        Inbox {
            deadline: Some(deadline),
            ..Inbox::default()
        }
    }

    /// Sets (or, None, lifts) the deadline: a new exchange on the same association.
    pub fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    /// The next message whole, its data set kept when at most `max_data` bytes.
    pub fn receive<S, A>(&mut self, a: &mut A, max_data: u64) -> Result<Incoming>
    where
        S: Read + Write + CloseSocket,
        A: SyncAssociation<S>,
    {
        let mut cmd: Vec<u8> = Vec::new();
        let mut command: Option<(u8, InMemDicomObject)> = None;
        let mut data: Vec<u8> = Vec::new();
        let mut data_len = 0u64;
        loop {
            let Some(v) = self.pending.pop_front() else {
                if self
                    .deadline
                    .is_some_and(|d| std::time::Instant::now() >= d)
                {
                    bail!("the exchange's deadline (--archive-max-secs) passed before its answer came whole");
                }
                match SyncAssociation::receive(a) {
                    Ok(Pdu::PData { data }) => self.pending.extend(data),
                    Ok(Pdu::ReleaseRQ) => return Ok(Incoming::Release),
                    Ok(Pdu::AbortRQ { .. }) => return Ok(Incoming::Aborted),
                    Ok(other) => bail!("unexpected {}", other.short_description()),
                    Err(dicom_ul::association::Error::ReceivePdu { .. })
                        if command.is_none() && cmd.is_empty() =>
                    {
                        return Ok(Incoming::Aborted)
                    }
                    Err(e) => return Err(anyhow!("{e}")),
                }
                continue;
            };
            match (v.value_type, &command) {
                (PDataValueType::Command, None) => {
                    if cmd.len() + v.data.len() > 1 << 16 {
                        bail!("a command set of more than 64 KiB");
                    }
                    cmd.extend_from_slice(&v.data);
                    if v.is_last {
                        let c = decode(&cmd)?;
                        let has_data = ushort(&c, tags::COMMAND_DATA_SET_TYPE)
                            .is_some_and(|t| t != NO_DATA_SET);
                        if !has_data {
                            return Ok(Incoming::Message(Message {
                                pc: v.presentation_context_id,
                                command: c,
                                data: None,
                                data_len: 0,
                            }));
                        }
                        command = Some((v.presentation_context_id, c));
                    }
                }
                (PDataValueType::Data, Some((pc, _))) => {
                    if v.presentation_context_id != *pc {
                        bail!("a data set on another presentation context than its command");
                    }
                    data_len += v.data.len() as u64;
                    if data_len <= max_data {
                        data.extend_from_slice(&v.data);
                    } else {
                        // Dropped, and the rest of it read and dropped too.
                        data = Vec::new();
                    }
                    if v.is_last {
                        let (pc, c) = command.take().expect("matched");
                        let kept = data_len <= max_data;
                        return Ok(Incoming::Message(Message {
                            pc,
                            command: c,
                            data: kept.then_some(data),
                            data_len,
                        }));
                    }
                }
                (PDataValueType::Data, None) => bail!("a data set before its command"),
                (PDataValueType::Command, Some(_)) => bail!("a command before the data set"),
            }
        }
    }
}

/// Sends one message: the command, then its data set (split into PDUs the peer takes).
pub fn send<S, A>(a: &mut A, pc: u8, cmd: &InMemDicomObject, data: Option<&[u8]>) -> Result<()>
where
    S: Read + Write + CloseSocket,
    A: SyncAssociation<S>,
{
    let cmd = encode(cmd)?;
    SyncAssociation::send(
        a,
        &Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: cmd,
            }],
        },
    )
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(d) = data {
        let mut w = a.send_pdata(pc);
        w.write_all(d).context("sending a data set")?;
        w.finish().context("sending a data set")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_sets_round_trip_in_implicit_vr_le() {
        let c = store_rq("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 7);
        let b = encode(&c).unwrap();
        // The group length first, as PS3.7 wants it.
        assert_eq!(&b[..4], &[0, 0, 0, 0]);
        let d = decode(&b).unwrap();
        assert_eq!(ushort(&d, tags::COMMAND_FIELD), Some(C_STORE_RQ));
        assert_eq!(ushort(&d, tags::MESSAGE_ID), Some(7));
        assert_eq!(
            text(&d, tags::AFFECTED_SOP_INSTANCE_UID).as_deref(),
            Some("1.2.3.4")
        );
        let r = decode(&encode(&store_rsp("1.2", "1.2.3", 7, OUT_OF_RESOURCES)).unwrap()).unwrap();
        assert_eq!(ushort(&r, tags::STATUS), Some(OUT_OF_RESOURCES));
        assert_eq!(ushort(&r, tags::COMMAND_DATA_SET_TYPE), Some(NO_DATA_SET));
        let m = decode(&encode(&move_rq("1.2", 3, "PPDENOISE")).unwrap()).unwrap();
        assert_eq!(
            text(&m, tags::MOVE_DESTINATION).as_deref(),
            Some("PPDENOISE")
        );
        // The group length's value: the bytes after its own element (12 bytes).
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize,
            b.len() - 12
        );
    }

    /// A peer's hostile bytes are walked before the parser sizes anything from them: a
    /// 30-byte command declaring a 4 GiB value, a data set of sequences nested 100 deep,
    /// and a deflated data set are refused, not allocated, recursed or inflated.
    #[test]
    fn hostile_command_and_data_sets_are_refused_before_parsing() {
        let mut huge = encode(&store_rq("1.2", "1.2.3", 1)).unwrap();
        // (0000,0902) Error Comment, implicit VR: tag, then a 32-bit length of ~4 GiB.
        huge.extend([0, 0, 2, 9, 0xF0, 0xFF, 0xFF, 0xFF, b'x', b'y']);
        let e = decode(&huge).unwrap_err().to_string();
        assert!(
            e.contains("not a DIMSE command set") && e.contains("declares 4294967280 bytes"),
            "{e}"
        );
        let e = decode_data(&huge, "1.2.840.10008.1.2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a malformed data set") && e.contains("declares"),
            "{e}"
        );
        // (0008,1115) SQ of undefined length, an item of undefined length, 100 times.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend([
                0x08, 0, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            deep.extend([0xFE, 0xFF, 0, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = decode_data(&deep, "1.2.840.10008.1.2.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested more than"), "{e}");
        let e = decode_data(b"\x78\x9c", "1.2.840.10008.1.2.1.99")
            .unwrap_err()
            .to_string();
        assert!(e.contains("deflated"), "{e}");
    }
}
