//! DICOM (Part 10 files): grayscale frames in; out, a derived image like a template.
//!
//! **What is read.** A grayscale image of one frame, or of several where the caller takes
//! them ([`decode_frames`]): SamplesPerPixel 1, PhotometricInterpretation
//! MONOCHROME1 or MONOCHROME2, BitsAllocated 8 or 16, BitsStored 1 to BitsAllocated with
//! HighBit = BitsStored - 1, unsigned or signed (PixelRepresentation 0 or 1). Transfer
//! syntaxes: implicit and explicit VR little endian, explicit VR big endian, deflated
//! explicit VR little endian, RLE Lossless, JPEG (lossless, baseline, and 12-bit extended
//! through [`super::jpeg12`]), JPEG-LS and JPEG 2000 (docs/formats.md has the table).
//! A colour image (RGB, YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT) is read by
//! [`decode_colour`] and [`decode_picture`] only, and written by
//! [`DicomTemplate::encode_colour`]; PALETTE COLOR is refused everywhere.
//! Anything else (JPEG XL, video, JPIP) is refused with an error
//! naming the file and the problem, before pixel data is decoded; every element length is
//! checked against the file's size before the parser sees it.
//!
//! **The mapping to the model's scale.** With `b` = BitsStored and `M = 2^b - 1`, a stored
//! value `v` becomes `u = v` (unsigned) or `u = v + 2^(b-1)` (signed, so the stored range
//! `-2^(b-1) .. 2^(b-1) - 1` becomes `0 .. M`); MONOCHROME1 (white is 0) is inverted,
//! `u = M - u`, so that 0 is black for the model as for MONOCHROME2; the pixel is
//! `u * 255 / M` on the 0..255 scale. For `b = 16` unsigned this is exactly the 16-bit PNG
//! rule (divide by 257). Writing inverts the steps: `u = round(x * M / 255)` clamped to
//! `0 .. M`, MONOCHROME1 inverted back, the shift undone; a loaded image written back gives
//! the same stored values. This full-range mapping is what [`super::load`] gives; the
//! commands that denoise map through a value window in the image's own units instead
//! ([`super::load_windowed`], [`Intensity`], [`DicomTemplate::with_window`] and
//! [`super::window`]): the rescale slope and intercept take stored values to modality values
//! (Hounsfield units for a CT), a window of those maps onto 0..255, and what it clipped is
//! written back from the template unchanged. The display window (centre and width) is
//! neither applied nor changed.
//!
//! **What is written** (`--like input.dcm`): a copy of the template's data set (patient,
//! study, equipment, window, rescale) with its pixel layout (Rows and Columns, which must
//! equal the image's, BitsAllocated, BitsStored, HighBit, PixelRepresentation,
//! PhotometricInterpretation) and these changes: a new SOP Instance UID (`2.25.` + a random
//! UUID); ImageType `DERIVED\SECONDARY` followed by the template's own values from the third
//! on; a Derivation Description saying what ppdenoise did; a Source Image Sequence naming the
//! template's SOP instance; the Smallest/Largest Image Pixel Value and extended offset table
//! dropped (no longer true); pixel values rounded and clamped to the stored range; the
//! derived series' attributes of [`super::derived`] (series number, dates, equipment,
//! derivation code, the private-tag and overlay policies); explicit VR little endian, or
//! JPEG-LS or JPEG 2000 lossless ([`compress`]). The template's series is kept
//! unless [`DicomTemplate::in_series`] names a derived one, as the command line always does
//! (a new Series Instance UID per run, one for all the slices of a study).
//!
//! **Where each job is** (one file each in this folder): `attributes.rs`, the checked layout,
//! attributes and UIDs; `intensity.rs`, stored values to the 0..255 scale and to the image's
//! units; `parse.rs`, the file checked, then parsed (`scan.rs` walks its element headers);
//! `pixels.rs`, decoding (`frames.rs` takes each frame's bytes once); `codestream.rs`, a
//! compressed frame's own header checked against the attributes; `write.rs`, the template and
//! the derived file (`compress.rs`, its lossless encoders).

mod attributes;
mod codestream;
mod compress;
mod frames;
mod intensity;
mod parse;
mod pixels;
mod scan;
mod write;

#[cfg(test)]
mod stream_tests;

use std::path::Path;

use super::{Format, ImageError};

pub use attributes::{new_uid, valid_uid};
pub use intensity::Intensity;
pub use parse::check_bare_dataset;
pub(super) use parse::parse;
pub use pixels::decode_colour;
pub(super) use pixels::{decode, decode_all, decode_frames, decode_picture, is_colour};
pub use write::{DicomTemplate, SeriesFacts};

// The errors and refusal words every job below uses: each names the file and the format.
fn unsupported(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Unsupported {
        path: path.to_path_buf(),
        format: Format::Dicom,
        detail: detail.into(),
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Corrupt {
        path: path.to_path_buf(),
        format: Format::Dicom,
        detail: detail.into(),
    }
}

/// The commands that transcode a file to a syntax this build reads (docs/formats.md).
const TRANSCODE: &str = "transcode it to explicit VR little endian first (dcmtk: `dcmdjpeg`, \
                         `dcmdjp2k` or `dcmconv +te`; gdcm: `gdcmconv --raw`), see docs/formats.md";
