//! A walk over every element header of a DICOM file before the parser reads it.
//!
//! The DICOM parser reserves and zero-fills each value's declared length before reading it,
//! so a 200-byte file declaring a 4 GiB element would cost 4 GiB. This walk checks that
//! every defined length fits in the bytes that follow, descending into sequences and items
//! (so nested elements are checked too) and skipping the fragments of encapsulated pixel
//! data; it allocates nothing. It also reads the transfer syntax from the file meta group.
//! A deflated data set is walked after the caller inflates it (the walk needs the bytes).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Undefined length (sequences, items, encapsulated pixel data).
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// VRs whose explicit encoding has a 16-bit length; every other one (the parser reads an
/// unknown VR as UN) has 2 reserved bytes and a 32-bit length.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Deepest nesting of sequences and items taken: the parser builds nested sequences
/// recursively, so a deep one would overflow its stack.
const MAX_DEPTH: usize = 32;

/// What is wrong, for the caller to put in an error naming the file.
#[derive(Debug, PartialEq)]
pub(super) enum ScanError {
    /// Malformed: a value that does not fit, a header cut short.
    Corrupt(String),
    /// Well formed, but a structure the walk (and so the reader) does not take.
    Unsupported(String),
}

/// One element header.
struct Header {
    tag: Tag,
    vr: [u8; 2],
    len: u32,
}

/// How a data set is encoded: explicit or implicit VR, little or big endian (the retired
/// explicit VR big endian; the file meta group is always explicit little endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Encoding {
    pub explicit: bool,
    pub big_endian: bool,
}

impl Encoding {
    pub const EXPLICIT_LE: Encoding = Encoding {
        explicit: true,
        big_endian: false,
    };

    fn u16_at(self, b: &[u8], i: usize) -> u16 {
        let v = [b[i], b[i + 1]];
        if self.big_endian {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    fn u32_at(self, b: &[u8], i: usize) -> u32 {
        let v = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    Encoding::EXPLICIT_LE.u16_at(b, i)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    Encoding::EXPLICIT_LE.u32_at(b, i)
}

/// Reads the element header at `pos`; returns it and its size.
fn header(b: &[u8], pos: usize, enc: Encoding) -> Result<(Header, usize), ScanError> {
    let cut = || ScanError::Corrupt(format!("element header cut short at byte {pos}"));
    if b.len() < pos + 8 {
        return Err(cut());
    }
    let tag = Tag(enc.u16_at(b, pos), enc.u16_at(b, pos + 2));
    // Items and delimiters have no VR, in either encoding.
    if !enc.explicit || tag.0 == 0xFFFE {
        let len = enc.u32_at(b, pos + 4);
        return Ok((
            Header {
                tag,
                vr: *b"  ",
                len,
            },
            8,
        ));
    }
    let vr = [b[pos + 4], b[pos + 5]];
    if !vr.iter().all(u8::is_ascii_uppercase) {
        return Err(ScanError::Corrupt(format!(
            "element {tag} at byte {pos} has no valid value representation"
        )));
    }
    if !SHORT_VRS.contains(&&vr) {
        if b.len() < pos + 12 {
            return Err(cut());
        }
        Ok((
            Header {
                tag,
                vr,
                len: enc.u32_at(b, pos + 8),
            },
            12,
        ))
    } else {
        let len = u32::from(enc.u16_at(b, pos + 6));
        Ok((Header { tag, vr, len }, 8))
    }
}

/// Checks that `len` bytes follow `pos`.
fn fits(b: &[u8], pos: usize, h: &Header) -> Result<(), ScanError> {
    let left = b.len() - pos;
    if h.len as usize > left {
        return Err(ScanError::Corrupt(format!(
            "element {} declares {} bytes but only {left} follow (truncated or crafted)",
            h.tag, h.len
        )));
    }
    Ok(())
}

/// Walks the file meta group (explicit VR little endian, right after `DICM` at byte 128);
/// returns the transfer syntax UID and where the data set starts.
pub(super) fn meta(b: &[u8]) -> Result<(String, usize), ScanError> {
    let mut pos = 132;
    let mut ts = None;
    // The parser ends the group where (0002,0000) says, so the walk must end there too.
    let (first, size) = header(b, pos, Encoding::EXPLICIT_LE)?;
    if first.tag != Tag(0x0002, 0x0000) || first.len != 4 || b.len() < pos + size + 4 {
        return Err(ScanError::Corrupt(
            "the file meta group does not start with its group length".into(),
        ));
    }
    let group_len = u32_at(b, pos + size) as usize;
    pos += size + 4;
    let group_start = pos;
    while b.len() >= pos + 2 && u16_at(b, pos) == 0x0002 {
        let (h, size) = header(b, pos, Encoding::EXPLICIT_LE)?;
        pos += size;
        if h.len == UNDEFINED {
            return Err(ScanError::Corrupt(format!(
                "file meta element {} has an undefined length",
                h.tag
            )));
        }
        fits(b, pos, &h)?;
        if h.tag == Tag(0x0002, 0x0010) {
            let raw = &b[pos..pos + h.len as usize];
            let s = String::from_utf8_lossy(raw);
            ts = Some(s.trim_end_matches(['\0', ' ']).to_string());
        }
        pos += h.len as usize;
    }
    if pos - group_start != group_len {
        return Err(ScanError::Corrupt(format!(
            "the file meta group says it has {group_len} bytes but holds {}",
            pos - group_start
        )));
    }
    let ts = ts
        .ok_or_else(|| ScanError::Corrupt("the file meta group names no transfer syntax".into()))?;
    Ok((ts, pos))
}

/// Walks the data set from `start` to the end of `b`, encoded as `enc` says.
pub(super) fn dataset(b: &[u8], start: usize, enc: Encoding) -> Result<(), ScanError> {
    let explicit = enc.explicit;
    let mut pos = start;
    // Inside encapsulated pixel data, items hold compressed bytes, not elements.
    let mut in_pixels = false;
    // The open sequences and items: where each ends (None: at its delimiter).
    let mut open: Vec<Option<usize>> = Vec::new();
    let nest = |open: &mut Vec<Option<usize>>, end: Option<usize>| {
        if open.len() == MAX_DEPTH {
            return Err(ScanError::Unsupported(format!(
                "sequences nested more than {MAX_DEPTH} deep"
            )));
        }
        open.push(end);
        Ok(())
    };
    while pos < b.len() {
        while let Some(&Some(end)) = open.last() {
            if pos < end {
                break;
            }
            open.pop();
        }
        let (h, size) = header(b, pos, enc)?;
        pos += size;
        if h.tag.0 == 0xFFFE {
            match h.tag.1 {
                // An item: descend into it, unless it is a pixel data fragment.
                0xE000 if h.len != UNDEFINED => {
                    fits(b, pos, &h)?;
                    if in_pixels {
                        pos += h.len as usize;
                    } else {
                        nest(&mut open, Some(pos + h.len as usize))?;
                    }
                }
                0xE000 if !in_pixels => nest(&mut open, None)?,
                0xE000 => {}
                0xE00D | 0xE0DD if !in_pixels => {
                    if open.pop().is_some_and(|end| end.is_some()) {
                        return Err(ScanError::Corrupt(format!(
                            "a delimiter at byte {} inside an item of defined length",
                            pos - size
                        )));
                    }
                }
                0xE0DD => in_pixels = false,
                _ => {
                    return Err(ScanError::Corrupt(format!(
                        "unknown item tag {} at byte {}",
                        h.tag,
                        pos - size
                    )))
                }
            }
            continue;
        }
        if h.tag == Tag(0x7FE0, 0x0010) && explicit && &h.vr == b"SQ" {
            return Err(ScanError::Corrupt("pixel data given as a sequence".into()));
        }
        if h.len == UNDEFINED {
            if h.tag == Tag(0x7FE0, 0x0010) {
                // Its fragments are skipped up to its delimiter, which ends it: no level
                // is opened (one per encapsulated element used to stay open for good).
                in_pixels = true;
                continue;
            } else if explicit && &h.vr == b"UN" {
                // An implicit-VR sequence inside explicit data: legal but rare.
                return Err(ScanError::Unsupported(format!(
                    "element {} of unknown VR with undefined length",
                    h.tag
                )));
            }
            nest(&mut open, None)?;
            continue; // a sequence: its items follow
        }
        fits(b, pos, &h)?;
        let sequence = if explicit {
            &h.vr == b"SQ"
        } else {
            StandardDataDictionary
                .by_tag(h.tag)
                .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
        };
        if sequence {
            nest(&mut open, Some(pos + h.len as usize))?;
        } else {
            pos += h.len as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT: Encoding = Encoding::EXPLICIT_LE;
    const IMPLICIT: Encoding = Encoding {
        explicit: false,
        big_endian: false,
    };

    /// Preamble, DICM and a meta group naming `ts`.
    fn start(ts: &str) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let mut v = ts.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        // (0002,0000) UL: the group's length, then (0002,0010) UI.
        b.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        b.extend_from_slice(&(8 + v.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(v.len() as u16).to_le_bytes());
        b.extend_from_slice(&v);
        b
    }

    /// Regressions of an outside review: ways around the length checks.
    #[test]
    fn unknown_vrs_sequence_pixel_data_deep_nesting_and_a_wrong_group_length_are_refused() {
        let b = start("1.2.840.10008.1.2.1");
        let at = b.len();
        // An unknown VR is read as UN (32-bit length) by the parser: checked as such.
        let mut zz = b.clone();
        zz.extend_from_slice(&[
            0x08, 0x00, 0x10, 0x00, b'Z', b'Z', 4, 0, 0xF0, 0xFF, 0xFF, 0xFF,
        ]);
        assert!(matches!(
            dataset(&zz, at, EXPLICIT),
            Err(ScanError::Corrupt(_))
        ));
        // Pixel data typed SQ would make the parser read its items as data sets.
        let mut sq = b.clone();
        sq.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'S', b'Q', 0, 0]);
        sq.extend_from_slice(&UNDEFINED.to_le_bytes());
        assert!(
            matches!(dataset(&sq, at, EXPLICIT), Err(ScanError::Corrupt(d)) if d.contains("sequence"))
        );
        // Sequences nested deeper than MAX_DEPTH.
        let mut deep = b.clone();
        for _ in 0..MAX_DEPTH {
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            deep.extend_from_slice(&UNDEFINED.to_le_bytes());
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            deep.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        assert!(
            matches!(dataset(&deep, at, EXPLICIT), Err(ScanError::Unsupported(d)) if d.contains("nested"))
        );
        // A shallow nest with its delimiters is fine.
        let mut shallow = b.clone();
        shallow.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        shallow.extend_from_slice(&UNDEFINED.to_le_bytes());
        shallow.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        shallow.extend_from_slice(&UNDEFINED.to_le_bytes());
        shallow.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        shallow.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(dataset(&shallow, at, EXPLICIT), Ok(()));
        // A group length that is not what the group holds.
        let mut short = b.clone();
        short[140] = 4;
        assert!(matches!(meta(&short), Err(ScanError::Corrupt(d)) if d.contains("group says")));
        // No group length at all.
        let mut none = vec![0u8; 128];
        none.extend_from_slice(b"DICM");
        none.extend_from_slice(&b[144..]);
        assert!(meta(&none).is_err());
    }

    /// Many encapsulated pixel data elements (icon images in a sequence's items, then the
    /// image's own) are a valid file: each used to leave a nesting level open, so more than
    /// MAX_DEPTH of them were refused as "nested too deep".
    #[test]
    fn many_encapsulated_pixel_data_elements_are_not_nesting() {
        let encapsulated = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
            v.extend_from_slice(&UNDEFINED.to_le_bytes());
            v.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]); // empty offset table
            v.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
            v.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        };
        let mut b = start("1.2.840.10008.1.2.4.50");
        let at = b.len();
        // (0088,0200) Icon Image Sequence with MAX_DEPTH + 2 items, each an encapsulated icon.
        b.extend_from_slice(&[0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0]);
        b.extend_from_slice(&UNDEFINED.to_le_bytes());
        for _ in 0..MAX_DEPTH + 2 {
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            b.extend_from_slice(&UNDEFINED.to_le_bytes());
            encapsulated(&mut b);
            b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        }
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        encapsulated(&mut b);
        assert_eq!(dataset(&b, at, EXPLICIT), Ok(()));
    }

    /// Explicit VR big endian: tags and lengths are read big endian (a little-endian walk
    /// would see another tag and a length of 2^24 times more).
    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        const BIG: Encoding = Encoding {
            explicit: true,
            big_endian: true,
        };
        let mut b = start("1.2.840.10008.1.2.2");
        let (_, at) = meta(&b).unwrap();
        // (0010,0010) PN of 4 bytes, then (7FE0,0010) OW of 8 bytes.
        b.extend_from_slice(&[0x00, 0x10, 0x00, 0x10, b'P', b'N', 0, 4]);
        b.extend_from_slice(b"A^B ");
        b.extend_from_slice(&[0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 8]);
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(dataset(&b, at, BIG), Ok(()));
        assert!(dataset(&b, at, EXPLICIT).is_err());
        // One byte short: the declared 8 no longer fit.
        let e = dataset(&b[..b.len() - 1], at, BIG).unwrap_err();
        assert!(
            matches!(&e, ScanError::Corrupt(d) if d.contains("(7FE0,0010) declares 8 bytes")),
            "{e:?}"
        );
    }

    #[test]
    fn reads_the_transfer_syntax_and_refuses_lengths_past_the_end() {
        let mut b = start("1.2.840.10008.1.2.1");
        let (ts, at) = meta(&b).unwrap();
        assert_eq!((ts.as_str(), at), ("1.2.840.10008.1.2.1", b.len()));
        // (0010,0010) PN of 4 bytes: fine.
        b.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0]);
        b.extend_from_slice(b"A^B ");
        assert_eq!(dataset(&b, at, EXPLICIT), Ok(()));
        // (7FE0,0010) OW declaring 4 GiB - 2 bytes.
        let mut crafted = b.clone();
        crafted.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        crafted.extend_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
        crafted.extend_from_slice(&[0; 16]);
        let e = dataset(&crafted, at, EXPLICIT).unwrap_err();
        assert!(
            matches!(&e, ScanError::Corrupt(d) if d.contains("(7FE0,0010)") && d.contains("4294967294")),
            "{e:?}"
        );
        // The same inside a sequence item is found too.
        let mut nested = b.clone();
        nested.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        nested.extend_from_slice(&UNDEFINED.to_le_bytes());
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        nested.extend_from_slice(&UNDEFINED.to_le_bytes());
        nested.extend_from_slice(&[0x08, 0x00, 0x50, 0x11, b'U', b'T', 0, 0]);
        nested.extend_from_slice(&0x7000_0000u32.to_le_bytes());
        assert!(matches!(
            dataset(&nested, at, EXPLICIT),
            Err(ScanError::Corrupt(d)) if d.contains("(0008,1150)")
        ));
        // Implicit VR: a cut header.
        let mut cut = start("1.2.840.10008.1.2");
        let at = cut.len();
        cut.extend_from_slice(&[0x10, 0x00, 0x10]);
        assert!(
            matches!(dataset(&cut, at, IMPLICIT), Err(ScanError::Corrupt(d)) if d.contains("cut short"))
        );
        // No transfer syntax.
        let mut none = vec![0u8; 128];
        none.extend_from_slice(b"DICM");
        assert!(meta(&none).is_err());
    }
}
