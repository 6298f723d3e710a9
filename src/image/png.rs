//! PNG: 8- or 16-bit, grayscale in (colour with `--as-gray` only, see [`super::colour`]);
//! grayscale out.

use std::path::Path;

use ::image::codecs::png::PngEncoder;
use ::image::ImageFormat;

use super::{Format, GrayImage, ImageError};

/// The eight bytes every PNG file starts with.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Decodes PNG bytes (grayscale, grayscale+alpha, RGB, RGBA or palette; 8 or 16 bits);
/// `path` is only used in error messages. The `image` crate's default limits bound what a
/// crafted header can make it allocate.
pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<GrayImage, ImageError> {
    super::decode_with_image(
        bytes,
        ImageFormat::Png,
        path,
        Format::Png,
        super::colour::as_gray(),
    )
}

/// Encodes `img` (checked by the caller: no NaN, sides that fit) as a grayscale PNG of
/// `depth` 8 or 16 bits with the rounding of [`super::save_png`].
pub(super) fn encode(img: &GrayImage, path: &Path, depth: u8) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    super::encode_with_image(img, path, depth, Format::Png, &mut bytes, PngEncoder::new)?;
    Ok(bytes)
}

/// 8-bit samples: rounded (half away from zero) and clamped to 0..=255, row-major.
pub(super) fn to_u8(img: &GrayImage) -> Vec<u8> {
    img.pixels
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// 16-bit samples: times 257, rounded and clamped to 0..=65535, row-major.
pub(super) fn to_u16(img: &GrayImage) -> Vec<u16> {
    img.pixels
        .iter()
        .map(|&v| (v * 257.0).round().clamp(0.0, 65535.0) as u16)
        .collect()
}
