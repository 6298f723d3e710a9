//! The attributes a DICOM is read by: its pixel layout ([`Layout`], checked once, refused by
//! name where it is not read here), the integer and string attributes behind it, and UIDs.
//! Apart because every other job (intensities, decoding, writing) starts from a checked
//! layout.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{corrupt, unsupported};
use crate::image::{ImageError, MAX_PIXELS};

/// Most frames read from one object (a study's slice limit).
const MAX_FRAMES: usize = 100_000;

/// The pixel layout of a DICOM, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// NumberOfFrames (1 when absent): every frame is `rows x cols`.
    pub(super) frames: usize,
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    pub(super) monochrome1: bool,
    /// Three samples per pixel, and how they are stored; `None` for grayscale.
    pub(super) colour: Option<Colour>,
}

/// A colour image's PhotometricInterpretation (SamplesPerPixel 3) and PlanarConfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Colour {
    pub(super) form: ColourForm,
    /// PlanarConfiguration 1: all R (or Y) samples of a frame, then G, then B.
    pub(super) planar: bool,
}

/// The colour photometric interpretations read (PS3.3 C.7.6.3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColourForm {
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

    pub(super) fn name(&self) -> &'static str {
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
    pub(super) fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    /// Samples per pixel: 1 or 3.
    pub(super) fn samples(&self) -> usize {
        if self.colour.is_some() {
            3
        } else {
            1
        }
    }

    /// Whether native (not encapsulated) data holds a YBR_FULL_422 frame in its subsampled
    /// form, two samples per pixel.
    pub(super) fn subsampled(&self, native: bool) -> bool {
        native
            && self
                .colour
                .is_some_and(|c| c.form == ColourForm::YbrFull422)
    }

    /// Samples one frame holds: `native` as stored, else as a decoder gives them.
    pub(super) fn frame_samples(&self, native: bool) -> usize {
        let per_pixel = if self.subsampled(native) {
            2
        } else {
            self.samples()
        };
        self.rows * self.cols * per_pixel
    }
}

/// An integer attribute, `None` when absent.
pub(super) fn int_attr(
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
pub(super) fn str_attr(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    Some(e.to_str().ok()?.trim().to_string())
}

/// Checks the attributes of a grayscale image and returns its layout; a colour one is
/// refused by name.
pub(super) fn layout(obj: &InMemDicomObject, path: &Path) -> Result<Layout, ImageError> {
    layout_of(obj, path, false)
}

/// The words a colour DICOM is refused with where only grayscale is taken.
const GRAY_ONLY: &str = "only grayscale (MONOCHROME1 or MONOCHROME2) is read here: a colour \
                         DICOM is taken with a colour model (share-image, share-study, \
                         reconstruct, denoise, table: docs/dicom.md) and by add-noise and \
                         metrics, not by a gray model or with a --window";

/// Checks the attributes of an image and returns its layout: grayscale, or (`colour_ok`)
/// colour too (see docs/dicom.md for the colour forms read).
pub(super) fn layout_of(
    obj: &InMemDicomObject,
    path: &Path,
    colour_ok: bool,
) -> Result<Layout, ImageError> {
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
mod tests {
    use super::*;

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
