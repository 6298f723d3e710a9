//! Colour images (issue 48): an RGB PNG or TIFF, 8 or 16 bits, with or without alpha, read as
//! three planes on the 0..255 scale (16-bit samples divided by 257, as gray ones), and written
//! back in the source's form: the same format's RGB or RGBA at the same depth, the alpha
//! samples copied untouched beside the result (a denoiser has no business with them).
//!
//! The planes are held stacked, R over G over B, as one (3h) x w array: the form a colour
//! model's float forward and fixed-point oracle take (`model::frame`).

use std::path::Path;

use ::image::{DynamicImage, ImageFormat};
use ndarray::{s, Array2, ArrayView2};

use super::{colour, Format, GrayImage, ImageError, MAX_PIXELS};

/// An RGB image on the 0..255 scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourImage {
    /// R, G and B planes (each h x w) stacked: (3h) x w. Values may leave 0..255 (noise).
    pub planes: Array2<f64>,
    /// Bit depth of the source, 8 or 16: the depth it is written back at.
    pub bit_depth: u8,
    /// The source's alpha samples (h x w, at its depth), kept untouched; `None` for RGB.
    pub alpha: Option<Array2<u16>>,
    /// The largest value the source stores where its depth does not say it (a 12-bit colour
    /// DICOM: 4095, its planes scaled from 0..4095); `None`: the depth's, 255 or 65535.
    pub stored_max: Option<u16>,
}

/// What a PNG or TIFF holds: gray (a [`GrayImage`]) or colour.
#[derive(Debug, Clone)]
pub enum Picture {
    Gray(GrayImage),
    Colour(ColourImage),
}

impl ColourImage {
    pub fn height(&self) -> usize {
        self.planes.nrows() / 3
    }

    pub fn width(&self) -> usize {
        self.planes.ncols()
    }

    /// Plane `c` (0 R, 1 G, 2 B).
    pub fn plane(&self, c: usize) -> ArrayView2<'_, f64> {
        let h = self.height();
        self.planes.slice(s![c * h..(c + 1) * h, ..])
    }

    /// The scale its planes' values are on: 0..255 for the full range of what the source
    /// stores, so a level in stored values (`20SV`) is read against that range.
    pub fn value_scale(&self) -> super::window::ValueScale {
        let top = self
            .stored_max
            .map_or(if self.bit_depth > 8 { 65535.0 } else { 255.0 }, f64::from);
        super::window::ValueScale::grey_to(top, self.planes.len())
    }

    /// The same image with other planes (same size), alpha and depth kept.
    pub fn with_planes(&self, planes: Array2<f64>) -> ColourImage {
        assert_eq!(
            planes.dim(),
            self.planes.dim(),
            "planes of the image's size"
        );
        ColourImage {
            planes,
            bit_depth: self.bit_depth,
            alpha: self.alpha.clone(),
            stored_max: self.stored_max,
        }
    }

    /// Words for its form: `RGB, 8 bits`, `RGBA, 16 bits`.
    pub fn kind(&self) -> String {
        let name = if self.alpha.is_some() { "RGBA" } else { "RGB" };
        format!("{name}, {} bits", self.bit_depth)
    }

    /// Writes it as the extension of `path` says (PNG, or TIFF for `.tif`/`.tiff`; DICOM is
    /// refused here), in its own form: RGB or RGBA at its depth, values rounded and clamped
    /// as gray ones are, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ImageError> {
        let path = path.as_ref();
        self.save_as(path, Format::of_extension(path))
    }

    /// [`Self::save`] in `format` whatever `path`'s name says (a study's slice keeps its
    /// input's name and format, which need not agree).
    pub fn save_as(&self, path: &Path, format: Format) -> Result<(), ImageError> {
        let encode_err = |detail: String| ImageError::Encode {
            path: path.to_path_buf(),
            format,
            detail,
        };
        if format == Format::Dicom {
            return Err(encode_err(
                "a colour DICOM is written like a colour DICOM input (--like input.dcm)".into(),
            ));
        }
        if let Some(((row, col), _)) = self.planes.indexed_iter().find(|(_, v)| v.is_nan()) {
            return Err(ImageError::NotANumber {
                path: path.to_path_buf(),
                row,
                col,
            });
        }
        let (h, w) = (self.height(), self.width());
        if h == 0 || w == 0 || u32::try_from(w).is_err() || u32::try_from(h).is_err() {
            return Err(encode_err(format!(
                "cannot store an image of {h}x{w} pixels"
            )));
        }
        let n = if self.alpha.is_some() { 4 } else { 3 };
        // Interleaved samples at the output depth (alpha as it was read).
        let sample = |y: usize, x: usize, c: usize| -> u16 {
            match (c, &self.alpha) {
                (3, Some(a)) => a[[y, x]],
                _ => {
                    let v = self.planes[[c * h + y, x]];
                    if self.bit_depth == 8 {
                        v.round().clamp(0.0, 255.0) as u16
                    } else {
                        (v * 257.0).round().clamp(0.0, 65535.0) as u16
                    }
                }
            }
        };
        let samples: Vec<u16> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| (0..n).map(move |c| (y, x, c))))
            .map(|(y, x, c)| sample(y, x, c))
            .collect();
        let (w32, h32) = (w as u32, h as u32);
        let img = match (self.bit_depth, n) {
            (8, 3) => DynamicImage::ImageRgb8(
                ::image::RgbImage::from_raw(w32, h32, samples.iter().map(|&v| v as u8).collect())
                    .expect("sized from the image"),
            ),
            (8, _) => DynamicImage::ImageRgba8(
                ::image::RgbaImage::from_raw(w32, h32, samples.iter().map(|&v| v as u8).collect())
                    .expect("sized from the image"),
            ),
            (16, 3) => DynamicImage::ImageRgb16(
                ::image::ImageBuffer::from_raw(w32, h32, samples).expect("sized from the image"),
            ),
            (16, _) => DynamicImage::ImageRgba16(
                ::image::ImageBuffer::from_raw(w32, h32, samples).expect("sized from the image"),
            ),
            (depth, _) => {
                return Err(ImageError::BitDepth {
                    path: path.to_path_buf(),
                    depth,
                })
            }
        };
        let mut bytes = Vec::new();
        let fmt = match format {
            Format::Tiff => ImageFormat::Tiff,
            _ => ImageFormat::Png,
        };
        img.write_to(&mut std::io::Cursor::new(&mut bytes), fmt)
            .map_err(|e| encode_err(e.to_string()))?;
        super::write_atomic(path, &bytes)
    }
}

impl ColourImage {
    /// Writes it as a derived DICOM of the colour `template` (see
    /// [`super::dicom::DicomTemplate::encode_colour`]), atomically.
    pub fn save_like(
        &self,
        template: &super::dicom::DicomTemplate,
        path: impl AsRef<Path>,
    ) -> Result<(), ImageError> {
        let path = path.as_ref();
        if let Some(((row, col), _)) = self.planes.indexed_iter().find(|(_, v)| v.is_nan()) {
            return Err(ImageError::NotANumber {
                path: path.to_path_buf(),
                row,
                col,
            });
        }
        let bytes = template.encode_colour(std::slice::from_ref(self), path)?;
        super::write_atomic(path, &bytes)
    }
}

/// Writes `frames` as one derived DICOM of the colour `template`, a frame each (a
/// multi-frame template takes them all), atomically.
pub fn save_colour_frames(
    frames: &[ColourImage],
    template: &super::dicom::DicomTemplate,
    path: impl AsRef<Path>,
) -> Result<(), ImageError> {
    let path = path.as_ref();
    for img in frames {
        if let Some(((row, col), _)) = img.planes.indexed_iter().find(|(_, v)| v.is_nan()) {
            return Err(ImageError::NotANumber {
                path: path.to_path_buf(),
                row,
                col,
            });
        }
    }
    let bytes = template.encode_colour(frames, path)?;
    super::write_atomic(path, &bytes)
}

/// Reads a PNG, TIFF or DICOM file as gray or colour, by what it holds: a colour PNG, TIFF
/// or (single-frame) DICOM becomes a [`ColourImage`], anything gray a [`GrayImage`] as
/// [`super::load`] reads it.
pub fn load_picture(path: impl AsRef<Path>) -> Result<Picture, ImageError> {
    let path = path.as_ref();
    picture_from_bytes(&super::read_file(path)?, path)
}

/// [`load_picture`] of a file's bytes (read from `path`, once).
pub fn picture_from_bytes(bytes: &[u8], path: &Path) -> Result<Picture, ImageError> {
    match Format::sniff(bytes) {
        Some(Format::Png) => decode(bytes, ImageFormat::Png, path, Format::Png),
        Some(Format::Tiff) => {
            super::tiff::check_single_page(bytes, path)?;
            decode(bytes, ImageFormat::Tiff, path, Format::Tiff)
        }
        Some(Format::Dicom) => super::dicom::decode_picture(bytes, path),
        None => Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Every frame of a colour file's bytes (read from `path`): a PNG's or TIFF's one image,
/// a colour DICOM's frames in order; a gray file is refused (the caller asked by
/// [`is_colour_bytes`]).
pub fn colour_frames_from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<ColourImage>, ImageError> {
    if Format::sniff(bytes) == Some(Format::Dicom) {
        return super::dicom::decode_colour(bytes, path, true);
    }
    match picture_from_bytes(bytes, path)? {
        Picture::Colour(c) => Ok(vec![c]),
        Picture::Gray(g) => Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            format: Format::sniff(bytes).unwrap_or(Format::Png),
            detail: format!(
                "a gray image ({} bits) where colour was expected",
                g.bit_depth
            ),
        }),
    }
}

/// A PNG, TIFF or DICOM as planes stacked (a gray image: one plane) and how many there are: the
/// form the table and the demo hold gray and colour images in alike.
pub fn load_stacked(path: impl AsRef<Path>) -> Result<(GrayImage, usize), ImageError> {
    Ok(match load_picture(path)? {
        Picture::Gray(g) => (g, 1),
        Picture::Colour(c) => (GrayImage::new(c.planes, c.bit_depth), 3),
    })
}

/// Writes `colours` stacked planes as [`load_stacked`] reads them back: gray as
/// [`super::save`] writes it, three planes as RGB at `bit_depth`.
pub fn save_stacked(
    img: &GrayImage,
    colours: usize,
    path: impl AsRef<Path>,
    bit_depth: u8,
) -> Result<(), ImageError> {
    if colours == 1 {
        return super::save(img, path, bit_depth);
    }
    ColourImage {
        planes: img.pixels.clone(),
        bit_depth,
        alpha: None,
        stored_max: None,
    }
    .save(path)
}

/// Whether `path` is a PNG, TIFF or DICOM whose header says colour (its pixels not
/// decoded); false for anything else, unreadable files included (their loader names the
/// problem).
pub fn is_colour_file(path: impl AsRef<Path>) -> bool {
    // Anything else is told by its first bytes, without reading it whole.
    if Format::of_file(path.as_ref()).is_none() {
        return false;
    }
    let Ok(bytes) = super::read_file(path.as_ref()) else {
        return false;
    };
    is_colour_bytes(&bytes, path.as_ref())
}

/// [`is_colour_file`] of a file's bytes (read from `path`).
pub fn is_colour_bytes(bytes: &[u8], path: &Path) -> bool {
    let format = match Format::sniff(bytes) {
        Some(Format::Png) => ImageFormat::Png,
        Some(Format::Tiff) => ImageFormat::Tiff,
        Some(Format::Dicom) => return super::dicom::is_colour(bytes, path),
        _ => return false,
    };
    ::image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .is_ok_and(|d| colour::kind(::image::ImageDecoder::color_type(&d)).is_some())
}

/// A PNG's or TIFF's bytes as gray or colour, its size checked before anything is decoded.
fn decode(
    bytes: &[u8],
    image_format: ImageFormat,
    path: &Path,
    format: Format,
) -> Result<Picture, ImageError> {
    let reader = || ::image::ImageReader::with_format(std::io::Cursor::new(bytes), image_format);
    let (w, h) = reader()
        .into_dimensions()
        .map_err(|e| super::image_error(e, path, format))?;
    if (w as usize).saturating_mul(h as usize) > MAX_PIXELS {
        return Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            format,
            detail: format!("an image of {h} x {w} pixels (at most {MAX_PIXELS} are read)"),
        });
    }
    let decoder = reader()
        .into_decoder()
        .map_err(|e| super::image_error(e, path, format))?;
    let is_colour = colour::kind(::image::ImageDecoder::color_type(&decoder)).is_some();
    let dynimg =
        DynamicImage::from_decoder(decoder).map_err(|e| super::image_error(e, path, format))?;
    if !is_colour {
        return Ok(Picture::Gray(super::from_dynamic(&dynimg, path, format)?));
    }
    let (w, h) = (w as usize, h as usize);
    let (samples, n, bit_depth): (Vec<u16>, usize, u8) = match &dynimg {
        DynamicImage::ImageRgb8(b) => (b.as_raw().iter().map(|&v| v.into()).collect(), 3, 8),
        DynamicImage::ImageRgba8(b) => (b.as_raw().iter().map(|&v| v.into()).collect(), 4, 8),
        DynamicImage::ImageRgb16(b) => (b.as_raw().clone(), 3, 16),
        DynamicImage::ImageRgba16(b) => (b.as_raw().clone(), 4, 16),
        other => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                format,
                detail: format!(
                    "pixel format {:?} (RGB or RGBA of 8 or 16 bits)",
                    other.color()
                ),
            })
        }
    };
    let scale = if bit_depth == 8 { 1.0 } else { 257.0 };
    let planes = Array2::from_shape_fn((3 * h, w), |(r, x)| {
        let (c, y) = (r / h, r % h);
        f64::from(samples[(y * w + x) * n + c]) / scale
    });
    let alpha =
        (n == 4).then(|| Array2::from_shape_fn((h, w), |(y, x)| samples[(y * w + x) * n + 3]));
    Ok(Picture::Colour(ColourImage {
        planes,
        bit_depth,
        alpha,
        stored_max: None,
    }))
}

/// Adds white Gaussian noise N(0, sigma^2) to every sample of every plane, independently:
/// one normal sample per value from `ChaCha20Rng::seed_from_u64(seed)`, R plane first, row
/// by row. Not rounded or clipped (as [`super::add_noise`]).
pub fn add_noise(img: &ColourImage, sigma: f64, seed: u64) -> ColourImage {
    img.with_planes(
        super::add_noise(
            &GrayImage::new(img.planes.clone(), img.bit_depth),
            sigma,
            seed,
        )
        .pixels,
    )
}

/// [`add_noise`] with a sigma per plane (R, G, B): the same normal samples in the same
/// order, each scaled by its plane's sigma, so equal sigmas give [`add_noise`]'s image.
pub fn add_noise_per_colour(img: &ColourImage, sigmas: [f64; 3], seed: u64) -> ColourImage {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    assert!(
        sigmas.iter().all(|s| s.is_finite() && *s >= 0.0),
        "noise sigmas must be finite and >= 0, got {sigmas:?}"
    );
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let h = img.height();
    let mut planes = img.planes.clone();
    for ((r, _), v) in planes.indexed_iter_mut() {
        let z: f64 = StandardNormal.sample(&mut rng);
        *v += sigmas[r / h] * z;
    }
    img.with_planes(planes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sigma per plane scales each plane's noise alone; equal sigmas give add_noise's.
    #[test]
    fn noise_per_colour_is_add_noises_scaled_per_plane() {
        let img = ColourImage {
            planes: Array2::from_elem((3 * 4, 5), 100.0),
            bit_depth: 8,
            alpha: None,
            stored_max: None,
        };
        let one = add_noise(&img, 10.0, 7);
        assert_eq!(add_noise_per_colour(&img, [10.0; 3], 7), one);
        let per = add_noise_per_colour(&img, [10.0, 0.0, 30.0], 7);
        for (r, c) in [(0, 0), (3, 4), (5, 2), (9, 1), (11, 4)] {
            let (a, b) = (per.planes[[r, c]] - 100.0, one.planes[[r, c]] - 100.0);
            let want = b * [1.0, 0.0, 3.0][r / 4];
            assert!((a - want).abs() < 1e-9, "({r}, {c}): {a} vs {want}");
        }
    }

    /// 8- and 16-bit RGB and RGBA, PNG and TIFF: planes read, written back in the same form,
    /// alpha untouched.
    #[test]
    fn rgb_and_rgba_round_trip_in_their_own_form() {
        let d = tempfile::tempdir().unwrap();
        let (w, h) = (5u32, 3u32);
        let px = |i: u32| [(i * 17) % 256, (i * 5 + 3) % 256, (255 - i * 11 % 256)];
        let rgba8: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let [r, g, b] = px(i);
                [r as u8, g as u8, b as u8, (i * 9) as u8]
            })
            .collect();
        for ext in ["png", "tif"] {
            let p = d.path().join(format!("a.{ext}"));
            ::image::RgbaImage::from_raw(w, h, rgba8.clone())
                .unwrap()
                .save(&p)
                .unwrap();
            let Picture::Colour(c) = load_picture(&p).unwrap() else {
                panic!("colour expected")
            };
            assert_eq!((c.height(), c.width(), c.bit_depth), (3, 5, 8));
            assert_eq!(c.kind(), "RGBA, 8 bits");
            // G of pixel (1, 2) = index 7.
            assert_eq!(c.plane(1)[[1, 2]], f64::from(px(7)[1]));
            // Denoised planes written back: RGBA at 8 bits, alpha as read.
            let out = d.path().join(format!("b.{ext}"));
            c.with_planes(c.planes.mapv(|v| v + 0.4))
                .save(&out)
                .unwrap();
            let back = ::image::open(&out).unwrap();
            let back = back.as_rgba8().expect("RGBA 8 written");
            assert_eq!(back.as_raw(), &rgba8, "{ext}");
        }
        // 16-bit RGB: k/257 steps exact, depth kept.
        let rgb16: Vec<u16> = (0..w * h * 3).map(|i| (i * 4099) as u16).collect();
        let p = d.path().join("c.png");
        ::image::ImageBuffer::<::image::Rgb<u16>, _>::from_raw(w, h, rgb16.clone())
            .unwrap()
            .save(&p)
            .unwrap();
        let Picture::Colour(c) = load_picture(&p).unwrap() else {
            panic!("colour expected")
        };
        assert_eq!(
            (c.kind(), c.plane(2)[[0, 1]]),
            ("RGB, 16 bits".into(), f64::from(rgb16[5]) / 257.0)
        );
        let out = d.path().join("d.png");
        c.save(&out).unwrap();
        assert_eq!(
            ::image::open(&out).unwrap().as_rgb16().unwrap().as_raw(),
            &rgb16
        );
        // A gray file stays gray.
        let g = d.path().join("g.png");
        ::image::GrayImage::from_raw(2, 2, vec![1, 2, 3, 4])
            .unwrap()
            .save(&g)
            .unwrap();
        assert!(matches!(load_picture(&g).unwrap(), Picture::Gray(_)));
    }
}
