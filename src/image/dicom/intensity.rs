//! Intensities: how a stored value maps onto the model's 0..255 scale (the full-range rule,
//! see the module doc of [`super`]) and into the image's own units through the rescale
//! ([`Intensity`]: Hounsfield units for a CT). Apart because it is arithmetic on checked
//! attributes, shared by decoding, windows and writing.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::attributes::{str_attr, Layout};
use super::corrupt;
use crate::image::window::{auto_window, Units, Window, WindowChoice, CT_WINDOW};
use crate::image::{GrayImage, ImageError};

// The stored value <-> 0..255 rule is the layout's, but it is an intensity rule, so it
// is kept with the others (the layout itself: attributes.rs).
impl Layout {
    /// `M = 2^b - 1`, the largest unsigned stored code.
    pub(super) fn max(&self) -> f64 {
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

    /// A stored value on the 0..255 scale (see the module doc of [`super`]).
    pub(super) fn scale_of(&self, stored: i32) -> f64 {
        let mut u = f64::from(stored + self.offset());
        if self.monochrome1 {
            u = self.max() - u;
        }
        u * 255.0 / self.max()
    }

    /// The stored value for a 0..255-scale value: rounded, clamped to the stored range.
    pub(super) fn stored_of(&self, x: f64) -> i32 {
        let mut u = (x * self.max() / 255.0).round().clamp(0.0, self.max());
        if self.monochrome1 {
            u = self.max() - u;
        }
        u as i32 - self.offset()
    }

    /// A stored value from a raw sample: the low `b` bits, sign-extended when signed.
    pub(super) fn stored_from_raw(&self, raw: u16) -> i32 {
        let b = self.bits_stored;
        let v = i32::from(raw) & ((1 << b) - 1);
        if self.signed && v & (1 << (b - 1)) != 0 {
            v - (1 << b)
        } else {
            v
        }
    }
}

/// How a DICOM's stored values become values in its own units (the modality LUT's linear
/// rescale: Hounsfield units for a CT), and back; what [`crate::image::window`] needs of a file.
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
pub(super) fn intensity(
    obj: &InMemDicomObject,
    l: &Layout,
    path: &Path,
) -> Result<Intensity, ImageError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
