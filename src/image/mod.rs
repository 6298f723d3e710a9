//! Plaintext grayscale images: PNG, TIFF and DICOM in and out, Gaussian noise.
//!
//! Every image in ppdenoise is a [`GrayImage`]: an `H x W` array of `f64`
//! on the **0..255 scale**, whatever the format and bit depth of the file it
//! came from. The format is told by the file's content ([`load`]): the PNG
//! signature, a TIFF header (`II*\0` or `MM\0*`, BigTIFF `+`), or `DICM` at byte
//! 128 (DICOM Part 10). On output it is chosen by the file's extension
//! ([`Encoding::for_path`]): `.tif`/`.tiff` TIFF, `.dcm`/`.dicom` DICOM (which
//! needs a template, see [`dicom`]), anything else PNG.
//!
//! - PNG and TIFF ([`png`], [`tiff`]): 8- or 16-bit. 16-bit samples are
//!   mapped onto the 0..255 scale by dividing by 257 (so 65535 -> 255.0 and
//!   257 -> 1.0 exactly), and back by multiplying by 257.
//! - DICOM ([`dicom`]): a stored value `v` of `b` bits maps to
//!   `v * 255 / (2^b - 1)` (signed data shifted by `2^(b-1)` first), the same
//!   rule as 16-bit PNG for `b = 16`; MONOCHROME1 is inverted. See the
//!   module for what is kept and what is written.
//!
//! A colour PNG or TIFF (RGB, RGBA, or a palette the decoder expands to them) is refused
//! by name, since every model here is gray, unless the command line says `--as-gray`
//! ([`colour`]); it is then converted to luma with the ITU-R BT.601 weights, `Y = 0.299 R + 0.587 G + 0.114 B`, computed in `f64`
//! without rounding (alpha channels are ignored). Note that this is *not* the
//! rule of the `image` crate's own `to_luma` (which uses the BT.709/sRGB
//! weights and truncates to an integer); the conversion is done here so that
//! it is exact and documented. Colour DICOM is refused.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ::image::DynamicImage;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

pub mod colour;
pub mod derived;
pub mod dicom;
pub mod jpeg12;
pub mod noise_estimate;
pub mod phantom;
pub mod png;
pub mod rgb;
pub mod series;
pub mod tiff;
pub mod window;

pub use derived::{DerivedSeries, Keep, OutputSyntax};
pub use dicom::DicomTemplate;
pub use rgb::{load_picture, ColourImage, Picture};

/// ITU-R BT.601 luma weights for R, G and B.
pub const BT601_WEIGHTS: [f64; 3] = [0.299, 0.587, 0.114];

/// Prefix that names a built-in image instead of a file (see [`load_input`]).
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Most pixels an image may have: 2^28 (16384 x 16384; 2 GiB per image-sized share). An image
/// file declaring more is refused before its pixels are decoded; a job's files are held to the
/// same bound (`formats::bodies`).
pub const MAX_PIXELS: usize = 1 << 28;

/// An image file's bytes; a missing file is said to be missing.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ImageError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Decodes a PNG or TIFF through the `image` crate: its size is read from the header and one
/// above [`MAX_PIXELS`] refused before anything is decoded (the decoder's own limit is in
/// bytes, and our `f64` copy is 8 per pixel); the decoder's "unsupported" stays that.
fn decode_with_image(
    bytes: &[u8],
    image_format: ::image::ImageFormat,
    path: &Path,
    format: Format,
    as_gray: bool,
) -> Result<GrayImage, ImageError> {
    let reader = || ::image::ImageReader::with_format(std::io::Cursor::new(bytes), image_format);
    let error = |e: ::image::ImageError| image_error(e, path, format);
    let (w, h) = reader().into_dimensions().map_err(error)?;
    if (w as usize).saturating_mul(h as usize) > MAX_PIXELS {
        return Err(ImageError::Unsupported {
            path: path.to_path_buf(),
            format,
            detail: format!("an image of {h} x {w} pixels (at most {MAX_PIXELS} are read)"),
        });
    }
    // The colour type from the header: a colour image is refused before its pixels are
    // decoded.
    let decoder = reader().into_decoder().map_err(error)?;
    let colour = colour::kind(::image::ImageDecoder::color_type(&decoder));
    if let (Some(kind), false) = (&colour, as_gray) {
        return Err(ImageError::Colour {
            path: path.to_path_buf(),
            kind: kind.clone(),
        });
    }
    let dynimg = DynamicImage::from_decoder(decoder).map_err(error)?;
    let img = from_dynamic(&dynimg, path, format)?;
    if let Some(kind) = colour {
        colour::record(path, &kind);
    }
    Ok(img)
}

/// The `image` crate's error about `path`: its "unsupported" stays that, anything else is
/// a corrupted file.
fn image_error(e: ::image::ImageError, path: &Path, format: Format) -> ImageError {
    match e {
        ::image::ImageError::Unsupported(u) => ImageError::Unsupported {
            path: path.to_path_buf(),
            format,
            detail: u.to_string(),
        },
        e => ImageError::Corrupt {
            path: path.to_path_buf(),
            format,
            detail: e.to_string(),
        },
    }
}

/// Encodes `img` (checked by the caller: no NaN, sides that fit) as grayscale of `depth` 8
/// or 16 bits with the rounding of [`save_png`], into `bytes` through the encoder `make`
/// makes of them.
fn encode_with_image<'a, E: ::image::ImageEncoder>(
    img: &GrayImage,
    path: &Path,
    depth: u8,
    format: Format,
    bytes: &'a mut Vec<u8>,
    make: impl FnOnce(&'a mut Vec<u8>) -> E,
) -> Result<(), ImageError> {
    use ::image::{ImageBuffer, Luma};
    let (w, h) = (img.width() as u32, img.height() as u32);
    let encoded = match depth {
        8 => ImageBuffer::<Luma<u8>, _>::from_raw(w, h, png::to_u8(img))
            .expect("buffer sized from the image")
            .write_with_encoder(make(bytes)),
        16 => ImageBuffer::<Luma<u16>, _>::from_raw(w, h, png::to_u16(img))
            .expect("buffer sized from the image")
            .write_with_encoder(make(bytes)),
        depth => {
            return Err(ImageError::BitDepth {
                path: path.to_path_buf(),
                depth,
            })
        }
    };
    encoded.map_err(|e| ImageError::Encode {
        path: path.to_path_buf(),
        format,
        detail: e.to_string(),
    })
}

/// Errors of image loading and saving. Every variant that concerns a file
/// names it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The input file does not exist.
    #[error("{}: no such file", .path.display())]
    Missing { path: PathBuf },
    /// Reading or writing the file failed at the operating-system level.
    // The cause follows in the error's chain (`{:#}`), not twice.
    #[error("{}: cannot read or write", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file starts like none of the formats read here.
    #[error("{}: not a PNG, TIFF or DICOM file (unrecognised signature)", .path.display())]
    UnknownFormat { path: PathBuf },
    /// The file starts like a known format but cannot be decoded.
    #[error("{}: corrupted {format}: {detail}", .path.display())]
    Corrupt {
        path: PathBuf,
        format: Format,
        detail: String,
    },
    /// The file is well formed but holds something this module does not handle
    /// (a colour DICOM, a TIFF stack, a compression the build lacks, ...).
    #[error("{}: unsupported {format}: {detail}", .path.display())]
    Unsupported {
        path: PathBuf,
        format: Format,
        detail: String,
    },
    /// A colour image where a gray one is expected, and no `--as-gray`.
    #[error(
        "{}: a colour image ({kind}); this model is gray: give --as-gray to denoise its luma \
         (BT.601), or a colour model",
        .path.display()
    )]
    Colour { path: PathBuf, kind: String },
    /// Encoding the file failed.
    #[error("{}: cannot encode {format}: {detail}", .path.display())]
    Encode {
        path: PathBuf,
        format: Format,
        detail: String,
    },
    /// A bit depth other than 8 or 16 was asked for.
    #[error("{}: unsupported bit depth {depth} (expected 8 or 16)", .path.display())]
    BitDepth { path: PathBuf, depth: u8 },
    /// The image to save holds a NaN.
    #[error("{}: image has a NaN pixel at (row {row}, col {col})", .path.display())]
    NotANumber {
        path: PathBuf,
        row: usize,
        col: usize,
    },
    /// `builtin:<name>` named no built-in image.
    #[error("unknown built-in image {name:?} (known: phantom, phantom:<size>)")]
    UnknownBuiltin { name: String },
}

/// The image file formats read and written here (`png`, `tiff`, `dicom` in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Png,
    Tiff,
    Dicom,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Tiff => "TIFF",
            Format::Dicom => "DICOM",
        })
    }
}

impl Format {
    /// The format `bytes` (a file's beginning) are in, by signature.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        // DICOM first: a DICOM file's 128-byte preamble may itself be a TIFF header
        // (dual-format files).
        if bytes.get(128..132) == Some(b"DICM") {
            Some(Format::Dicom)
        } else if bytes.starts_with(&png::SIGNATURE) {
            Some(Format::Png)
        } else if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
            .iter()
            .any(|m| bytes.starts_with(*m))
        {
            // Classic TIFF and BigTIFF, either byte order.
            Some(Format::Tiff)
        } else {
            None
        }
    }

    /// The format of the file at `path`, by its first bytes; `None` when it is missing,
    /// unreadable or none of these.
    pub fn of_file(path: impl AsRef<Path>) -> Option<Format> {
        let mut head = Vec::with_capacity(132);
        File::open(path)
            .and_then(|f| f.take(132).read_to_end(&mut head))
            .ok()?;
        Format::sniff(&head)
    }

    /// The format an output path asks for, by its extension (case-insensitive):
    /// `.tif`/`.tiff` TIFF, `.dcm`/`.dicom` DICOM, anything else PNG.
    pub fn of_extension(path: impl AsRef<Path>) -> Format {
        let ext = path
            .as_ref()
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "tif" | "tiff" => Format::Tiff,
            "dcm" | "dicom" => Format::Dicom,
            _ => Format::Png,
        }
    }
}

/// A grayscale image on the 0..255 scale.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    /// `H x W` pixel values, always on the 0..255 scale (also for 16-bit
    /// sources). Values may lie outside 0..255 (e.g. after [`add_noise`]).
    pub pixels: Array2<f64>,
    /// Bit depth of the source: 8 or 16 (a DICOM of up to 8 stored bits is 8,
    /// one of more is 16). Informational: it is the default depth of a PNG or
    /// TIFF written from this image; [`save_png`] takes the depth explicitly.
    pub bit_depth: u8,
}

impl GrayImage {
    /// Wraps an array of 0..255-scale values.
    pub fn new(pixels: Array2<f64>, bit_depth: u8) -> Self {
        Self { pixels, bit_depth }
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.pixels.nrows()
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.pixels.ncols()
    }
}

/// Loads a PNG, TIFF or DICOM file as a [`GrayImage`] on the 0..255 scale; the
/// format is told by the file's first bytes, not its name. Errors name the file
/// and say whether it is missing, of no known format, corrupted or unsupported.
pub fn load(path: impl AsRef<Path>) -> Result<GrayImage, ImageError> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    match Format::sniff(&bytes) {
        Some(Format::Png) => png::decode(&bytes, path),
        Some(Format::Tiff) => tiff::decode(&bytes, path),
        Some(Format::Dicom) => dicom::decode(&bytes, path),
        None => Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads every frame of an image file: a multi-frame DICOM's frames in order, or the one
/// image of any other file (as [`load`]).
pub fn load_frames(path: impl AsRef<Path>) -> Result<Vec<GrayImage>, ImageError> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    match Format::sniff(&bytes) {
        Some(Format::Dicom) => dicom::decode_frames(&bytes, path, true),
        Some(Format::Png) => Ok(vec![png::decode(&bytes, path)?]),
        Some(Format::Tiff) => Ok(vec![tiff::decode(&bytes, path)?]),
        None => Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// An image file's frames on the 0..255 scale of a window, and what that scale is in the
/// image's own units.
#[derive(Debug, Clone)]
pub struct Windowed {
    pub frames: Vec<GrayImage>,
    pub scale: window::ValueScale,
}

/// Loads an image file's frames (several only when `multi`: a multi-frame DICOM; else it is
/// refused as [`load`] does) on the window `choice` resolves to (see [`window`]). A DICOM's
/// values outside the window are clipped and counted; a PNG or TIFF takes its full range
/// only (its values carry no units a window could be stated in).
pub fn load_windowed(
    path: impl AsRef<Path>,
    choice: &window::WindowChoice,
    multi: bool,
) -> Result<Windowed, ImageError> {
    let path = path.as_ref();
    windowed_from_bytes(&read_file(path)?, path, choice, multi)
}

/// [`load_windowed`] of a file's bytes, already read (`path` names them in errors): what is
/// decoded is what the caller hashed or checked, never the file opened again.
pub fn windowed_from_bytes(
    bytes: &[u8],
    path: &Path,
    choice: &window::WindowChoice,
    multi: bool,
) -> Result<Windowed, ImageError> {
    use window::{ValueScale, WindowChoice};
    let format = Format::sniff(bytes).ok_or_else(|| ImageError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    if format != Format::Dicom {
        let img = match format {
            Format::Png => png::decode(bytes, path)?,
            _ => tiff::decode(bytes, path)?,
        };
        let detail = match choice {
            WindowChoice::Range(w) => Some(format!(
                "--window {w}: a window is stated in a DICOM's units; a {format} takes its \
                 full range (--window full or default)"
            )),
            WindowChoice::Declared(d) => Some(format!(
                "the model was trained on a window of a DICOM's values ({d}); a {format}'s \
                 grey levels have no such units: it is not a model for this image \
                 (--override-model-window maps it by its full range anyway)"
            )),
            _ => None,
        };
        if let Some(detail) = detail {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                format,
                detail,
            });
        }
        let scale = ValueScale::grey(img.bit_depth, img.pixels.len());
        return Ok(Windowed {
            frames: vec![img],
            scale,
        });
    }
    let (frames, intensity) = dicom::decode_all(bytes, path, multi)?;
    let stored = intensity.stored_of_frames(&frames);
    let window = intensity
        .resolve(choice, &stored)
        .map_err(|detail| ImageError::Unsupported {
            path: path.to_path_buf(),
            format,
            detail,
        })?;
    let Some(w) = window else {
        return Ok(Windowed {
            frames,
            scale: ValueScale {
                units: intensity.units(),
                window: intensity.full_window(),
                slope: intensity.slope,
                clipped: 0,
                pixels: stored.len(),
                derived: false,
            },
        });
    };
    let derived = match choice {
        WindowChoice::Auto => true,
        WindowChoice::Default => intensity.units() != window::Units::Hu,
        _ => false,
    };
    let clipped = stored
        .iter()
        .filter(|&&v| !w.contains(intensity.value(v)))
        .count();
    let mut values = stored.iter();
    let frames = frames
        .into_iter()
        .map(|mut f| {
            for x in f.pixels.iter_mut() {
                *x = intensity.to_scale(*values.next().expect("one per pixel"), &w);
            }
            f
        })
        .collect();
    Ok(Windowed {
        frames,
        scale: ValueScale {
            units: intensity.units(),
            window: w,
            slope: intensity.slope,
            clipped,
            pixels: stored.len(),
            derived,
        },
    })
}

/// A decoded PNG or TIFF as a [`GrayImage`]: grayscale as is, colour (let through by
/// `--as-gray` only) through [`BT601_WEIGHTS`], alpha ignored, 16-bit divided by 257.
fn from_dynamic(
    dynimg: &DynamicImage,
    path: &Path,
    format: Format,
) -> Result<GrayImage, ImageError> {
    let (w, h) = (dynimg.width() as usize, dynimg.height() as usize);
    let luma = |rgb: &[f64]| -> f64 {
        BT601_WEIGHTS[0] * rgb[0] + BT601_WEIGHTS[1] * rgb[1] + BT601_WEIGHTS[2] * rgb[2]
    };
    let (values, bit_depth): (Vec<f64>, u8) = match dynimg {
        DynamicImage::ImageLuma8(b) => (b.as_raw().iter().map(|&v| f64::from(v)).collect(), 8),
        DynamicImage::ImageLumaA8(b) => (
            b.as_raw()
                .chunks_exact(2)
                .map(|p| f64::from(p[0]))
                .collect(),
            8,
        ),
        DynamicImage::ImageRgb8(b) => (
            b.as_raw()
                .chunks_exact(3)
                .map(|p| luma(&[f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]))
                .collect(),
            8,
        ),
        DynamicImage::ImageRgba8(b) => (
            b.as_raw()
                .chunks_exact(4)
                .map(|p| luma(&[f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]))
                .collect(),
            8,
        ),
        DynamicImage::ImageLuma16(b) => (
            b.as_raw().iter().map(|&v| f64::from(v) / 257.0).collect(),
            16,
        ),
        DynamicImage::ImageLumaA16(b) => (
            b.as_raw()
                .chunks_exact(2)
                .map(|p| f64::from(p[0]) / 257.0)
                .collect(),
            16,
        ),
        DynamicImage::ImageRgb16(b) => (
            b.as_raw()
                .chunks_exact(3)
                .map(|p| luma(&[f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]) / 257.0)
                .collect(),
            16,
        ),
        DynamicImage::ImageRgba16(b) => (
            b.as_raw()
                .chunks_exact(4)
                .map(|p| luma(&[f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]) / 257.0)
                .collect(),
            16,
        ),
        other => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                format,
                detail: format!("pixel format {:?}", other.color()),
            })
        }
    };
    let pixels = Array2::from_shape_vec((h, w), values).map_err(|e| ImageError::Corrupt {
        path: path.to_path_buf(),
        format,
        detail: e.to_string(),
    })?;
    Ok(GrayImage { pixels, bit_depth })
}

/// Loads an input image given on the command line: `builtin:<name>` is
/// resolved with [`crate::image::phantom::builtin`] (e.g. `builtin:phantom`,
/// `builtin:phantom:128`), anything else is a file for [`load`].
pub fn load_input(spec: &str) -> Result<GrayImage, ImageError> {
    match spec.strip_prefix(BUILTIN_PREFIX) {
        Some(name) => {
            crate::image::phantom::builtin(name).ok_or_else(|| ImageError::UnknownBuiltin {
                name: name.to_string(),
            })
        }
        None => load(spec),
    }
}

/// Rounds (half away from zero) and clamps 0..255-scale values to the
/// integers 0..=255, still as `f64`. The CLI applies this to a noisy image
/// before saving it, so that the saved file and the in-memory image agree.
pub fn quantize_u8(pixels: &Array2<f64>) -> Array2<f64> {
    pixels.mapv(|v| v.round().clamp(0.0, 255.0))
}

/// Adds white Gaussian noise N(0, sigma^2) (0..255 scale) to every pixel.
///
/// The noise comes from `ChaCha20Rng::seed_from_u64(seed)`, one normal
/// sample per pixel in row-major order, so a (seed, sigma, size) triple
/// always gives the same image. The result is **not** rounded or clipped:
/// values may fall below 0 or above 255. Use [`quantize_u8`] to get what an
/// 8-bit file would hold. `bit_depth` is kept from the input.
///
/// # Panics
/// If `sigma` is negative or not finite.
pub fn add_noise(img: &GrayImage, sigma: f64, seed: u64) -> GrayImage {
    assert!(
        sigma.is_finite() && sigma >= 0.0,
        "noise sigma must be finite and >= 0, got {sigma}"
    );
    let normal = Normal::new(0.0, sigma).expect("sigma checked above");
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (h, w) = img.pixels.dim();
    let mut pixels = Array2::<f64>::zeros((h, w));
    for r in 0..h {
        for c in 0..w {
            pixels[[r, c]] = img.pixels[[r, c]] + normal.sample(&mut rng);
        }
    }
    GrayImage {
        pixels,
        bit_depth: img.bit_depth,
    }
}

/// How an image is written: the format and what it needs (a bit depth, or for DICOM the
/// file whose attributes and pixel layout the output takes).
#[derive(Debug, Clone)]
pub enum Encoding {
    /// Grayscale PNG, 8 or 16 bits.
    Png(u8),
    /// Grayscale TIFF, 8 or 16 bits.
    Tiff(u8),
    /// DICOM like the template (its bit depth, signedness and photometric interpretation).
    Dicom(Box<DicomTemplate>),
}

impl Encoding {
    /// The encoding `path`'s extension asks for ([`Format::of_extension`]): PNG or TIFF at
    /// `depth` (8 or 16), DICOM like `like`. A `.dcm` path without a template, or a template
    /// for another format, is refused.
    pub fn for_path(
        path: &Path,
        depth: u8,
        like: Option<DicomTemplate>,
    ) -> Result<Encoding, ImageError> {
        let format = Format::of_extension(path);
        if depth != 8 && depth != 16 && format != Format::Dicom {
            return Err(ImageError::BitDepth {
                path: path.to_path_buf(),
                depth,
            });
        }
        match (format, like) {
            (Format::Dicom, Some(t)) => Ok(Encoding::Dicom(Box::new(t))),
            (Format::Dicom, None) => Err(ImageError::Encode {
                path: path.to_path_buf(),
                format,
                detail: "a DICOM output needs a DICOM input to take its patient, study and \
                         series attributes and pixel layout from (--like <input.dcm>)"
                    .into(),
            }),
            (other, Some(t)) => Err(ImageError::Encode {
                path: path.to_path_buf(),
                format: other,
                detail: format!(
                    "the DICOM template {} applies to a DICOM output only (name it .dcm)",
                    t.path().display()
                ),
            }),
            (Format::Png, None) => Ok(Encoding::Png(depth)),
            (Format::Tiff, None) => Ok(Encoding::Tiff(depth)),
        }
    }

    /// The format written.
    pub fn format(&self) -> Format {
        match self {
            Encoding::Png(_) => Format::Png,
            Encoding::Tiff(_) => Format::Tiff,
            Encoding::Dicom(_) => Format::Dicom,
        }
    }

    /// The bit depth a [`GrayImage`] loaded back from the output has (8 or 16).
    pub fn bit_depth(&self) -> u8 {
        match self {
            Encoding::Png(d) | Encoding::Tiff(d) => *d,
            Encoding::Dicom(t) if t.bits_stored() <= 8 => 8,
            Encoding::Dicom(_) => 16,
        }
    }

    /// Words for the output, e.g. `16-bit PNG`, `12-bit DICOM`.
    pub fn describe(&self) -> String {
        match self {
            Encoding::Png(d) | Encoding::Tiff(d) => format!("{d}-bit {}", self.format()),
            Encoding::Dicom(t) => format!("{}-bit DICOM", t.bits_stored()),
        }
    }

    /// The values a file of this encoding holds for `pixels`, on the 0..255 scale: what
    /// [`load`] gives back after [`Encoding::save`] (rounded to the format's steps and
    /// clamped to its range).
    pub fn quantize(&self, pixels: &Array2<f64>) -> Array2<f64> {
        match self {
            Encoding::Png(8) | Encoding::Tiff(8) => quantize_u8(pixels),
            Encoding::Png(_) | Encoding::Tiff(_) => {
                pixels.mapv(|v| (v * 257.0).round().clamp(0.0, 65535.0) / 257.0)
            }
            Encoding::Dicom(t) => t.quantize(pixels),
        }
    }

    /// Writes `img` to `path` in this encoding, atomically.
    pub fn save(&self, img: &GrayImage, path: impl AsRef<Path>) -> Result<(), ImageError> {
        self.save_frames(std::slice::from_ref(img), path)
    }

    /// Whether `n` images can be written in this encoding to `path` (checked before they are
    /// computed): one for PNG and TIFF, the template's frame count for DICOM.
    pub fn check_frames(&self, n: usize, path: &Path) -> Result<(), ImageError> {
        let takes = match self {
            Encoding::Dicom(t) => t.frames(),
            _ => 1,
        };
        if n == takes {
            return Ok(());
        }
        Err(ImageError::Encode {
            path: path.to_path_buf(),
            format: self.format(),
            detail: match self {
                Encoding::Dicom(t) => format!(
                    "{n} image(s) for the {takes} frame(s) of the template {}",
                    t.path().display()
                ),
                _ => format!(
                    "{n} frames: several frames are written as one DICOM (like a multi-frame \
                     input), not as PNG or TIFF"
                ),
            },
        })
    }

    /// Writes `frames` to `path` in this encoding, atomically: one image for PNG and TIFF,
    /// one per frame of the template for DICOM (a multi-frame template takes them all).
    pub fn save_frames(
        &self,
        frames: &[GrayImage],
        path: impl AsRef<Path>,
    ) -> Result<(), ImageError> {
        let path = path.as_ref();
        self.check_frames(frames.len(), path)?;
        for img in frames {
            check_savable(img, path)?;
        }
        let bytes = match (self, frames) {
            (Encoding::Png(d), [img]) => png::encode(img, path, *d)?,
            (Encoding::Tiff(d), [img]) => tiff::encode(img, path, *d)?,
            (Encoding::Dicom(t), _) => t.encode(frames, path)?,
            _ => unreachable!("check_frames: one image for PNG and TIFF"),
        };
        write_atomic(path, &bytes)
    }

    /// [`Self::save_frames`] of images of `colours` planes stacked ((colours h) x w): gray
    /// as it writes them, three planes as RGB (a PNG or TIFF at this depth, or a derived RGB
    /// DICOM of a colour template), atomically.
    pub fn save_planes(
        &self,
        frames: &[GrayImage],
        colours: usize,
        path: impl AsRef<Path>,
    ) -> Result<(), ImageError> {
        if colours == 1 {
            return self.save_frames(frames, path);
        }
        let path = path.as_ref();
        let colour: Vec<ColourImage> = frames
            .iter()
            .map(|img| ColourImage {
                planes: img.pixels.clone(),
                bit_depth: self.bit_depth(),
                alpha: None,
                stored_max: None,
            })
            .collect();
        match (self, colour.as_slice()) {
            (Encoding::Dicom(t), _) => rgb::save_colour_frames(&colour, t, path),
            (_, [one]) => one.save_as(path, self.format()),
            _ => self.check_frames(colour.len(), path),
        }
    }
}

/// Distinguishes concurrent temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Saves `img` as a grayscale PNG of `bit_depth` 8 or 16.
///
/// 8-bit: each value is rounded (half away from zero) and clamped to 0..=255.
/// 16-bit: each value is multiplied by 257, rounded and clamped to 0..=65535.
/// A NaN pixel is an error. The file is written atomically: to a temporary
/// file in the same directory, flushed and synced, then renamed over `path`;
/// on any error the temporary file is removed and `path` is untouched.
pub fn save_png(img: &GrayImage, path: impl AsRef<Path>, bit_depth: u8) -> Result<(), ImageError> {
    Encoding::Png(bit_depth).save(img, path)
}

/// Saves `img` as PNG or TIFF by `path`'s extension ([`Format::of_extension`]) at
/// `bit_depth` 8 or 16, atomically, with the rounding of [`save_png`]. A DICOM path is
/// refused: it needs a template ([`Encoding::for_path`]).
pub fn save(img: &GrayImage, path: impl AsRef<Path>, bit_depth: u8) -> Result<(), ImageError> {
    let path = path.as_ref();
    Encoding::for_path(path, bit_depth, None)?.save(img, path)
}

/// The checks every encoder needs: no NaN, not empty, sides that fit in `u32`.
fn check_savable(img: &GrayImage, path: &Path) -> Result<(), ImageError> {
    if let Some(((row, col), _)) = img.pixels.indexed_iter().find(|(_, v)| v.is_nan()) {
        return Err(ImageError::NotANumber {
            path: path.to_path_buf(),
            row,
            col,
        });
    }
    let (h, w) = img.pixels.dim();
    if w == 0 || h == 0 || u32::try_from(w).is_err() || u32::try_from(h).is_err() {
        return Err(ImageError::Encode {
            path: path.to_path_buf(),
            format: Format::of_extension(path),
            detail: format!("cannot store an image of {h}x{w} pixels"),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so that `path` never holds a partial file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let io_err = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "output path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut opts = File::options();
        opts.write(true).create_new(true);
        // Images are secrets of whoever holds them (the result above all): owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&tmp)?;
        let mut writer = BufWriter::new(file);
        writer.write_all(bytes)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        // The temporary file may or may not exist; either way it must go.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(source));
    }
    Ok(())
}

/// Reads the first bytes of a file to tell whether it looks like a PNG.
/// Missing or unreadable files give `false`.
pub fn looks_like_png(path: impl AsRef<Path>) -> bool {
    Format::of_file(path) == Some(Format::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small PNG whose header claims more than MAX_PIXELS is refused before decoding.
    #[test]
    fn an_image_above_the_pixel_bound_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        let side = 1u32 << 15; // 2^30 pixels
        let mut bytes = Vec::new();
        ::image::ImageEncoder::write_image(
            ::image::codecs::png::PngEncoder::new(&mut bytes),
            &[0u8; 16],
            4,
            4,
            ::image::ExtendedColorType::L8,
        )
        .unwrap();
        // IHDR's width and height (bytes 16..24), and its CRC (bytes 29..33) made right.
        bytes[16..20].copy_from_slice(&side.to_be_bytes());
        bytes[20..24].copy_from_slice(&side.to_be_bytes());
        let crc = !bytes[12..29].iter().fold(!0u32, |mut c, &b| {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
            c
        });
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("huge.png"), "{e}");
        assert!(e.to_string().contains("32768 x 32768 pixels"), "{e}");
    }
    use ndarray::array;

    /// A fresh, empty directory under the system temp dir for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ppdenoise-image-test-{}-{}",
            std::process::id(),
            name
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ramp(h: usize, w: usize) -> GrayImage {
        GrayImage::new(
            Array2::from_shape_fn((h, w), |(r, c)| ((r * 31 + c * 7) % 256) as f64),
            8,
        )
    }

    #[test]
    fn roundtrip_8bit_is_exact_and_row_major() {
        let dir = test_dir("rt8");
        let img = ramp(13, 21);
        let p = dir.join("a.png");
        save_png(&img, &p, 8).unwrap();
        assert!(looks_like_png(&p));
        let back = load(&p).unwrap();
        assert_eq!(back.bit_depth, 8);
        assert_eq!((back.height(), back.width()), (13, 21));
        assert_eq!(back.pixels, img.pixels);
        // The file holds width 21, height 13 as PNG sees it.
        let dyn_img = ::image::open(&p).unwrap();
        assert_eq!((dyn_img.width(), dyn_img.height()), (21, 13));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn save_8bit_rounds_and_clamps() {
        let dir = test_dir("clamp8");
        let img = GrayImage::new(array![[-3.0, 0.49, 0.5, 254.5, 300.0, 127.4999]], 8);
        let p = dir.join("c.png");
        save_png(&img, &p, 8).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.pixels, array![[0.0, 0.0, 1.0, 255.0, 255.0, 127.0]]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn roundtrip_16bit_keeps_fractions() {
        let dir = test_dir("rt16");
        // Values that are k/257 round-trip exactly through 16 bits.
        let img = GrayImage::new(
            array![
                [0.0, 1.0 / 257.0, 100.0 + 13.0 / 257.0],
                [255.0, 300.0, -1.0]
            ],
            16,
        );
        let p = dir.join("d.png");
        save_png(&img, &p, 16).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.bit_depth, 16);
        let expect = array![
            [0.0, 1.0 / 257.0, 100.0 + 13.0 / 257.0],
            [255.0, 255.0, 0.0]
        ];
        for (a, b) in back.pixels.iter().zip(expect.iter()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let raw = ::image::open(&p).unwrap().into_luma16();
        assert_eq!(raw.as_raw(), &vec![0u16, 1, 25713, 65535, 65535, 0]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn loads_16bit_fixture_by_dividing_by_257() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics/pair5_a16.png");
        let img = load(&p).unwrap();
        let raw = ::image::open(&p).unwrap().into_luma16();
        assert_eq!(img.bit_depth, 16);
        assert_eq!(img.pixels.dim(), (32, 48));
        assert_eq!(
            img.pixels[[3, 5]],
            f64::from(raw.get_pixel(5, 3)[0]) / 257.0
        );
    }

    #[test]
    fn rgb_and_rgba_convert_with_bt601() {
        let dir = test_dir("rgb");
        // What `--as-gray` lets through; without it, the same file is refused by name.
        let luma_of = |p: &Path| {
            let bytes = fs::read(p).unwrap();
            decode_with_image(&bytes, ::image::ImageFormat::Png, p, Format::Png, true).unwrap()
        };
        let rgb = ::image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap();
        let p = dir.join("rgb.png");
        rgb.save(&p).unwrap();
        let img = luma_of(&p);
        assert_eq!(img.bit_depth, 8);
        let expect1 = 0.299 * 10.0 + 0.587 * 200.0 + 0.114 * 30.0;
        assert!((img.pixels[[0, 0]] - 0.299 * 255.0).abs() < 1e-12);
        assert!((img.pixels[[0, 1]] - expect1).abs() < 1e-12);

        let rgba = ::image::RgbaImage::from_raw(1, 1, vec![0, 0, 255, 7]).unwrap();
        let p = dir.join("rgba.png");
        rgba.save(&p).unwrap();
        let img = luma_of(&p);
        assert!((img.pixels[[0, 0]] - 0.114 * 255.0).abs() < 1e-12);

        let rgb16 =
            ::image::ImageBuffer::<::image::Rgb<u16>, _>::from_raw(1, 1, vec![65535, 65535, 0])
                .unwrap();
        let p = dir.join("rgb16.png");
        rgb16.save(&p).unwrap();
        let img = luma_of(&p);
        assert_eq!(img.bit_depth, 16);
        assert!((img.pixels[[0, 0]] - (0.299 + 0.587) * 255.0).abs() < 1e-9);
        let bytes = fs::read(&p).unwrap();
        let e = decode_with_image(&bytes, ::image::ImageFormat::Png, &p, Format::Png, false)
            .unwrap_err();
        assert!(matches!(e, ImageError::Colour { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("rgb16.png: a colour image (RGB, 16 bits)"),
            "{msg}"
        );
        assert!(msg.contains("--as-gray"), "{msg}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = test_dir("errors");
        let missing = dir.join("nope.png");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, ImageError::Missing { .. }));
        assert!(e.to_string().contains("nope.png"), "{e}");
        assert!(e.to_string().contains("no such file"), "{e}");

        let text = dir.join("text.png");
        fs::write(&text, b"hello, this is not an image").unwrap();
        let e = load(&text).unwrap_err();
        assert!(matches!(e, ImageError::UnknownFormat { .. }), "{e}");
        assert!(e.to_string().contains("text.png") && e.to_string().contains("not a PNG"));

        let good = dir.join("good.png");
        save_png(&ramp(20, 20), &good, 8).unwrap();
        let bytes = fs::read(&good).unwrap();
        let truncated = dir.join("trunc.png");
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&truncated).unwrap_err();
        assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("trunc.png") && e.to_string().contains("corrupted"));

        let e = load(&dir).unwrap_err(); // a directory
        assert!(e.to_string().contains("ppdenoise-image-test"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failed_save_leaves_nothing_behind() {
        let dir = test_dir("atomic");
        let p = dir.join("out.png");
        save_png(&ramp(4, 4), &p, 8).unwrap();
        let before = fs::read(&p).unwrap();

        let mut bad = ramp(4, 4);
        bad.pixels[[2, 3]] = f64::NAN;
        let e = save_png(&bad, &p, 8).unwrap_err();
        assert!(matches!(e, ImageError::NotANumber { row: 2, col: 3, .. }));
        let e = save_png(&ramp(4, 4), &p, 12).unwrap_err();
        assert!(matches!(e, ImageError::BitDepth { depth: 12, .. }));
        // A directory in the way makes the rename fail after the temp file was written.
        let blocked = dir.join("blocked.png");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        let e = save_png(&ramp(4, 4), &blocked, 8).unwrap_err();
        assert!(e.to_string().contains("blocked.png"), "{e}");
        // Writing into a missing directory fails cleanly too.
        assert!(save_png(&ramp(4, 4), dir.join("no/such/dir.png"), 8).is_err());

        assert_eq!(fs::read(&p).unwrap(), before);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["blocked.png", "out.png"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn noise_is_deterministic_unclipped_and_has_the_right_sigma() {
        let img = GrayImage::new(Array2::from_elem((256, 256), 128.0), 8);
        let a = add_noise(&img, 25.0, 7);
        let b = add_noise(&img, 25.0, 7);
        let c = add_noise(&img, 25.0, 8);
        assert_eq!(a, b);
        assert_ne!(a.pixels, c.pixels);
        let n = a.pixels.len() as f64;
        let mean = a.pixels.iter().map(|v| v - 128.0).sum::<f64>() / n;
        let var = a
            .pixels
            .iter()
            .map(|v| (v - 128.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.3, "mean {mean}");
        assert!((var.sqrt() - 25.0).abs() < 0.3, "std {}", var.sqrt());
        // Not clipped and not rounded.
        let black = GrayImage::new(Array2::zeros((16, 16)), 8);
        let nb = add_noise(&black, 10.0, 1);
        assert!(nb.pixels.iter().any(|&v| v < 0.0));
        assert!(nb.pixels.iter().any(|&v| v.fract() != 0.0));
        // Row-major: the first sample goes to (0, 0), the second to (0, 1).
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let normal = Normal::new(0.0, 10.0).unwrap();
        let s0: f64 = normal.sample(&mut rng);
        let s1: f64 = normal.sample(&mut rng);
        assert_eq!(nb.pixels[[0, 0]], s0);
        assert_eq!(nb.pixels[[0, 1]], s1);
        // sigma 0 is the identity.
        assert_eq!(add_noise(&img, 0.0, 3), img);
    }

    #[test]
    #[should_panic(expected = "sigma")]
    fn negative_sigma_panics() {
        let _ = add_noise(&ramp(2, 2), -1.0, 0);
    }

    #[test]
    fn quantize_rounds_and_clamps() {
        let q = quantize_u8(&array![[-0.6, 0.5, 1.49, 254.6, 1e9, f64::NEG_INFINITY]]);
        assert_eq!(q, array![[0.0, 1.0, 1.0, 255.0, 255.0, 0.0]]);
    }

    #[test]
    fn load_input_resolves_builtins_and_paths() {
        let img = load_input("builtin:phantom:64").unwrap();
        assert_eq!(img.pixels.dim(), (64, 64));
        let e = load_input("builtin:lena").unwrap_err();
        assert!(matches!(e, ImageError::UnknownBuiltin { .. }));
        assert!(e.to_string().contains("lena"));
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics/pair1_a.png");
        let img = load_input(p.to_str().unwrap()).unwrap();
        assert_eq!(img.pixels.dim(), (48, 64));
    }
}
