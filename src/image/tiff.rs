//! TIFF, as microscopy uses it: one page, 8- or 16-bit grayscale (colour refused, or with
//! `--as-gray` converted like PNG); written as one grayscale page, 8 or 16 bits. Decoding and encoding go through the
//! `image` crate; the `tiff` crate (the one `image` uses) is asked only how many pages
//! there are, since `image` would silently read the first page of a stack.

use std::io::Cursor;
use std::path::Path;

use ::image::codecs::tiff::TiffEncoder;
use ::image::ImageFormat;

use super::{Format, GrayImage, ImageError};

/// Decodes a single-page TIFF; `path` is only used in error messages. A stack (several
/// pages) is refused rather than cut to its first page.
pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<GrayImage, ImageError> {
    check_single_page(bytes, path)?;
    super::decode_with_image(
        bytes,
        ImageFormat::Tiff,
        path,
        Format::Tiff,
        super::colour::as_gray(),
    )
}

/// Refuses a stack (several pages) rather than let it be cut to its first page.
pub(super) fn check_single_page(bytes: &[u8], path: &Path) -> Result<(), ImageError> {
    let corrupt = |detail: String| ImageError::Corrupt {
        path: path.to_path_buf(),
        format: Format::Tiff,
        detail,
    };
    let pages =
        ::tiff::decoder::Decoder::new(Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    if pages.more_images() {
        return Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            format: Format::Tiff,
            detail: "several pages (a stack); only single-page images are read".into(),
        });
    }
    Ok(())
}

/// Encodes `img` (checked by the caller) as a one-page grayscale TIFF of `depth` 8 or 16
/// bits, with the rounding of PNG.
pub(super) fn encode(img: &GrayImage, path: &Path, depth: u8) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    super::encode_with_image(img, path, depth, Format::Tiff, &mut bytes, |b| {
        TiffEncoder::new(Cursor::new(b))
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::{load, Encoding};
    use super::*;
    use ::tiff::encoder::{colortype, TiffEncoder as RawTiffEncoder};
    use ndarray::{array, Array2};

    fn ramp(h: usize, w: usize) -> GrayImage {
        GrayImage::new(
            Array2::from_shape_fn((h, w), |(r, c)| ((r * 31 + c * 7) % 256) as f64),
            8,
        )
    }

    #[test]
    fn eight_and_sixteen_bit_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let img = ramp(13, 21);
        let p = dir.path().join("a.tif");
        Encoding::Tiff(8).save(&img, &p).unwrap();
        assert_eq!(Format::of_file(&p), Some(Format::Tiff));
        let back = load(&p).unwrap();
        assert_eq!((back.bit_depth, &back.pixels), (8, &img.pixels));
        // The file holds width 21, height 13 as TIFF sees it.
        let raw = ::image::open(&p).unwrap();
        assert_eq!((raw.width(), raw.height()), (21, 13));

        // 16 bits: k/257 values are exact; out-of-range values clamp.
        let img = GrayImage::new(
            array![
                [0.0, 1.0 / 257.0, 100.0 + 13.0 / 257.0],
                [255.0, 300.0, -1.0]
            ],
            16,
        );
        let p = dir.path().join("b.tiff");
        Encoding::Tiff(16).save(&img, &p).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.bit_depth, 16);
        let raw = ::image::open(&p).unwrap().into_luma16();
        assert_eq!(raw.as_raw(), &vec![0u16, 1, 25713, 65535, 65535, 0]);
        assert_eq!(back.pixels, Encoding::Tiff(16).quantize(&img.pixels));
        // quantize says what the file holds.
        assert_eq!(
            Encoding::Tiff(8).quantize(&array![[0.4, 254.6]]),
            array![[0.0, 255.0]]
        );
    }

    #[test]
    fn stacks_floats_and_damage_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        // Two pages (a microscopy stack).
        let mut bytes = Vec::new();
        {
            let mut enc = RawTiffEncoder::new(Cursor::new(&mut bytes)).unwrap();
            enc.write_image::<colortype::Gray8>(4, 3, &[7u8; 12])
                .unwrap();
            enc.write_image::<colortype::Gray8>(4, 3, &[9u8; 12])
                .unwrap();
        }
        let stack = dir.path().join("stack.tif");
        std::fs::write(&stack, &bytes).unwrap();
        let e = load(&stack).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::Unsupported {
                    format: Format::Tiff,
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("stack.tif") && msg.contains("several pages"),
            "{msg}"
        );

        // 32-bit float samples.
        let mut bytes = Vec::new();
        RawTiffEncoder::new(Cursor::new(&mut bytes))
            .unwrap()
            .write_image::<colortype::Gray32Float>(2, 2, &[0.5f32; 4])
            .unwrap();
        let float = dir.path().join("float.tif");
        std::fs::write(&float, &bytes).unwrap();
        let e = load(&float).unwrap_err();
        assert!(matches!(e, ImageError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("float.tif"), "{e}");

        // Cut in half.
        let good = dir.path().join("good.tif");
        Encoding::Tiff(8).save(&ramp(40, 40), &good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.tif");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&cut).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::Corrupt {
                    format: Format::Tiff,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("cut.tif"), "{e}");

        // A bit depth TIFF does not take.
        let e = Encoding::Tiff(12)
            .save(&ramp(2, 2), dir.path().join("x.tif"))
            .unwrap_err();
        assert!(matches!(e, ImageError::BitDepth { depth: 12, .. }), "{e}");
    }
}
