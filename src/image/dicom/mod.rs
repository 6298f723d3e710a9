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

mod compress;
mod frames;
mod scan;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use ndarray::Array2;

use self::scan::{Encoding, ScanError};
use super::derived::{self, DerivedSeries, OutputSyntax};
use super::jpeg12;
use super::window::{auto_window, Units, Window, WindowChoice, CT_WINDOW};
use super::{ColourImage, Format, GrayImage, ImageError, Picture, MAX_PIXELS};

/// Most frames read from one object (a study's slice limit).
const MAX_FRAMES: usize = 100_000;

/// Explicit VR big endian (retired from the standard, so its constant is deprecated).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// The pixel layout of a DICOM, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    rows: usize,
    cols: usize,
    /// NumberOfFrames (1 when absent): every frame is `rows x cols`.
    frames: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    monochrome1: bool,
    /// Three samples per pixel, and how they are stored; `None` for grayscale.
    colour: Option<Colour>,
}

/// A colour image's PhotometricInterpretation (SamplesPerPixel 3) and PlanarConfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Colour {
    form: ColourForm,
    /// PlanarConfiguration 1: all R (or Y) samples of a frame, then G, then B.
    planar: bool,
}

/// The colour photometric interpretations read (PS3.3 C.7.6.3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColourForm {
    Rgb,
    YbrFull,
    /// YBR_FULL with Cb and Cr at half horizontal resolution: native data holds
    /// Y1 Y2 Cb Cr for each pair of pixels; a JPEG stream says its own sampling.
    YbrFull422,
    /// JPEG 2000's irreversible and reversible component transforms, which the codestream
    /// itself undoes.
    YbrIct,
    YbrRct,
}

impl ColourForm {
    fn of(pi: &str) -> Option<ColourForm> {
        Some(match pi {
            "RGB" => ColourForm::Rgb,
            "YBR_FULL" => ColourForm::YbrFull,
            "YBR_FULL_422" => ColourForm::YbrFull422,
            "YBR_ICT" => ColourForm::YbrIct,
            "YBR_RCT" => ColourForm::YbrRct,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            ColourForm::Rgb => "RGB",
            ColourForm::YbrFull => "YBR_FULL",
            ColourForm::YbrFull422 => "YBR_FULL_422",
            ColourForm::YbrIct => "YBR_ICT",
            ColourForm::YbrRct => "YBR_RCT",
        }
    }
}

impl Layout {
    /// `M = 2^b - 1`, the largest unsigned stored code.
    fn max(&self) -> f64 {
        f64::from((1u32 << self.bits_stored) - 1)
    }

    /// The shift that brings signed stored values to `0 .. M`.
    fn offset(&self) -> i32 {
        if self.signed {
            1 << (self.bits_stored - 1)
        } else {
            0
        }
    }

    /// A stored value on the 0..255 scale (see the module doc).
    fn scale_of(&self, stored: i32) -> f64 {
        let mut u = f64::from(stored + self.offset());
        if self.monochrome1 {
            u = self.max() - u;
        }
        u * 255.0 / self.max()
    }

    /// The stored value for a 0..255-scale value: rounded, clamped to the stored range.
    fn stored_of(&self, x: f64) -> i32 {
        let mut u = (x * self.max() / 255.0).round().clamp(0.0, self.max());
        if self.monochrome1 {
            u = self.max() - u;
        }
        u as i32 - self.offset()
    }

    /// A stored value from a raw sample: the low `b` bits, sign-extended when signed.
    fn stored_from_raw(&self, raw: u16) -> i32 {
        let b = self.bits_stored;
        let v = i32::from(raw) & ((1 << b) - 1);
        if self.signed && v & (1 << (b - 1)) != 0 {
            v - (1 << b)
        } else {
            v
        }
    }

    fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    /// Samples per pixel: 1 or 3.
    fn samples(&self) -> usize {
        if self.colour.is_some() {
            3
        } else {
            1
        }
    }

    /// Whether native (not encapsulated) data holds a YBR_FULL_422 frame in its subsampled
    /// form, two samples per pixel.
    fn subsampled(&self, native: bool) -> bool {
        native
            && self
                .colour
                .is_some_and(|c| c.form == ColourForm::YbrFull422)
    }

    /// Samples one frame holds: `native` as stored, else as a decoder gives them.
    fn frame_samples(&self, native: bool) -> usize {
        let per_pixel = if self.subsampled(native) {
            2
        } else {
            self.samples()
        };
        self.rows * self.cols * per_pixel
    }
}

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

/// An integer attribute, `None` when absent.
fn int_attr(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
    path: &Path,
) -> Result<Option<i64>, ImageError> {
    match obj.element_opt(tag) {
        Ok(None) => Ok(None),
        Ok(Some(e)) => e
            .to_int::<i64>()
            .map(Some)
            .map_err(|_| corrupt(path, format!("{name} is not a number"))),
        Err(e) => Err(corrupt(path, format!("{name}: {e}"))),
    }
}

/// An integer attribute the image pixel module requires.
fn required(obj: &InMemDicomObject, tag: Tag, name: &str, path: &Path) -> Result<i64, ImageError> {
    int_attr(obj, tag, name, path)?.ok_or_else(|| corrupt(path, format!("{name} is missing")))
}

/// A string attribute, trimmed; `None` when absent or unreadable.
fn str_attr(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    Some(e.to_str().ok()?.trim().to_string())
}

/// Checks the attributes of a grayscale image and returns its layout; a colour one is
/// refused by name.
fn layout(obj: &InMemDicomObject, path: &Path) -> Result<Layout, ImageError> {
    layout_of(obj, path, false)
}

/// The words a colour DICOM is refused with where only grayscale is taken.
const GRAY_ONLY: &str = "only grayscale (MONOCHROME1 or MONOCHROME2) is read here: a colour \
                         DICOM is taken with a colour model (share-image, share-study, \
                         reconstruct, denoise, table: docs/dicom.md) and by add-noise and \
                         metrics, not by a gray model or with a --window";

/// Checks the attributes of an image and returns its layout: grayscale, or (`colour_ok`)
/// colour too (see docs/dicom.md for the colour forms read).
fn layout_of(obj: &InMemDicomObject, path: &Path, colour_ok: bool) -> Result<Layout, ImageError> {
    let pi = str_attr(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or_else(|| corrupt(path, "PhotometricInterpretation is missing"))?;
    if pi == "PALETTE COLOR" {
        return Err(unsupported(
            path,
            "photometric interpretation PALETTE COLOR: its values are indices into a colour \
             table, not intensities; convert it to RGB first (e.g. pydicom's \
             apply_color_lut) and give the RGB file",
        ));
    }
    let spp = required(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", path)?;
    let colour = match spp {
        1 => None,
        3 if !colour_ok => {
            return Err(unsupported(
                path,
                format!("a colour image ({spp} samples per pixel, {pi}); {GRAY_ONLY}"),
            ))
        }
        3 => {
            let form = ColourForm::of(&pi).ok_or_else(|| {
                unsupported(
                    path,
                    format!(
                        "a colour image in photometric interpretation {pi} (RGB, YBR_FULL, \
                         YBR_FULL_422, YBR_ICT and YBR_RCT are read)"
                    ),
                )
            })?;
            // Absent (seen in the wild): as the standard's default layout, R G B per pixel.
            let planar =
                match int_attr(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration", path)? {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(v) => {
                        return Err(corrupt(path, format!("PlanarConfiguration {v} (0 or 1)")))
                    }
                };
            Some(Colour { form, planar })
        }
        _ => {
            return Err(unsupported(
                path,
                format!("{spp} samples per pixel ({pi}); 1 (grayscale) or 3 (colour) are read"),
            ))
        }
    };
    let monochrome1 = match (pi.as_str(), colour) {
        (_, Some(_)) => false,
        ("MONOCHROME1", None) => true,
        ("MONOCHROME2", None) => false,
        (other, None) => {
            return Err(unsupported(
                path,
                format!("photometric interpretation {other} (MONOCHROME1 or MONOCHROME2 are read)"),
            ))
        }
    };
    let frames = int_attr(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames", path)?.unwrap_or(1);
    if frames < 1 {
        return Err(corrupt(path, format!("NumberOfFrames {frames}")));
    }
    // Each frame is an image of its own: 2^28 frames of one pixel would cost far more than
    // their pixels.
    if frames > MAX_FRAMES as i64 {
        return Err(unsupported(
            path,
            format!("{frames} frames (at most {MAX_FRAMES} are read)"),
        ));
    }
    let rows = required(obj, tags::ROWS, "Rows", path)?;
    let cols = required(obj, tags::COLUMNS, "Columns", path)?;
    // Samples, not pixels: a colour image costs its decoder and its planes three times a
    // gray one's, so it is bounded by its samples.
    let per_pixel: i64 = if colour.is_some() { 3 } else { 1 };
    if rows <= 0
        || cols <= 0
        || rows
            .saturating_mul(cols)
            .saturating_mul(frames)
            .saturating_mul(per_pixel)
            > MAX_PIXELS as i64
    {
        return Err(unsupported(
            path,
            format!(
                "{frames} frame(s) of {rows} x {cols} pixels of {per_pixel} sample(s) (1 to \
                 {MAX_PIXELS} samples in all are read)"
            ),
        ));
    }
    let ba = required(obj, tags::BITS_ALLOCATED, "BitsAllocated", path)?;
    if ba != 8 && ba != 16 {
        return Err(unsupported(
            path,
            format!("{ba} bits allocated per sample (8 or 16 are read)"),
        ));
    }
    let bs = required(obj, tags::BITS_STORED, "BitsStored", path)?;
    if !(1..=ba).contains(&bs) {
        return Err(unsupported(
            path,
            format!("{bs} bits stored in {ba} allocated (1 to {ba} are read)"),
        ));
    }
    let hb = int_attr(obj, tags::HIGH_BIT, "HighBit", path)?.unwrap_or(bs - 1);
    if hb != bs - 1 {
        return Err(unsupported(
            path,
            format!(
                "high bit {hb} with {bs} bits stored (only high bit = bits stored - 1 is read)"
            ),
        ));
    }
    let signed = match required(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation", path)? {
        0 => false,
        1 => true,
        r => return Err(corrupt(path, format!("PixelRepresentation {r} (0 or 1)"))),
    };
    if let Some(c) = colour {
        if signed {
            return Err(unsupported(
                path,
                format!("a colour image ({pi}) of signed samples; unsigned ones are read"),
            ));
        }
        // The YBR_FULL equations (PS3.3 C.7.6.3.1.2) are for 8-bit samples, and so are
        // JPEG baseline's.
        if matches!(c.form, ColourForm::YbrFull | ColourForm::YbrFull422) && bs != 8 {
            return Err(unsupported(
                path,
                format!("{pi} of {bs} bits stored (8 are read)"),
            ));
        }
    }
    Ok(Layout {
        rows: rows as usize,
        cols: cols as usize,
        frames: frames as usize,
        bits_allocated: ba as u16,
        bits_stored: bs as u16,
        signed,
        monochrome1,
        colour,
    })
}

/// How a DICOM's stored values become values in its own units (the modality LUT's linear
/// rescale: Hounsfield units for a CT), and back; what [`super::window`] needs of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Intensity {
    /// Modality (CT, MR, CR, ...), when given.
    pub modality: Option<String>,
    /// RescaleType, when given (HU, US, ...).
    pub rescale_type: Option<String>,
    pub slope: f64,
    pub intercept: f64,
    /// Whether RescaleSlope or RescaleIntercept is present.
    pub rescaled: bool,
    pub bits_stored: u16,
    pub signed: bool,
    pub monochrome1: bool,
}

/// A decimal attribute, `None` when absent.
fn float_attr(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
    path: &Path,
) -> Result<Option<f64>, ImageError> {
    match obj.element_opt(tag) {
        Ok(None) => Ok(None),
        // Present but empty (type 2 style, seen in the wild): as if absent.
        Ok(Some(e)) if e.to_str().is_ok_and(|t| t.trim().is_empty()) => Ok(None),
        Ok(Some(e)) => match e.to_float64() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(corrupt(path, format!("{name} is not a finite number"))),
        },
        Err(e) => Err(corrupt(path, format!("{name}: {e}"))),
    }
}

/// The rescale and modality of an image of layout `l`.
fn intensity(obj: &InMemDicomObject, l: &Layout, path: &Path) -> Result<Intensity, ImageError> {
    let slope = float_attr(obj, tags::RESCALE_SLOPE, "RescaleSlope", path)?;
    let intercept = float_attr(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept", path)?;
    let upper = |t| {
        str_attr(obj, t)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_uppercase())
    };
    Ok(Intensity {
        modality: upper(tags::MODALITY),
        rescale_type: upper(tags::RESCALE_TYPE),
        slope: slope.unwrap_or(1.0),
        intercept: intercept.unwrap_or(0.0),
        rescaled: slope.is_some() || intercept.is_some(),
        bits_stored: l.bits_stored,
        signed: l.signed,
        monochrome1: l.monochrome1,
    })
}

impl Intensity {
    fn layout(&self) -> Layout {
        Layout {
            rows: 1,
            cols: 1,
            frames: 1,
            bits_allocated: 16,
            bits_stored: self.bits_stored,
            signed: self.signed,
            monochrome1: self.monochrome1,
            colour: None,
        }
    }

    /// What the values are: HU for a CT (Modality CT, or a rescale of type HU), modality
    /// units for another rescale, else stored values.
    pub fn units(&self) -> Units {
        if self.modality.as_deref() == Some("CT") || self.rescale_type.as_deref() == Some("HU") {
            Units::Hu
        } else if self.rescaled {
            Units::Modality
        } else {
            Units::Stored
        }
    }

    /// The smallest and largest stored value the container holds.
    pub fn stored_range(&self) -> (i32, i32) {
        let l = self.layout();
        let lo = -l.offset();
        (lo, lo + l.max() as i32)
    }

    /// A stored value in the image's units.
    pub fn value(&self, stored: i32) -> f64 {
        f64::from(stored) * self.slope + self.intercept
    }

    /// The stored value nearest to `v` (in the image's units), within the container's range.
    pub fn stored_of_value(&self, v: f64) -> i32 {
        let (lo, hi) = self.stored_range();
        ((v - self.intercept) / self.slope)
            .round()
            .clamp(f64::from(lo), f64::from(hi)) as i32
    }

    /// The container's whole range in the image's units.
    pub fn full_window(&self) -> Window {
        let (lo, hi) = self.stored_range();
        Window {
            lo: self.value(lo),
            hi: self.value(hi),
        }
    }

    /// The stored value of a pixel on the container's 0..255 scale (as decoded).
    pub fn stored_of_full(&self, x: f64) -> i32 {
        self.layout().stored_of(x)
    }

    /// The stored values of decoded frames (on the container's 0..255 scale), in order.
    pub fn stored_of_frames(&self, frames: &[GrayImage]) -> Vec<i32> {
        frames
            .iter()
            .flat_map(|f| f.pixels.iter())
            .map(|&x| self.stored_of_full(x))
            .collect()
    }

    /// The default window: [`CT_WINDOW`] for a CT, else the image's own range.
    fn default_window(&self, stored: &[i32]) -> Option<Window> {
        match self.units() {
            Units::Hu => Some(CT_WINDOW),
            _ => self.auto_window(stored),
        }
    }

    fn auto_window(&self, stored: &[i32]) -> Option<Window> {
        let values: Vec<f64> = stored.iter().map(|&v| self.value(v)).collect();
        auto_window(&values)
    }

    /// What `choice` means for an image of these stored values: `None` for the container's
    /// full range (the decoded pixels as they are).
    pub fn resolve(&self, choice: &WindowChoice, stored: &[i32]) -> Result<Option<Window>, String> {
        // A zero or negative slope would turn the window inside out; no modality uses one.
        if *choice != WindowChoice::Full && self.slope <= 0.0 {
            return Err(format!(
                "RescaleSlope {}: a window needs a positive slope (--window full takes the \
                 stored values as they are)",
                self.slope
            ));
        }
        Ok(match choice {
            WindowChoice::Full => None,
            WindowChoice::Range(w) => Some(*w),
            WindowChoice::Declared(d) => {
                d.check_units(self.units())?;
                Some(d.window)
            }
            WindowChoice::Default => self.default_window(stored),
            WindowChoice::Auto => self.auto_window(stored),
        })
    }

    /// A pixel of stored value `v` on the 0..255 scale of window `w`.
    pub fn to_scale(&self, v: i32, w: &Window) -> f64 {
        let x = w.to_scale(self.value(v));
        if self.monochrome1 {
            255.0 - x
        } else {
            x
        }
    }

    /// The stored value to write for `x` on the 0..255 scale of window `w`, where the
    /// template held `template`: a value the window clipped is written back as it was.
    pub fn stored_for(&self, x: f64, w: &Window, template: i32) -> i32 {
        if !w.contains(self.value(template)) {
            return template;
        }
        let x = if self.monochrome1 { 255.0 - x } else { x };
        self.stored_of_value(w.from_scale(x))
    }
}

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

/// An error and its causes, `a: b: c` (a decoder's reason is in its source).
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s = format!("{s}: {text}");
        }
        cause = c.source();
    }
    s
}

/// The commands that transcode a file to a syntax this build reads (docs/formats.md).
const TRANSCODE: &str = "transcode it to explicit VR little endian first (dcmtk: `dcmdjpeg`, \
                         `dcmdjp2k` or `dcmconv +te`; gdcm: `gdcmconv --raw`), see docs/formats.md";

/// Checks every element length and the transfer syntax, then parses the file (up to its
/// pixel data when `with_pixels` is false). `with_pixels`: the pixel data must be decodable
/// too.
pub(super) fn parse(
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

/// Decodes a single-frame DICOM file's bytes (with `DICM` at byte 128); a multi-frame one is
/// refused before its pixels are decoded. `path` is only used in errors.
pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<GrayImage, ImageError> {
    let mut frames = decode_frames(bytes, path, false)?;
    Ok(frames.remove(0))
}

/// Decodes every frame of a DICOM file's bytes, in order (`multi`: more than one is taken;
/// else a multi-frame file is refused before its pixels are decoded).
pub(super) fn decode_frames(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<Vec<GrayImage>, ImageError> {
    decode_all(bytes, path, multi).map(|(frames, _)| frames)
}

/// [`decode_frames`], with how the stored values become the image's own units.
pub(super) fn decode_all(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<(Vec<GrayImage>, Intensity), ImageError> {
    let obj = parse(bytes, path, true)?;
    let l = layout(&obj, path)?;
    let intensity = intensity(&obj, &l, path)?;
    let Decoded {
        samples,
        encapsulated,
        ..
    } = decode_samples(&obj, &l, path, multi)?;
    // A lossy decoder can overshoot the stored range (a 10-bit image in a 12-bit JPEG gives
    // up to 4095): clamped, not wrapped by masking. Native data keeps the mask (old files put
    // overlay bits above the stored ones). Signed data keeps it too: a JPEG 2000 codestream
    // may call unsigned what the header calls signed, and the mask reads it right.
    let clamp = encapsulated && !l.signed;
    let frames = samples
        .chunks_exact(l.rows * l.cols)
        .map(|raw| {
            let values: Vec<f64> = raw
                .iter()
                .map(|&r| {
                    let r = if clamp { r.min(l.max() as u16) } else { r };
                    l.scale_of(l.stored_from_raw(r))
                })
                .collect();
            GrayImage {
                pixels: Array2::from_shape_vec((l.rows, l.cols), values)
                    .expect("sized from the layout"),
                bit_depth: if l.bits_stored <= 8 { 8 } else { 16 },
            }
        })
        .collect();
    Ok((frames, intensity))
}

/// What [`decode_samples`] gives.
struct Decoded {
    /// Every frame's samples as decoded (`l.frame_samples` of each, in order).
    samples: Vec<u16>,
    /// Whether the pixel data was encapsulated (compressed).
    encapsulated: bool,
    /// Whether a colour frame came planar (all of one component, then the next) rather than
    /// pixel by pixel.
    planar: bool,
    codec: Codec,
}

/// Decodes the pixel data of `obj` (layout `l`, checked); multi-frame data is refused
/// unless `multi`.
fn decode_samples(
    obj: &DefaultDicomObject,
    l: &Layout,
    path: &Path,
    multi: bool,
) -> Result<Decoded, ImageError> {
    let l = *l;
    if l.frames > 1 && !multi {
        return Err(unsupported(
            path,
            format!(
                "{} frames (a multi-frame image): add-noise, denoise, share-study and table \
                 take it whole, every frame a slice; this command takes single-frame images",
                l.frames
            ),
        ));
    }
    let pixel_data = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt(path, "no pixel data"))?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    // 16-bit samples typed OB (or UN) in a big-endian file: which byte comes first is not
    // said (pydicom and dicom-rs disagree); only OW's is.
    if ts_uid == EXPLICIT_VR_BIG_ENDIAN && l.bits_allocated == 16 && pixel_data.vr() != VR::OW {
        return Err(unsupported(
            path,
            format!(
                "16-bit pixel data typed {} in a big-endian file: its byte order is ambiguous \
                 (OW is required); {TRANSCODE}",
                pixel_data.vr()
            ),
        ));
    }
    // Encapsulated frames: one frame, in any number of fragments, or one fragment per frame
    // (so that each frame's own header is checked before a decoder sizes anything from it).
    // The bytes checked are the bytes decoded: [`frames`] takes them once, and every
    // codec but the registry's RLE reads them directly.
    let scan_err = |e| match e {
        ScanError::Corrupt(d) => corrupt(path, d),
        ScanError::Unsupported(d) => unsupported(path, format!("{d}; {TRANSCODE}")),
    };
    let encapsulated = match (
        pixel_data.value().offset_table(),
        pixel_data.value().fragments(),
    ) {
        (Some(table), Some(f)) => Some(frames::frames(table, f, l.frames).map_err(scan_err)?),
        _ => None,
    };
    let mut codec = Codec::Registry;
    for f in encapsulated.iter().flatten() {
        codec = check_encapsulated(ts_uid, f, &l, path)?;
    }
    let frame_len = l.frame_samples(encapsulated.is_none());
    let n = frame_len * l.frames;
    let mut planar = false;
    // A frame decoded to another size than the header's is refused, never cut or padded.
    let sized = |k: usize, got: usize, what: &str| {
        if got == frame_len {
            return Ok(());
        }
        Err(corrupt(
            path,
            format!(
                "{what} pixel data: frame {} decoded to {got} samples; {} x {} take {frame_len}",
                k + 1,
                l.rows,
                l.cols
            ),
        ))
    };
    let samples: Vec<u16> = match (codec, &encapsulated) {
        (Codec::Jpeg, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let stream = match l.colour {
                    Some(c) => jpeg_colour_said(&f.bytes, c.form),
                    None => std::borrow::Cow::Borrowed(&f.bytes[..]),
                };
                let s = jpeg12::decode(&stream, l.rows, l.cols, l.samples())
                    .map_err(|e| corrupt(path, format!("JPEG pixel data: {e}")))?;
                sized(k, s.len(), "JPEG")?;
                all.extend(s);
            }
            all
        }
        (Codec::JpegLs, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let raw = quietly(|| charls::CharLS::default().decode(&f.bytes))
                    .map_err(|_| corrupt(path, "JPEG-LS pixel data: the decoder failed"))?
                    .map_err(|e| corrupt(path, format!("JPEG-LS pixel data: {e}")))?;
                // CharLS gives 16-bit samples in native byte order.
                let s: Vec<u16> = if l.bits_allocated == 8 {
                    raw.iter().map(|&r| u16::from(r)).collect()
                } else if raw.len() % 2 == 0 {
                    raw.chunks_exact(2)
                        .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                        .collect()
                } else {
                    return Err(corrupt(path, "JPEG-LS pixel data of an odd byte count"));
                };
                // CharLS gives the components one after the other when the stream has a
                // scan for each (interleave mode none), else pixel by pixel.
                let by_plane = l.colour.is_some() && jpeg_ls_scan_per_component(&f.bytes);
                if k > 0 && by_plane != planar {
                    return Err(corrupt(
                        path,
                        "JPEG-LS frames of different interleave modes",
                    ));
                }
                planar = by_plane;
                sized(k, s.len(), "JPEG-LS")?;
                all.extend(s);
            }
            all
        }
        (Codec::J2k, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let s = j2k_decode(&f.bytes, &l)
                    .map_err(|e| corrupt(path, format!("JPEG 2000 pixel data: {e}")))?;
                sized(k, s.len(), "JPEG 2000")?;
                all.extend(s);
            }
            all
        }
        _ => {
            // The decoders of the registry can still panic on data the checks above let
            // through (a PackBits run cut short): an error, not a crash, and no message.
            // Encapsulated, only RLE comes here: its decoder takes fragment k as frame k,
            // which is frame k's checked bytes (one fragment per frame is required).
            let decoded = quietly(|| obj.decode_pixel_data());
            let decoded = decoded
                .map_err(|_| corrupt(path, "pixel data: the decoder failed on malformed data"))?
                .map_err(|e| corrupt(path, format!("pixel data: {}", causes(&e))))?;
            // RLE's decoder puts the components pixel by pixel; native data is as stored.
            planar = l.colour.is_some()
                && decoded.planar_configuration()
                    == dicom_pixeldata::PlanarConfiguration::PixelFirst;
            let data = decoded.data();
            let need = n * l.bytes_per_sample();
            if data.len() < need || (encapsulated.is_some() && data.len() != need) {
                return Err(corrupt(
                    path,
                    format!(
                        "pixel data holds {} bytes; {} frame(s) of {} x {}, {} sample(s) \
                         of {} bits allocated take {need}",
                        data.len(),
                        l.frames,
                        l.rows,
                        l.cols,
                        frame_len / (l.rows * l.cols),
                        l.bits_allocated
                    ),
                ));
            }
            // More native data is trailing padding (one byte evens an odd length and is
            // normal): other toolkits read the frame and ignore the rest, and so do we,
            // saying so. Decoded (encapsulated) data must be exactly the frames.
            if data.len() > need + 1 {
                eprintln!(
                    "warning: {}: pixel data holds {} bytes past its {} x {} frame(s) \
                     (trailing padding); they are ignored",
                    path.display(),
                    data.len() - need,
                    l.rows,
                    l.cols
                );
            }
            // Decoded samples are in native byte order.
            if l.bits_allocated == 8 {
                data[..n].iter().map(|&r| u16::from(r)).collect()
            } else {
                data[..need]
                    .chunks_exact(2)
                    .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                    .collect()
            }
        }
    };
    Ok(Decoded {
        samples,
        encapsulated: encapsulated.is_some(),
        planar,
        codec,
    })
}

/// Whether `bytes` (a DICOM file) holds a colour image (SamplesPerPixel 3, or PALETTE
/// COLOR, which its loader refuses by name), from its header alone; false for anything
/// unreadable (its loader names the problem).
pub(super) fn is_colour(bytes: &[u8], path: &Path) -> bool {
    let Ok(obj) = parse(bytes, path, false) else {
        return false;
    };
    str_attr(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref() == Some("PALETTE COLOR")
        || int_attr(&obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", path)
            .ok()
            .flatten()
            .is_some_and(|n| n != 1)
}

/// A DICOM file's bytes as gray ([`decode`]) or, SamplesPerPixel 3, colour: one frame
/// (a multi-frame file is refused before its pixels are decoded).
pub(super) fn decode_picture(bytes: &[u8], path: &Path) -> Result<Picture, ImageError> {
    let obj = parse(bytes, path, true)?;
    if layout_of(&obj, path, true)?.colour.is_none() {
        return decode(bytes, path).map(Picture::Gray);
    }
    let mut frames = decode_colour_object(&obj, path, false)?;
    Ok(Picture::Colour(frames.remove(0)))
}

/// Every frame of a colour DICOM file's bytes, in order (`multi`: more than one is taken).
pub fn decode_colour(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<Vec<ColourImage>, ImageError> {
    decode_colour_object(&parse(bytes, path, true)?, path, multi)
}

/// [`decode_colour`] of a parsed file.
///
/// Each decoder's output, and what is done with it (checked against pydicom, tests/
/// colour_dicom.rs):
/// - native data: as stored, pixel by pixel or planar (PlanarConfiguration), YBR_FULL_422's
///   subsampled pairs Y1 Y2 Cb Cr (each Cb, Cr taken for both pixels, as pydicom does);
/// - JPEG (libjpeg-turbo): RGB already, whatever the header says ([`jpeg12::decode`]);
/// - JPEG 2000 (openjp2): RGB for RGB, YBR_ICT and YBR_RCT (the codestream's component
///   transform undone by the decoder); YBR_FULL as stored;
/// - JPEG-LS (CharLS) and RLE: the stored components.
///
/// YBR_FULL and YBR_FULL_422 samples not already converted become RGB by the equations of
/// PS3.3 C.7.6.3.1.2 (ITU-R BT.601 full range: R = Y + 1.402 (Cr - 128), G = Y -
/// 0.344136 (Cb - 128) - 0.714136 (Cr - 128), B = Y + 1.772 (Cb - 128)), rounded to the
/// nearest integer and clipped to 0..255, as a viewer shows them. RGB samples map to the
/// 0..255 scale as gray ones do (`u * 255 / M`; divided by 257 at 16 bits).
/// Whether `obj`'s pixel data is encapsulated (compressed fragments); false without any.
fn is_encapsulated(obj: &DefaultDicomObject) -> bool {
    obj.element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_some_and(|e| e.value().fragments().is_some())
}

fn decode_colour_object(
    obj: &DefaultDicomObject,
    path: &Path,
    multi: bool,
) -> Result<Vec<ColourImage>, ImageError> {
    let l = layout_of(obj, path, true)?;
    let Some(colour) = l.colour else {
        return Err(unsupported(path, "a grayscale image, where colour is read"));
    };
    // Native YBR_FULL_422 pairs the pixels of a row (Y1 Y2 Cb Cr): an odd row cannot be
    // stored so. A JPEG's own sampling factors say how its chroma is stored, at any width.
    if colour.form == ColourForm::YbrFull422 && l.cols % 2 == 1 && !is_encapsulated(obj) {
        return Err(corrupt(
            path,
            format!(
                "native YBR_FULL_422 of an odd number of columns ({})",
                l.cols
            ),
        ));
    }
    let d = decode_samples(obj, &l, path, multi)?;
    let native = !d.encapsulated;
    let ybr = match colour.form {
        ColourForm::YbrFull | ColourForm::YbrFull422 => d.codec != Codec::Jpeg,
        ColourForm::Rgb | ColourForm::YbrIct | ColourForm::YbrRct => false,
    };
    let (h, w) = (l.rows, l.cols);
    let n = h * w;
    let frame_len = l.frame_samples(native);
    let subsampled = l.subsampled(native);
    let top = l.max() as u16;
    let frames = d
        .samples
        .chunks_exact(frame_len)
        .map(|f| {
            // Sample `c` of pixel `i`, as stored.
            let at = |i: usize, c: usize| -> u16 {
                let v = if subsampled {
                    // Y1 Y2 Cb Cr for pixels 2k and 2k + 1.
                    let (pair, odd) = (i / 2, i % 2);
                    match c {
                        0 => f[4 * pair + odd],
                        _ => f[4 * pair + 1 + c],
                    }
                } else if d.planar {
                    f[c * n + i]
                } else {
                    f[3 * i + c]
                };
                // A lossy decoder's overshoot is clamped; native data keeps its low bits.
                if d.encapsulated {
                    v.min(top)
                } else {
                    v & top
                }
            };
            let mut planes = Array2::<f64>::zeros((3 * h, w));
            for i in 0..n {
                let (y, x) = (i / w, i % w);
                let rgb = if ybr {
                    ybr_full_to_rgb([at(i, 0), at(i, 1), at(i, 2)])
                } else {
                    [0, 1, 2].map(|c| l.scale_of(i32::from(at(i, c))))
                };
                for (c, v) in rgb.into_iter().enumerate() {
                    planes[[c * h + y, x]] = v;
                }
            }
            ColourImage {
                planes,
                bit_depth: if l.bits_stored <= 8 { 8 } else { 16 },
                alpha: None,
                // A level in stored values is read against what the file stores.
                stored_max: (!matches!(l.bits_stored, 8 | 16)).then_some(top),
            }
        })
        .collect();
    Ok(frames)
}

/// One YBR_FULL pixel (8-bit Y, Cb, Cr) as RGB on 0..255, by PS3.3 C.7.6.3.1.2 (the
/// coefficients of ISO/IEC 10918-5, as pydicom's): rounded half up, clipped.
fn ybr_full_to_rgb([y, cb, cr]: [u16; 3]) -> [f64; 3] {
    let (y, cb, cr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
    let r = y + 1.402 * cr;
    let g = y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr;
    let b = y + 1.772 * cb;
    [r, g, b].map(|v| (v + 0.5).floor().clamp(0.0, 255.0))
}

/// Which decoder takes encapsulated pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// The registry's decoder for the transfer syntax.
    Registry,
    /// JPEG, DCT or lossless: libjpeg-turbo (see [`jpeg12`]).
    Jpeg,
    /// JPEG-LS: CharLS.
    JpegLs,
    /// JPEG 2000: openjp2 in its strict mode ([`j2k_decode`]).
    J2k,
}

/// Decodes one JPEG 2000 codestream, whose header was checked against the layout, with
/// openjp2 in its strict mode (its default fills a cut codestream with zeros and says
/// nothing): the samples' low bits in the allocated width, as the registry wrote them.
fn j2k_decode(cs: &[u8], l: &Layout) -> Result<Vec<u16>, String> {
    let params = jpeg2k::DecodeParameters::default().strict(true);
    let image = quietly(|| jpeg2k::Image::from_bytes_with(cs, params))
        .map_err(|_| "the decoder failed on malformed data".to_string())?
        .map_err(|e| e.to_string())?;
    let comps = image.components();
    if comps.len() != l.samples() {
        return Err(format!(
            "{} components decoded; {} were checked",
            comps.len(),
            l.samples()
        ));
    }
    for c in comps {
        if (c.height() as usize, c.width() as usize) != (l.rows, l.cols) {
            return Err(format!(
                "decoded to {} x {}; the header says {} x {}",
                c.height(),
                c.width(),
                l.rows,
                l.cols
            ));
        }
    }
    let mask: u32 = if l.bits_allocated == 8 { 0xFF } else { 0xFFFF };
    // Colour: pixel by pixel. openjp2 has already undone the codestream's multiple-component
    // transform (YBR_ICT, YBR_RCT), so three components are R, G and B.
    let n = l.rows * l.cols;
    Ok((0..n * comps.len())
        .map(|i| (comps[i % comps.len()].data()[i / comps.len()] as u32 & mask) as u16)
        .collect())
}

/// Encapsulated pixel data is checked against the header before a decoder sizes anything
/// from it: one frame is one fragment for RLE (the decoder makes a frame of every fragment),
/// and a JPEG, JPEG-LS or JPEG 2000 stream's own header must say the header's rows, columns,
/// one component and a precision that fits the bits allocated (the decoders allocate what
/// the stream says). Returns the decoder to use.
fn check_encapsulated(
    ts_uid: &str,
    frame: &frames::Frame,
    l: &Layout,
    path: &Path,
) -> Result<Codec, ImageError> {
    let first: &[u8] = &frame.bytes;
    let stream = |kind: &str, (rows, cols, comps, precision): (usize, usize, u16, u16)| {
        if (rows, cols) != (l.rows, l.cols)
            || usize::from(comps) != l.samples()
            || precision > l.bits_allocated
            || (precision <= 8) != (l.bits_allocated == 8)
        {
            return Err(corrupt(
                path,
                format!(
                    "the {kind} data is {rows} x {cols}, {comps} component(s) of {precision} \
                     bits; the header says {} x {}, {} sample(s) of {} bits allocated",
                    l.rows,
                    l.cols,
                    l.samples(),
                    l.bits_allocated
                ),
            ));
        }
        Ok(())
    };
    match ts_uid {
        uids::RLE_LOSSLESS => {
            check_rle(first, frame.fragments, l, path)?;
            Ok(Codec::Registry)
        }
        uids::JPEG_BASELINE8_BIT
        | uids::JPEG_EXTENDED12_BIT
        | uids::JPEG_LOSSLESS
        | uids::JPEG_LOSSLESS_SV1
        | uids::JPEGLS_LOSSLESS
        | uids::JPEGLS_NEAR_LOSSLESS => {
            let (marker, precision, rows, cols, comps) = jpeg_frame(first).ok_or_else(|| {
                corrupt(
                    path,
                    "JPEG data without a frame header (SOF) before its scan",
                )
            })?;
            if matches!(marker, 0xC5..=0xC7 | 0xCD..=0xCF) {
                return Err(unsupported(
                    path,
                    format!(
                        "a hierarchical JPEG (SOF{}), which no decoder here reads; {TRANSCODE}",
                        marker - 0xC0
                    ),
                ));
            }
            let jpeg_ls = marker == 0xF7;
            // Several frames of JPEG: each fragment must hold exactly its stream (dicom-rs's
            // decoder read a second one hidden after the first's end as the next frame,
            // unchecked; libjpeg-turbo stops at EOI, but nothing is taken from after it).
            if l.frames > 1 && !jpeg_ls && !one_jpeg_stream(first) {
                return Err(corrupt(
                    path,
                    "a frame's JPEG fragment does not hold exactly one stream (data after its \
                     end, EOI, or no end)",
                ));
            }
            if jpeg_ls != ts_uid.starts_with("1.2.840.10008.1.2.4.8") {
                return Err(corrupt(
                    path,
                    format!("the transfer syntax is {ts_uid} but the stream's frame header is SOF marker {marker:#04X}"),
                ));
            }
            let kind = if jpeg_ls { "JPEG-LS" } else { "JPEG" };
            stream(kind, (rows, cols, u16::from(comps), u16::from(precision)))?;
            // Lossless (SOF3, SOF11) and DCT JPEG: libjpeg-turbo; JPEG-LS: CharLS.
            Ok(if jpeg_ls { Codec::JpegLs } else { Codec::Jpeg })
        }
        uids::JPEG2000_LOSSLESS
        | uids::JPEG2000
        | uids::JPEG2000MC_LOSSLESS
        | uids::JPEG2000MC
        | uids::HTJ2K_LOSSLESS
        | uids::HTJ2K_LOSSLESS_RPCL
        | uids::HTJ2K => {
            let cs = first;
            let Some(h) = j2k_header(cs) else {
                return Err(if cs.get(4..8) == Some(b"jP  ") {
                    unsupported(
                        path,
                        format!(
                            "JPEG 2000 data in a JP2 file wrapper, not the bare codestream DICOM \
                             requires; {TRANSCODE}"
                        ),
                    )
                } else {
                    corrupt(
                        path,
                        "JPEG 2000 data without its codestream header (SOC, SIZ) at its start",
                    )
                });
            };
            stream("JPEG 2000", (h.rows, h.cols, h.comps, h.precision))?;
            if !h.alike {
                return Err(unsupported(
                    path,
                    "JPEG 2000 components of differing precision, sign or subsampling; all \
                     alike are read",
                ));
            }
            // The decoder undoes the codestream's colour transform: what it returns must be
            // what the header's photometric interpretation leads the reader to expect (RGB
            // after YBR_ICT/YBR_RCT; the samples themselves for RGB and YBR_FULL).
            if let Some(c) = &l.colour {
                let said = match c.form {
                    ColourForm::YbrIct | ColourForm::YbrRct => Some(true),
                    ColourForm::YbrFull | ColourForm::YbrFull422 => Some(false),
                    ColourForm::Rgb => None,
                };
                if said.is_some_and(|want| want != h.mct) {
                    return Err(corrupt(
                        path,
                        format!(
                            "JPEG 2000 data {} a colour transform, but the header's \
                             photometric interpretation ({}) says {}",
                            if h.mct { "with" } else { "without" },
                            c.form.name(),
                            if h.mct { "none" } else { "one" }
                        ),
                    ));
                }
            }
            if h.subsampling != (1, 1) {
                return Err(unsupported(
                    path,
                    format!(
                        "a JPEG 2000 component subsampled {} x {}; only full resolution is read",
                        h.subsampling.0, h.subsampling.1
                    ),
                ));
            }
            // Tiny tiles cost the decoder far more than the image (1 x 1 tiles: ~10 kB each).
            let (tw, th) = h.tile_size;
            if h.tiles > 1 && u64::from(tw) * u64::from(th) < 4096 {
                return Err(unsupported(
                    path,
                    format!(
                        "JPEG 2000 tiles of {tw} x {th} pixels ({} tiles); tiles of at least \
                         4096 pixels are read",
                        h.tiles
                    ),
                ));
            }
            if !j2k_tiles_present(cs, h.tiles) {
                return Err(corrupt(
                    path,
                    format!(
                        "JPEG 2000 data cut short or missing some of its {} tile(s)",
                        h.tiles
                    ),
                ));
            }
            Ok(Codec::J2k)
        }
        // Encapsulated uncompressed: the registry copies the fragments, sized by the header.
        // It reports every encapsulated colour frame as interleaved, so a colour one (planar
        // or 4:2:2 alike) would be read in the wrong order: refused.
        _ if l.colour.is_some() => Err(unsupported(
            path,
            format!("a colour image in transfer syntax {ts_uid} (encapsulated uncompressed); {TRANSCODE}"),
        )),
        _ => Ok(Codec::Registry),
    }
}

/// RLE: a 64-byte header of 16 little-endian u32: the segment count, then the offsets.
fn check_rle(first: &[u8], fragments: usize, l: &Layout, path: &Path) -> Result<(), ImageError> {
    let segments = l.bytes_per_sample() * l.samples();
    let word = |i: usize| {
        first
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let offsets: Option<Vec<usize>> = (1..=segments).map(word).collect();
    let ok = fragments == 1
        && first.len() >= 64
        && word(0) == Some(segments)
        && offsets.as_ref().is_some_and(|o| {
            o[0] == 64 && o.windows(2).all(|w| w[0] < w[1]) && o.iter().all(|&x| x < first.len())
        });
    if !ok {
        return Err(corrupt(
            path,
            format!(
                "RLE data of {} fragment(s) does not hold one frame of {segments} segment(s) \
                 with a valid header",
                fragments
            ),
        ));
    }
    Ok(())
}

/// A JPEG 2000 codestream's header, as far as the checks need it.
#[derive(Debug, PartialEq)]
struct J2kHeader {
    rows: usize,
    cols: usize,
    comps: u16,
    /// Whether every component has the first's precision, sign and subsampling.
    alike: bool,
    /// Whether the codestream applies a multiple-component (colour) transform, which the
    /// decoder undoes: its output is then RGB whatever the header says.
    mct: bool,
    /// The first component's precision in bits.
    precision: u16,
    /// Its subsampling (XRsiz, YRsiz).
    subsampling: (u8, u8),
    tiles: usize,
    tile_size: (u32, u32),
}

/// Reads the SIZ marker of a bare JPEG 2000 codestream (SOC then SIZ at byte 0, as DICOM
/// requires; a JP2 file wrapper is not taken: a box could hide a decoy header).
fn j2k_header(b: &[u8]) -> Option<J2kHeader> {
    if b.get(..4)? != [0xFF, 0x4F, 0xFF, 0x51] {
        return None;
    }
    let u16_at = |i: usize| Some(u16::from_be_bytes([*b.get(4 + i)?, *b.get(5 + i)?]));
    let u32_at = |i: usize| {
        Some(u32::from_be_bytes([
            *b.get(4 + i)?,
            *b.get(5 + i)?,
            *b.get(6 + i)?,
            *b.get(7 + i)?,
        ]))
    };
    // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz, then
    // Ssiz, XRsiz, YRsiz per component.
    let (xsiz, ysiz, xo, yo) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let (xt, yt, xto, yto) = (u32_at(20)?, u32_at(24)?, u32_at(28)?, u32_at(32)?);
    let comps = u16_at(36)?;
    let (ssiz, xr, yr) = (*b.get(4 + 38)?, *b.get(4 + 39)?, *b.get(4 + 40)?);
    // Every component's Ssiz, XRsiz and YRsiz (three bytes each, after Csiz).
    let alike = (1..usize::from(comps)).all(|c| {
        let at = 4 + 38 + 3 * c;
        b.get(at..at + 3) == Some(&[ssiz, xr, yr][..])
    });
    let cols = xsiz.checked_sub(xo)? as usize;
    let rows = ysiz.checked_sub(yo)? as usize;
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return None;
    }
    let across = (xsiz - xto).div_ceil(xt) as usize;
    let down = (ysiz - yto).div_ceil(yt) as usize;
    Some(J2kHeader {
        rows,
        cols,
        comps,
        alike,
        // A codestream without a COD is refused by the decoder; no transform is assumed here.
        mct: j2k_mct(b).unwrap_or(false),
        precision: u16::from(ssiz & 0x7F) + 1,
        subsampling: (xr, yr),
        tiles: across.checked_mul(down)?,
        tile_size: (xt, yt),
    })
}

/// The main header of a JPEG 2000 codestream (SOC, then marker segments up to the first
/// SOT): each segment's marker and offset, and the first SOT's offset; `None` if cut short.
fn j2k_main_header(b: &[u8]) -> Option<(Vec<(u8, usize)>, usize)> {
    let mut segments = Vec::new();
    let mut i = 2;
    loop {
        let (&ff, &m) = (b.get(i)?, b.get(i + 1)?);
        if ff != 0xFF {
            return None;
        }
        if m == 0x90 {
            return Some((segments, i));
        }
        segments.push((m, i));
        let len = b.get(i + 2..i + 4)?;
        i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
}

/// The COD marker's multiple-component transform flag (SGcod's fourth byte); `None`
/// without a COD in the main header.
fn j2k_mct(b: &[u8]) -> Option<bool> {
    let (segments, _) = j2k_main_header(b)?;
    let &(_, at) = segments.iter().find(|&&(m, _)| m == 0x52)?;
    // COD: Lcod, Scod, then SGcod: progression order, layers (2 bytes), MCT.
    Some(*b.get(at + 8)? != 0)
}

/// Whether every one of `tiles` tiles has a tile-part in the codestream `b`, each within the
/// data, and the last followed by EOC (openjp2 fills a missing or cut tile with zeros and
/// says nothing).
fn j2k_tiles_present(b: &[u8], tiles: usize) -> bool {
    let Some((_, mut i)) = j2k_main_header(b) else {
        return false;
    };
    let mut seen = vec![false; tiles];
    while b.get(i..i + 2) == Some(&[0xFF, 0x90]) {
        // SOT: Lsot (10), Isot, Psot (from this marker, 0: up to EOC), TPsot, TNsot.
        let Some(sot) = b.get(i + 2..i + 12) else {
            return false;
        };
        let isot = usize::from(u16::from_be_bytes([sot[2], sot[3]]));
        let psot = u32::from_be_bytes([sot[4], sot[5], sot[6], sot[7]]) as usize;
        match seen.get_mut(isot) {
            Some(s) => *s = true,
            None => return false,
        }
        if psot == 0 {
            // The last tile-part runs to EOC, which must end the data (a fragment may add
            // one byte of padding): a cut codestream does not reach it.
            let end = b.strip_suffix(&[0]).unwrap_or(b);
            return end.ends_with(&[0xFF, 0xD9]) && end.len() >= i + 14 && seen.iter().all(|&s| s);
        }
        if psot < 14 || i + psot > b.len() {
            return false;
        }
        i += psot;
    }
    // After the last tile-part: EOC.
    b.get(i..i + 2) == Some(&[0xFF, 0xD9]) && seen.iter().all(|&s| s)
}

/// Whether `b` is one JPEG stream followed by nothing but zero padding: its marker segments
/// walked from SOI, the entropy-coded data after each SOS skipped (there FF is followed by 00,
/// a restart marker or fill), up to its EOI.
fn one_jpeg_stream(b: &[u8]) -> bool {
    let end = || -> Option<usize> {
        if !b.starts_with(&[0xFF, 0xD8]) {
            return None;
        }
        let mut i = 2;
        loop {
            while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
                i += 1; // fill bytes
            }
            if *b.get(i)? != 0xFF {
                return None;
            }
            let m = *b.get(i + 1)?;
            match m {
                0xD9 => return Some(i + 2),
                0x01 | 0xD0..=0xD7 => {
                    i += 2; // markers without a length
                    continue;
                }
                _ => {}
            }
            let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
            if len < 2 {
                return None;
            }
            i += 2 + len;
            if m == 0xDA {
                // Entropy-coded data up to the next marker.
                while *b.get(i)? != 0xFF || matches!(*b.get(i + 1)?, 0x00 | 0xD0..=0xD7) {
                    i += 1;
                }
            }
        }
    };
    end().is_some_and(|e| b[e..].iter().all(|&x| x == 0))
}

/// The first marker segment of a JPEG stream, up to and including its first scan header
/// (SOS), for which `wanted(marker, body)` holds: its marker and body (what follows the
/// length); `None` if there is none or the stream is cut short.
fn jpeg_segment(b: &[u8], wanted: impl Fn(u8, &[u8]) -> bool) -> Option<(u8, &[u8])> {
    let mut i = 2; // after SOI
    loop {
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1; // fill bytes
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
        if len < 2 {
            return None;
        }
        let body = b.get(i + 4..i + 2 + len)?;
        if wanted(marker, body) {
            return Some((marker, body));
        }
        if marker == 0xDA {
            return None;
        }
        i += 2 + len;
    }
}

/// The frame header (SOFn) of a JPEG stream: its marker, precision, rows, columns,
/// components.
fn jpeg_frame(b: &[u8]) -> Option<(u8, u8, usize, usize, u8)> {
    // SOF0..SOF15 but DHT, JPG and DAC; SOF55 is JPEG-LS's.
    let sof = |m: u8| (matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)) || m == 0xF7;
    // Scan data before any frame header: none.
    let (marker, seg) = jpeg_segment(b, |m, _| sof(m))?;
    let rows = usize::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
    let cols = usize::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
    Some((marker, *seg.first()?, rows, cols, *seg.get(5)?))
}

/// A colour JPEG stream whose own markers say nothing of its colour space (no JFIF APP0,
/// no Adobe APP14 before its first scan) gets an Adobe marker saying what the header's
/// PhotometricInterpretation says (PS3.5 8.2.1): RGB untransformed, YBR_* as YCbCr.
/// Left alone, libjpeg-turbo would guess from the component ids and take a lossy RGB
/// stream with ids 1, 2, 3 for YCbCr (pydicom's SC_jpeg_no_color_transform.dcm). A stream
/// that says its colour space is believed, as pydicom does.
fn jpeg_colour_said(b: &[u8], form: ColourForm) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    // Whether a JFIF APP0 or an Adobe APP14 comes before the first scan.
    let said = jpeg_segment(b, |m, body| {
        m == 0xDA
            || (m == 0xE0 && body.starts_with(b"JFIF\0"))
            || (m == 0xEE && body.starts_with(b"Adobe"))
    })
    .map(|(m, _)| m != 0xDA);
    if said != Some(false) || !b.starts_with(&[0xFF, 0xD8]) {
        return Cow::Borrowed(b);
    }
    let transform = u8::from(form != ColourForm::Rgb);
    // APP14 "Adobe": version 100, two flag words, then the transform (0 RGB, 1 YCbCr).
    let adobe = [
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
        transform,
    ];
    let mut out = Vec::with_capacity(b.len() + adobe.len());
    out.extend_from_slice(&b[..2]);
    out.extend_from_slice(&adobe);
    out.extend_from_slice(&b[2..]);
    Cow::Owned(out)
}

/// Whether a JPEG-LS stream's first scan (SOS) holds one component: interleave mode none,
/// a scan per component.
fn jpeg_ls_scan_per_component(b: &[u8]) -> bool {
    // SOS: Ns, the scan's component count, first.
    jpeg_segment(b, |m, _| m == 0xDA).and_then(|(_, sos)| sos.first().copied()) == Some(1)
}

/// A DICOM whose attributes and pixel layout an output takes (`--like`): read once, up to
/// its pixel data, and checked like an input.
#[derive(Debug, Clone)]
pub struct DicomTemplate {
    path: PathBuf,
    obj: InMemDicomObject,
    layout: Layout,
    derivation: String,
    /// A derived series the output goes in, and what was done (for its description),
    /// instead of the template's own series.
    series: Option<(DerivedSeries, String)>,
    intensity: Intensity,
    /// The window the pixels to write are on, with the template's own stored values (every
    /// frame's, in order): what the window clipped is written back from them. `None`: the
    /// container's full range.
    window: Option<(Window, Vec<i32>)>,
}

/// Where a slice sits in its series: what orders a folder of slices.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesFacts {
    pub series_uid: Option<String>,
    pub instance: Option<i64>,
    /// ImagePositionPatient along the slice normal (from ImageOrientationPatient).
    pub position: Option<f64>,
}

impl DicomTemplate {
    /// Reads and checks the template at `path`: a grayscale DICOM as [`super::load`] (or,
    /// of several frames, [`super::load_frames`]) takes; its pixel data is neither read nor
    /// needed.
    pub fn read(path: impl AsRef<Path>) -> Result<DicomTemplate, ImageError> {
        let path = path.as_ref();
        DicomTemplate::from_bytes(&super::read_file(path)?, path)
    }

    /// [`Self::read`] of a file's bytes, already read (`path` names them in errors, and is
    /// where [`Self::with_window`] would read them again).
    fn from_bytes(bytes: &[u8], path: &Path) -> Result<DicomTemplate, ImageError> {
        if Format::sniff(bytes) != Some(Format::Dicom) {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                format: Format::Dicom,
                detail: "not a DICOM file (no DICM at byte 128); a DICOM output is written \
                         like a DICOM input"
                    .into(),
            });
        }
        let obj = parse(bytes, path, false)?;
        // A colour template is written by [`Self::encode_colour`] only.
        let layout = layout_of(&obj, path, true)?;
        let intensity = intensity(&obj, &layout, path)?;
        Ok(DicomTemplate {
            path: path.to_path_buf(),
            obj: obj.into_inner(),
            layout,
            derivation: "Processed by ppdenoise".into(),
            series: None,
            intensity,
            window: None,
        })
    }

    /// The template's own pixels on the window [`Self::with_window`] set, frame by frame
    /// (`None` without one): the noisy image the receiver holds, to check a result against.
    pub fn windowed_frames(&self) -> Option<Vec<Array2<f64>>> {
        let (w, stored) = self.window.as_ref()?;
        let l = &self.layout;
        Some(
            stored
                .chunks_exact(l.rows * l.cols)
                .map(|f| {
                    let v = f.iter().map(|&t| self.intensity.to_scale(t, w)).collect();
                    Array2::from_shape_vec((l.rows, l.cols), v).expect("sized from the layout")
                })
                .collect(),
        )
    }

    /// A noise level of `level` on the 0..255 scale of the window [`Self::with_window`]
    /// set, in the image's units as `--sigma` takes them (`20 HU`, `40 SV`); `None` without
    /// a window.
    pub fn sigma_words(&self, level: f64) -> Option<String> {
        let (w, _) = self.window.as_ref()?;
        let v = level * w.per_level();
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Some(match self.intensity.units() {
            Units::Hu => format!("{} HU", round(v)),
            _ => format!("{} SV", round(v / self.intensity.slope)),
        })
    }

    /// The template's rescale and modality.
    pub fn intensity(&self) -> &Intensity {
        &self.intensity
    }

    /// What is written is on the window `choice` resolves to for the template's own pixels
    /// (the image the gateway shared, so the same window), and the pixels that window
    /// clipped are written back from the template unchanged. Reads the template's pixels
    /// (once, here); the window it resolved to comes back with the template.
    pub fn with_window(
        mut self,
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        if *choice == WindowChoice::Full {
            self.window = None;
            return Ok((self, None));
        }
        let bytes = super::read_file(&self.path)?;
        self.window_of(&bytes, choice)
    }

    /// The template of a file's `bytes`, already read (e.g. hashed, to compare with what was
    /// shared), on the window `choice` resolves to ([`Self::with_window`]): the header and
    /// the pixels both come from these bytes, never from the file opened again, so what was
    /// checked is what is used. `path` names the file in errors.
    pub fn from_bytes_windowed(
        bytes: &[u8],
        path: &Path,
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        let t = DicomTemplate::from_bytes(bytes, path)?;
        if *choice == WindowChoice::Full {
            return Ok((t, None));
        }
        t.window_of(bytes, choice)
    }

    /// [`Self::with_window`] with the file's bytes given.
    fn window_of(
        mut self,
        bytes: &[u8],
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        let (frames, intensity) = decode_all(bytes, &self.path, true)?;
        let same = frames.len() == self.layout.frames
            && frames
                .iter()
                .all(|f| f.pixels.dim() == (self.layout.rows, self.layout.cols));
        if intensity != self.intensity || !same {
            return Err(corrupt(&self.path, "the file changed while it was read"));
        }
        let stored = intensity.stored_of_frames(&frames);
        let window = intensity
            .resolve(choice, &stored)
            .map_err(|e| unsupported(&self.path, e))?;
        self.window = window.map(|w| (w, stored));
        Ok((self, window))
    }

    /// Puts what is written in the derived series `series` (one per run, shared by a study's
    /// slices) instead of the template's series, described by what was done (`what`, e.g.
    /// `denoised, ffdnet-clip, sigma 25`) unless the series has its own description.
    pub fn in_series(mut self, series: &DerivedSeries, what: &str) -> DicomTemplate {
        self.series = Some((series.clone(), what.to_string()));
        self
    }

    /// The slice's series, instance number and position along the slice normal.
    pub fn series_facts(&self) -> SeriesFacts {
        let floats = |tag| {
            self.obj
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_float64().ok())
                .filter(|v| v.iter().all(|x| x.is_finite()))
        };
        let position = match (
            floats(tags::IMAGE_POSITION_PATIENT),
            floats(tags::IMAGE_ORIENTATION_PATIENT),
        ) {
            (Some(p), Some(o)) if p.len() == 3 && o.len() == 6 => {
                let n = [
                    o[1] * o[5] - o[2] * o[4],
                    o[2] * o[3] - o[0] * o[5],
                    o[0] * o[4] - o[1] * o[3],
                ];
                Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
            }
            _ => None,
        };
        SeriesFacts {
            series_uid: str_attr(&self.obj, tags::SERIES_INSTANCE_UID).filter(|s| !s.is_empty()),
            instance: str_attr(&self.obj, tags::INSTANCE_NUMBER).and_then(|s| s.parse().ok()),
            position,
        }
    }

    /// Sets the Derivation Description of what is written (up to 1024 characters kept).
    pub fn with_derivation(mut self, text: impl Into<String>) -> DicomTemplate {
        self.derivation = text.into().chars().take(1024).collect();
        self
    }

    /// Whether the template is a colour image (written by [`Self::encode_colour`]).
    pub fn is_colour(&self) -> bool {
        self.layout.colour.is_some()
    }

    /// The template's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// BitsStored of the template (and of what is written).
    pub fn bits_stored(&self) -> u16 {
        self.layout.bits_stored
    }

    /// Rows and columns.
    pub fn dim(&self) -> (usize, usize) {
        (self.layout.rows, self.layout.cols)
    }

    /// What a file written like this template holds for `pixels`, on the 0..255 scale.
    pub fn quantize(&self, pixels: &Array2<f64>) -> Array2<f64> {
        let l = &self.layout;
        match &self.window {
            None => pixels.mapv(|x| l.scale_of(l.stored_of(x))),
            // One frame's worth: the first frame's template values.
            Some((w, stored)) if stored.len() >= pixels.len() => {
                let i = &self.intensity;
                let mut out = pixels.clone();
                for (x, &t) in out.iter_mut().zip(stored) {
                    *x = i.to_scale(i.stored_for(*x, w, t), w);
                }
                out
            }
            Some(_) => pixels.mapv(|x| l.scale_of(l.stored_of(x))),
        }
    }

    /// How many frames the template has (and an output like it must have).
    pub fn frames(&self) -> usize {
        self.layout.frames
    }

    /// Encodes `frames` (checked by the caller: no NaN), one per frame of the template, as a
    /// derived DICOM of this template.
    pub(super) fn encode(&self, frames: &[GrayImage], path: &Path) -> Result<Vec<u8>, ImageError> {
        let l = &self.layout;
        let fail = |detail: String| ImageError::Encode {
            path: path.to_path_buf(),
            format: Format::Dicom,
            detail,
        };
        if l.colour.is_some() {
            return Err(fail(format!(
                "the template {} is a colour image; the image written is gray",
                self.path.display()
            )));
        }
        if frames.len() != l.frames {
            return Err(fail(format!(
                "{} image(s) for the {} frame(s) of the template {}",
                frames.len(),
                l.frames,
                self.path.display()
            )));
        }
        if let Some(img) = frames.iter().find(|f| f.pixels.dim() != (l.rows, l.cols)) {
            return Err(fail(format!(
                "the image is {} x {} pixels but the template {} is {} x {}",
                img.height(),
                img.width(),
                self.path.display(),
                l.rows,
                l.cols
            )));
        }
        let (mut obj, sop_class, sop_instance) = self.derived_object();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(us(tags::BITS_ALLOCATED, l.bits_allocated));
        obj.put(us(tags::BITS_STORED, l.bits_stored));
        obj.put(us(tags::HIGH_BIT, l.bits_stored - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, u16::from(l.signed)));
        let stored: Vec<i32> = match &self.window {
            None => frames
                .iter()
                .flat_map(|f| f.pixels.iter())
                .map(|&x| l.stored_of(x))
                .collect(),
            Some((w, template)) => frames
                .iter()
                .flat_map(|f| f.pixels.iter())
                .zip(template)
                .map(|(&x, &t)| self.intensity.stored_for(x, w, t))
                .collect(),
        };
        let syntax = self
            .series
            .as_ref()
            .map_or(OutputSyntax::ExplicitLe, |(s, _)| s.syntax);
        let samples = compress::Samples {
            rows: l.rows,
            cols: l.cols,
            frames: l.frames,
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            signed: l.signed,
            stored: &stored,
        };
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.unwrap_or_default())
            .media_storage_sop_instance_uid(sop_instance);
        compress::write(obj, &samples, syntax, meta).map_err(fail)
    }

    /// Encodes colour images (one per frame of the template, checked by the caller: no NaN)
    /// as a derived DICOM of this colour template: the derived attributes of
    /// [`Self::encode`], and the pixels as RGB, PlanarConfiguration 0, at the template's bits
    /// allocated and stored (8 for every YBR form), explicit VR little endian: a form any
    /// colour viewer reads, whatever the source's (a lossy JPEG is not encoded again; its
    /// Lossy Image Compression flag is kept). A multi-frame template takes all its frames.
    pub(super) fn encode_colour(
        &self,
        frames: &[ColourImage],
        path: &Path,
    ) -> Result<Vec<u8>, ImageError> {
        let l = &self.layout;
        let fail = |detail: String| ImageError::Encode {
            path: path.to_path_buf(),
            format: Format::Dicom,
            detail,
        };
        if l.colour.is_none() {
            return Err(fail(format!(
                "the template {} is a gray image; the image written is colour",
                self.path.display()
            )));
        }
        if l.frames != frames.len() {
            return Err(fail(format!(
                "{} colour image(s) for the {} frame(s) of the template {}",
                frames.len(),
                l.frames,
                self.path.display()
            )));
        }
        if let Some(img) = frames
            .iter()
            .find(|img| (img.height(), img.width()) != (l.rows, l.cols))
        {
            return Err(fail(format!(
                "the image is {} x {} pixels but the template {} is {} x {}",
                img.height(),
                img.width(),
                self.path.display(),
                l.rows,
                l.cols
            )));
        }
        let syntax = self
            .series
            .as_ref()
            .map_or(OutputSyntax::ExplicitLe, |(s, _)| s.syntax);
        if syntax != OutputSyntax::ExplicitLe {
            return Err(fail(
                "a colour DICOM is written uncompressed (explicit VR little endian); leave \
                 --transfer-syntax out"
                    .into(),
            ));
        }
        let (mut obj, sop_class, sop_instance) = self.derived_object();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 3));
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
        obj.put(us(tags::PLANAR_CONFIGURATION, 0));
        obj.put(us(tags::BITS_ALLOCATED, l.bits_allocated));
        obj.put(us(tags::BITS_STORED, l.bits_stored));
        obj.put(us(tags::HIGH_BIT, l.bits_stored - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        let (h, w) = (l.rows, l.cols);
        // Frame after frame, R G B pixel by pixel, as rows of 3w samples.
        let stored: Vec<i32> = frames
            .iter()
            .flat_map(|img| {
                (0..h * w * 3).map(move |k| {
                    let (i, c) = (k / 3, k % 3);
                    l.stored_of(img.planes[[c * h + i / w, i % w]])
                })
            })
            .collect();
        let samples = compress::Samples {
            rows: h,
            cols: w * 3,
            frames: frames.len(),
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            signed: false,
            stored: &stored,
        };
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.unwrap_or_default())
            .media_storage_sop_instance_uid(sop_instance);
        compress::write(obj, &samples, OutputSyntax::ExplicitLe, meta).map_err(fail)
    }

    /// The template's data set as a derived image's (new SOP instance, DERIVED\SECONDARY,
    /// Source Image Sequence, the derived series, stale attributes dropped), pixel
    /// attributes and data still the template's; with its SOP class and new SOP instance.
    fn derived_object(&self) -> (InMemDicomObject, Option<String>, String) {
        let mut obj = self.obj.clone();
        let sop_instance = new_uid();
        let sop_class = str_attr(&obj, tags::SOP_CLASS_UID);
        let source_instance = str_attr(&obj, tags::SOP_INSTANCE_UID);
        if let (Some(class), Some(instance)) = (&sop_class, &source_instance) {
            let item = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(class.as_str()),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(instance.as_str()),
                ),
            ]);
            obj.put(DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        }
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance.as_str()),
        ));
        let mut image_type = vec!["DERIVED".to_string(), "SECONDARY".to_string()];
        if let Some(e) = obj.element_opt(tags::IMAGE_TYPE).ok().flatten() {
            if let Ok(old) = e.to_multi_str() {
                image_type.extend(old.iter().skip(2).map(|s| s.trim().to_string()));
            }
        }
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(image_type.into_iter().collect()),
        ));
        let how = self.derivation.as_str();
        match &self.series {
            Some((series, what)) => derived::stamp(&mut obj, series, (what, how), true),
            None => derived::stamp(&mut obj, &DerivedSeries::new(""), ("", how), false),
        }
        // No longer true of the new pixels, or of the new encoding; group lengths (retired)
        // would be stale.
        let stale: Vec<Tag> = obj
            .iter()
            .map(|e| e.header().tag)
            .filter(|t| {
                t.1 == 0x0000
                    || [
                        tags::SMALLEST_IMAGE_PIXEL_VALUE,
                        tags::LARGEST_IMAGE_PIXEL_VALUE,
                        tags::EXTENDED_OFFSET_TABLE,
                        tags::EXTENDED_OFFSET_TABLE_LENGTHS,
                    ]
                    .contains(t)
            })
            .collect();
        for t in stale {
            obj.remove_element(t);
        }
        (obj, sop_class, sop_instance)
    }
}

thread_local! {
    /// Whether a panic on this thread is caught by [`quietly`] (and not to be printed).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts the quiet test in front of the process's panic hook.
fn wrap_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET.with(|q| q.get()) {
            prev(info)
        }
    }));
}

/// Runs `f`, turning a panic into an `Err` without a panic message. The process's panic
/// hook is wrapped once (it stays in charge of every other panic); decoders on several
/// threads used to take and put back the hook in turns, so one could put back another's
/// silent hook for good.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAP: std::sync::Once = std::sync::Once::new();
    WRAP.call_once(wrap_panic_hook);
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r
}

/// Whether `s` is a valid UID: 1 to 64 characters, numeric components separated by dots,
/// none empty or with a leading zero.
pub fn valid_uid(s: &str) -> bool {
    s.len() <= 64
        && s.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

/// A new UID under the `2.25` arc: a random (version 4) UUID as a decimal integer.
pub fn new_uid() -> String {
    let mut u: u128 = rand::random();
    u = (u & !(0xF << 76)) | (0x4 << 76); // version 4
    u = (u & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    format!("2.25.{u}")
}

#[cfg(test)]
mod stream_tests;

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

    fn layout(bits_stored: u16, signed: bool, monochrome1: bool) -> Layout {
        Layout {
            rows: 1,
            cols: 1,
            frames: 1,
            bits_allocated: if bits_stored <= 8 { 8 } else { 16 },
            bits_stored,
            signed,
            monochrome1,
            colour: None,
        }
    }

    #[test]
    fn every_stored_value_round_trips_through_the_scale() {
        for bs in [1u16, 7, 8, 10, 12, 15, 16] {
            for signed in [false, true] {
                for mono1 in [false, true] {
                    let l = layout(bs, signed, mono1);
                    let lo = -l.offset();
                    let hi = lo + (1 << bs) - 1;
                    for v in lo..=hi {
                        let x = l.scale_of(v);
                        assert!((0.0..=255.0).contains(&x), "{bs} {signed} {mono1} {v}: {x}");
                        assert_eq!(l.stored_of(x), v, "{bs} bits signed {signed} mono1 {mono1}");
                    }
                    // The ends of the stored range are the ends of the scale.
                    let (black, white) = if mono1 { (hi, lo) } else { (lo, hi) };
                    assert_eq!((l.scale_of(black), l.scale_of(white)), (0.0, 255.0));
                    // Out-of-range values clamp to the stored range.
                    assert_eq!(l.stored_of(-40.0), black);
                    assert_eq!(l.stored_of(300.0), white);
                }
            }
        }
    }

    #[test]
    fn sixteen_bit_unsigned_is_the_png_rule_and_raw_samples_are_masked() {
        let l = layout(16, false, false);
        for v in [0, 1, 257, 12345, 65535] {
            assert_eq!(l.scale_of(v), f64::from(v) / 257.0);
        }
        // 12 bits signed in 16: the upper 4 bits (sign extension or overlay) are ignored.
        let l = layout(12, true, false);
        assert_eq!(l.stored_from_raw(0xF800), -2048);
        assert_eq!(l.stored_from_raw(0x0800), -2048);
        assert_eq!(l.stored_from_raw(0x07FF), 2047);
        assert_eq!(l.stored_from_raw(0xFFFF), -1);
        let l = layout(12, false, false);
        assert_eq!(l.stored_from_raw(0xF123), 0x123);
    }

    /// Quiet decoding on many threads at once leaves the process's hook in charge of every
    /// other panic, and prints none of its own.
    #[test]
    fn quiet_decoding_keeps_the_process_panic_hook() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        const QUIET_PANIC: &str = "ppdenoise quiet-decoding test: quiet";
        const LOUD_PANIC: &str = "ppdenoise quiet-decoding test: loud";
        let (quiet_seen, loud_seen) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        quietly(|| ()).unwrap(); // the process's own wrapper is in place (restored below)
        let prev = std::panic::take_hook();
        let (q, l) = (Arc::clone(&quiet_seen), Arc::clone(&loud_seen));
        std::panic::set_hook(Box::new(move |info| {
            match info.payload().downcast_ref::<&str>() {
                Some(&m) if m == QUIET_PANIC => q.fetch_add(1, Ordering::SeqCst),
                Some(&m) if m == LOUD_PANIC => l.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }));
        // The recorder stands for the process's hook: wrapped as quietly's first call does.
        wrap_panic_hook();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200 {
                        assert!(quietly(|| std::panic::panic_any(QUIET_PANIC)).is_err());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let loud = std::panic::catch_unwind(|| std::panic::panic_any(LOUD_PANIC));
        std::panic::set_hook(prev);
        assert!(loud.is_err());
        assert_eq!(
            loud_seen.load(Ordering::SeqCst),
            1,
            "the process hook was lost"
        );
        assert_eq!(
            quiet_seen.load(Ordering::SeqCst),
            0,
            "a quiet panic was printed"
        );
    }

    #[test]
    fn new_uids_are_valid_and_distinct() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        for u in [a, b] {
            assert!(u.starts_with("2.25.") && u.len() <= 64, "{u}");
            assert!(u[5..].bytes().all(|c| c.is_ascii_digit()) && !u[5..].starts_with('0'));
        }
    }
}
