//! A DICOM file's data set, checked before any parser reads it: the transfer syntax, every
//! element length ([`super::scan`]'s walk), a deflated data set inflated within a bound;
//! then parsed by dicom-rs. Apart because it is the one way in for every reader here (and
//! the check of a data set that came over DIMSE).

use std::io::Cursor;
use std::path::Path;

use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::attributes::valid_uid;
use super::scan::{self, Encoding, ScanError};
use super::{corrupt, unsupported, TRANSCODE};
use crate::image::{ImageError, MAX_PIXELS};

/// Explicit VR big endian (retired from the standard, so its constant is deprecated).
pub(super) const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// The most bytes a deflated data set may inflate to: one frame of the largest image read,
/// at 16 bits, and 64 MiB of other attributes. A "deflate bomb" stops there.
const MAX_INFLATED: u64 = 2 * MAX_PIXELS as u64 + (64 << 20);

/// How the data set of a file in transfer syntax `ts_uid` is encoded, or why it is not read.
fn encoding(ts_uid: &str) -> Result<Encoding, String> {
    Ok(match ts_uid {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => Encoding {
            explicit: false,
            big_endian: false,
        },
        EXPLICIT_VR_BIG_ENDIAN => Encoding {
            explicit: true,
            big_endian: true,
        },
        uids::JPIP_REFERENCED
        | uids::JPIP_REFERENCED_DEFLATE
        | uids::JPIPHTJ2K_REFERENCED
        | uids::JPIPHTJ2K_REFERENCED_DEFLATE => {
            return Err(
                "its pixel data is referenced on a JPIP server, not held in the file \
                        (fetch it as a whole file; see docs/formats.md)"
                    .into(),
            )
        }
        // Its decoder inflates each frame without a bound, so hostile data could take any
        // amount of memory; it is meant for segmentations, not grayscale images.
        uids::DEFLATED_IMAGE_FRAME_COMPRESSION => {
            return Err(format!(
                "its frames would be inflated without a bound, so this build does not read \
                 it; {TRANSCODE}"
            ))
        }
        _ => Encoding::EXPLICIT_LE,
    })
}

/// Checks a bare data set (no preamble or file meta: what a DIMSE message carries) in
/// transfer syntax `ts_uid` before any parser reads it: every defined length within the
/// bytes, sequences nested at most as deep as files may be (the walk [`parse`] makes of a
/// file). A deflated data set is refused here (its inflation is bounded only for files).
pub fn check_bare_dataset(bytes: &[u8], ts_uid: &str) -> Result<(), String> {
    let ts_uid = ts_uid.trim_end_matches(['\0', ' ']);
    if ts_uid == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        return Err("a deflated data set (not taken over the network)".into());
    }
    let enc = encoding(ts_uid)?;
    scan::dataset(bytes, 0, enc).map_err(|e| match e {
        ScanError::Corrupt(d) | ScanError::Unsupported(d) => d,
    })
}

/// The deflated data set after `start`, inflated (at most `max` bytes).
fn inflate(bytes: &[u8], start: usize, path: &Path, max: u64) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(&bytes[start..])
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(path, format!("the deflated data set does not inflate: {e}")))?;
    if out.len() as u64 > max {
        return Err(unsupported(
            path,
            format!("the deflated data set inflates to more than {max} bytes"),
        ));
    }
    Ok(out)
}

/// Checks every element length and the transfer syntax, then parses the file (up to its
/// pixel data when `with_pixels` is false). `with_pixels`: the pixel data must be decodable
/// too.
pub(in crate::image) fn parse(
    bytes: &[u8],
    path: &Path,
    with_pixels: bool,
) -> Result<DefaultDicomObject, ImageError> {
    let scan_err = |e| match e {
        ScanError::Corrupt(d) => corrupt(path, d),
        ScanError::Unsupported(d) => unsupported(path, d),
    };
    let (ts_uid, start) = scan::meta(bytes).map_err(scan_err)?;
    // Only digits and dots: the registry and the parser trim other padding (a tab) that the
    // walk would not, and so read the file in another encoding than the walk checked.
    if !valid_uid(&ts_uid) {
        return Err(corrupt(
            path,
            format!("the transfer syntax UID {ts_uid:?} is not a UID"),
        ));
    }
    let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
        unsupported(
            path,
            format!("unsupported transfer syntax {ts_uid} (not one DICOM defines); {TRANSCODE}"),
        )
    })?;
    let enc = encoding(&ts_uid).map_err(|why| {
        unsupported(
            path,
            format!(
                "unsupported transfer syntax {} ({ts_uid}): {why}",
                ts.name()
            ),
        )
    })?;
    if with_pixels && !ts.can_decode_all() {
        return Err(unsupported(
            path,
            format!(
                "unsupported transfer syntax {} ({ts_uid}): this build has no decoder for it; \
                 {TRANSCODE}",
                ts.name()
            ),
        ));
    }
    if ts_uid == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        let inflated = inflate(bytes, start, path, MAX_INFLATED)?;
        scan::dataset(&inflated, 0, enc).map_err(scan_err)?;
    } else {
        scan::dataset(bytes, start, enc).map_err(scan_err)?;
    }
    let mut opts = OpenFileOptions::new().read_preamble(ReadPreamble::Always);
    if !with_pixels {
        opts = opts.read_until(tags::PIXEL_DATA);
    }
    opts.from_reader(Cursor::new(bytes))
        .map_err(|e| corrupt(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deflated_data_set_inflates_up_to_its_bound_and_no_further() {
        use std::io::Write;
        let path = Path::new("bomb.dcm");
        let deflate = |data: &[u8]| {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut bytes = vec![7u8; 10];
        bytes.extend(deflate(&vec![0u8; 1 << 20]));
        assert_eq!(inflate(&bytes, 10, path, 1 << 20).unwrap().len(), 1 << 20);
        let e = inflate(&bytes, 10, path, (1 << 20) - 1).unwrap_err();
        assert!(matches!(e, ImageError::Unsupported { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("inflates to more than 1048575 bytes"),
            "{e}"
        );
        let e = inflate(&[0xFF; 64], 0, path, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("does not inflate"), "{e}");
    }
}
