//! Noise levels for models that take a noise map (FFDNet): one sigma for the whole image, or
//! a sigma per pixel — given as a file, or computed by the gateway from a signal-dependent
//! model (variance = A * pixel + B, the Poisson-Gaussian noise of X-ray and CT detectors).
//!
//! A per-pixel map computed from pixel values reveals the image, so the gateway shares it
//! with the image; only a uniform sigma is public (docs/security.md).

use std::path::{Path, PathBuf};

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::image::GrayImage;
use crate::model::frame::Frame;

/// Why a noise level, a noise model or a map was refused, naming the file where one was read.
#[derive(Debug, thiserror::Error)]
pub enum NoiseMapError {
    /// A level above [`MAX_SIGMA`].
    #[error(
        "noise level {0:.3} on the 0..255 scale: a model with a noise map takes up to \
         {MAX_SIGMA} (its fixed point was measured to there)"
    )]
    AboveMax(f64),
    /// A malformed `poisson-gaussian:A,B`.
    #[error("noise model {spec:?}: {why}")]
    NoiseModel { spec: String, why: &'static str },
    /// The map's file could not be read.
    #[error("{}: cannot read the noise map: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The map given as an image could not be decoded.
    #[error("{}: reading the noise map: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: crate::image::ImageError,
    },
    /// The map's values, shape or encoding are not a map of sigmas for the image.
    #[error("{}: {what}", .path.display())]
    Map { path: PathBuf, what: String },
}

type Result<T, E = NoiseMapError> = std::result::Result<T, E>;

/// A [`NoiseMapError::Map`] of `path`.
fn refused(path: &Path, what: String) -> NoiseMapError {
    NoiseMapError::Map {
        path: path.into(),
        what,
    }
}

/// Largest sigma a map may hold (0..255 scale). FFDNet was trained on [0, 75]; with the fixed
/// point recorded for it (k = 20, and k = 19 since issue 51) no activation left its range on
/// set12 up to sigma 150, and thousands did at 255 (k = 20).
pub const MAX_SIGMA: f64 = 150.0;

/// Refuses a level (0..255 scale) above [`MAX_SIGMA`] for a model with a noise map, in the
/// words every option that sets one uses.
pub fn check_max_sigma(level: f64) -> Result<()> {
    if level > MAX_SIGMA {
        return Err(NoiseMapError::AboveMax(level));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub enum NoiseLevel {
    /// One sigma (0..255 scale) everywhere: public.
    Uniform(f64),
    /// One sigma (0..255 scale) per colour plane, R, G, B, for a model with a map per
    /// colour. Shared in the map like a per-pixel one (the job records the model's nominal
    /// sigma): it may have been estimated from the pixels.
    PerColour(Vec<f64>),
    /// A sigma per pixel (0..255 scale): image-sized (h x w, every plane's), or one map per
    /// colour plane stacked like the planes ((C*h) x w): secret.
    PerPixel(Array2<f64>),
}

impl NoiseLevel {
    /// Whether this level can fill `maps` map channels of an image of `colours` planes,
    /// each h rows: a sigma or map per plane needs a map channel per plane.
    pub fn fits(&self, colours: usize, maps: usize, h: usize) -> Result<(), String> {
        let per_plane = match self {
            NoiseLevel::Uniform(_) => return Ok(()),
            NoiseLevel::PerColour(v) if v.len() != colours => {
                return Err(format!(
                    "{} sigmas for an image of {colours} colour plane(s)",
                    v.len()
                ))
            }
            NoiseLevel::PerColour(v) => v.iter().any(|s| *s != v[0]),
            NoiseLevel::PerPixel(m) if m.nrows() == h => false,
            NoiseLevel::PerPixel(m) if colours > 1 && m.nrows() == colours * h => true,
            NoiseLevel::PerPixel(m) => {
                return Err(format!(
                    "a map of {} rows for an image of {colours} plane(s) of {h} rows",
                    m.nrows()
                ))
            }
        };
        if per_plane && maps != colours {
            return Err(format!(
                "a noise level per colour plane, for a model that takes {maps} noise-map \
                 channel(s) for its {colours} planes (one shared by the colours, as the \
                 authors' colour FFDNet): give one level for all planes, or a model with a \
                 map per colour"
            ));
        }
        Ok(())
    }

    /// The `maps` map channels' values (sigma / 255) at the frame's sub-image resolution, for
    /// an h x w image, channel after channel ([`NoiseLevel::fits`] checked). A per-pixel map
    /// is padded like the image and each r x r cell becomes the root mean square of its
    /// sigmas (the cell's noise variance is their mean).
    pub fn stack_map(&self, frame: &Frame, maps: usize, h: usize, w: usize) -> Vec<f64> {
        if let NoiseLevel::PerColour(v) = self {
            // A level per plane fills a channel per plane; one level (repeated) fills one.
            assert!(
                !v.is_empty() && (v.len() == maps || v.iter().all(|s| *s == v[0])),
                "levels per colour checked by NoiseLevel::fits"
            );
        }
        let (sh, sw) = frame.stack_dims(h, w);
        (0..maps)
            .flat_map(|c| match self {
                NoiseLevel::Uniform(s) => vec![s / 255.0; sh * sw],
                NoiseLevel::PerColour(v) => vec![v[c.min(v.len() - 1)] / 255.0; sh * sw],
                NoiseLevel::PerPixel(m) => {
                    let rows = if m.nrows() == h {
                        0..h
                    } else {
                        c * h..(c + 1) * h
                    };
                    let plane = m.slice(ndarray::s![rows, ..]);
                    assert_eq!(plane.dim(), (h, w), "a map of the image's size");
                    let var: Vec<f64> = plane.iter().map(|s| s * s).collect();
                    let cells = Frame {
                        unshuffle: frame.unshuffle,
                        noise_map: false,
                    }
                    .stack_input(&var, &[], h, w);
                    let (n, k) = (sh * sw, frame.sub_images());
                    (0..n)
                        .map(|i| {
                            let v = (0..k).map(|c| cells[c * n + i]).sum::<f64>() / k as f64;
                            v.sqrt() / 255.0
                        })
                        .collect()
                }
            })
            .collect()
    }

    pub fn describe(&self) -> String {
        match self {
            NoiseLevel::Uniform(s) => format!("sigma {s}"),
            NoiseLevel::PerColour(v) => format!(
                "sigma {} per colour plane",
                v.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NoiseLevel::PerPixel(_) => "a per-pixel noise map".into(),
        }
    }
}

/// Signal-dependent noise: variance = a * pixel + b (pixels and sigma on the 0..255 scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoissonGaussian {
    pub a: f64,
    pub b: f64,
}

impl PoissonGaussian {
    /// Parses `poisson-gaussian:A,B`.
    pub fn parse(spec: &str) -> Result<PoissonGaussian> {
        let bad = |why| NoiseMapError::NoiseModel {
            spec: spec.into(),
            why,
        };
        let Some(rest) = spec.strip_prefix("poisson-gaussian:") else {
            return Err(bad(
                "expected poisson-gaussian:A,B (variance = A * pixel + B)",
            ));
        };
        let parts: Vec<&str> = rest.split(',').collect();
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        match parts.as_slice() {
            [a, b] => match (num(a), num(b)) {
                (Some(a), Some(b)) if a > 0.0 || b > 0.0 => Ok(PoissonGaussian { a, b }),
                _ => Err(bad("A and B must be finite, at least 0, and not both 0")),
            },
            _ => Err(bad("expected two numbers, poisson-gaussian:A,B")),
        }
    }

    /// Sigma at a pixel value (negative pixels count as 0), at most [`MAX_SIGMA`].
    pub fn sigma(&self, pixel: f64) -> f64 {
        (self.a * pixel.max(0.0) + self.b).sqrt().min(MAX_SIGMA)
    }

    /// The per-pixel map of an image, sigma from each pixel's value: what the gateway
    /// computes from the noisy image it holds.
    pub fn map_of(&self, img: &Array2<f64>) -> Array2<f64> {
        img.mapv(|p| self.sigma(p))
    }

    /// The clean image with this noise added (seeded): each pixel's sigma from its clean
    /// value. Not rounded or clipped.
    pub fn add_to(&self, clean: &GrayImage, seed: u64) -> GrayImage {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let pixels = clean.pixels.mapv(|p| {
            let z: f64 = StandardNormal.sample(&mut rng);
            p + self.sigma(p) * z
        });
        GrayImage {
            pixels,
            bit_depth: clean.bit_depth,
        }
    }
}

/// Checks a per-pixel map against an h x w image of `colours` planes: h x w, or with
/// `per_plane`, (colours*h) x w (a map per plane, stacked R over G over B) too.
pub fn check_map(
    path: &Path,
    m: &Array2<f64>,
    (colours, h, w): (usize, usize, usize),
    per_plane: bool,
) -> Result<()> {
    if m.dim() == (colours * h, w) && colours > 1 && !per_plane {
        return Err(refused(
            path,
            format!(
                "a noise map per colour plane ({} x {w}: {colours} planes' maps stacked), for \
                 a model that takes one map for its planes (the authors' colour FFDNet): give \
                 an {h} x {w} map",
                colours * h
            ),
        ));
    }
    if m.dim() != (h, w) && m.dim() != (colours * h, w) {
        return Err(refused(
            path,
            format!(
                "a noise map of {} x {} values for a {h} x {w} image (one sigma per pixel \
             expected{})",
                m.dim().0,
                m.dim().1,
                if per_plane && colours > 1 {
                    format!(
                        ", or {} x {w}: a map per colour plane, stacked R over G over B",
                        colours * h
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    if let Some((i, v)) = m
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && (0.0..=MAX_SIGMA).contains(*v)))
    {
        return Err(refused(
            path,
            format!("value {v} at flat index {i} is not a sigma in 0..{MAX_SIGMA}"),
        ));
    }
    Ok(())
}

/// Reads a per-pixel sigma map (0..255 scale) for an h x w image: a 2-D `.npy` array (f64
/// or f32), or an image file whose grey values are the sigmas.
pub fn load_map(path: &Path, h: usize, w: usize) -> Result<Array2<f64>> {
    load_maps(path, (1, h, w), false)
}

/// [`load_map`] for an image of `colours` planes, each h x w: one h x w map for every plane,
/// or with `per_plane` (a model with a map per colour) a (colours*h) x w map, the planes'
/// maps stacked like the planes.
pub fn load_maps(
    path: &Path,
    (colours, h, w): (usize, usize, usize),
    per_plane: bool,
) -> Result<Array2<f64>> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let m = if is_npy {
        read_npy(path, colours * h, w)?
    } else {
        let img = crate::image::load(path).map_err(|source| NoiseMapError::Image {
            path: path.into(),
            source,
        })?;
        // A 16-bit image is read scaled to 0..255: its grey values would not be the sigmas.
        if img.bit_depth != 8 {
            return Err(refused(
                path,
                format!(
                    "a {}-bit image; a noise map given as an image must be 8-bit grey values \
                     (sigmas 0..255), or use a float .npy",
                    img.bit_depth
                ),
            ));
        }
        img.pixels
    };
    check_map(path, &m, (colours, h, w), per_plane)?;
    Ok(m)
}

/// Reads a 2-D float `.npy` of at most h x w values. ndarray-npy allocates from the header's
/// shape before reading, so the header is checked first (as for model files, `import::npz`):
/// its shape must account for exactly the file's bytes, and those must fit an h x w map.
/// The file is opened once and read whole (at most a map's bytes and a header), so the bytes
/// checked are the bytes parsed: a file swapped between a check and a second open would be
/// read unchecked.
fn read_npy(path: &Path, h: usize, w: usize) -> Result<Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    use std::io::Read;
    let io = |source| NoiseMapError::Io {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let most = (h * w * 8) as u64 + crate::fileio::npy::MAX_HEADER_BYTES;
    let mut bytes = Vec::new();
    file.take(most + 1).read_to_end(&mut bytes).map_err(io)?;
    let len = bytes.len() as u64;
    let (header, data) =
        crate::fileio::npy::declared(&mut &bytes[..]).map_err(|e| refused(path, e))?;
    let Some(data) = data else {
        return Err(refused(
            path,
            "not a float array (f64 or f32 expected)".into(),
        ));
    };
    if header + data != len {
        return Err(refused(
            path,
            format!(
                "its header's shape needs {data} bytes of data, the file holds {}{}",
                len.saturating_sub(header),
                if len > most { " or more" } else { "" }
            ),
        ));
    }
    if data > (h * w * 8) as u64 {
        return Err(refused(
            path,
            format!("{data} bytes of data, more than a {h} x {w} map of sigmas"),
        ));
    }
    match Array2::<f64>::read_npy(&bytes[..]) {
        Ok(a) => Ok(a),
        Err(_) => Array2::<f32>::read_npy(&bytes[..])
            .map(|a| a.mapv(f64::from))
            .map_err(|e| refused(path, format!("not a 2-D f64 or f32 .npy array ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map is read from the one open that checked it, and a file longer than any map
    /// of the image's size is refused without being read whole.
    #[test]
    fn an_npy_map_is_read_from_the_bytes_checked() {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.npy");
        let map = Array2::from_shape_fn((3, 4), |(i, j)| (10 * i + j) as f64);
        let mut bytes = Vec::new();
        map.write_npy(&mut bytes).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_npy(&path, 3, 4).unwrap(), map);
        // A map followed by a megabyte: refused, and not read past the bound.
        bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
        std::fs::write(&path, &bytes).unwrap();
        let e = read_npy(&path, 3, 4).unwrap_err().to_string();
        assert!(
            e.contains("the file holds") && e.ends_with("or more"),
            "{e}"
        );
    }

    #[test]
    fn uniform_and_per_pixel_maps_agree_when_constant() {
        let f = Frame::FFDNET;
        let u = NoiseLevel::Uniform(25.0).stack_map(&f, 1, 5, 7);
        let p = NoiseLevel::PerPixel(Array2::from_elem((5, 7), 25.0)).stack_map(&f, 1, 5, 7);
        assert_eq!(u.len(), 3 * 4);
        for (a, b) in u.iter().zip(&p) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn per_pixel_cells_are_rms() {
        // 2 x 2 image, one cell: sigmas 0, 0, 0, 20 -> sqrt(400 / 4) = 10.
        let m = Array2::from_shape_vec((2, 2), vec![0.0, 0.0, 0.0, 20.0]).unwrap();
        let v = NoiseLevel::PerPixel(m).stack_map(&Frame::FFDNET, 1, 2, 2);
        assert_eq!(v.len(), 1);
        assert!((v[0] - 10.0 / 255.0).abs() < 1e-12);
    }

    /// A level per colour fills a map channel per colour, R's first; one level or one
    /// image-sized map fills each channel alike; a level per plane for one map channel is
    /// refused unless the levels are one.
    #[test]
    fn a_level_per_colour_fills_a_channel_per_colour() {
        let f = Frame::FFDNET;
        let per = NoiseLevel::PerColour(vec![10.0, 20.0, 30.0]);
        assert!(per.fits(3, 3, 4).is_ok());
        let v = per.stack_map(&f, 3, 4, 6);
        assert_eq!(v.len(), 3 * 2 * 3);
        for (c, s) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            assert!(v[c * 6..(c + 1) * 6].iter().all(|x| *x == s / 255.0), "{c}");
        }
        let e = per.fits(3, 1, 4).unwrap_err();
        assert!(e.contains("a map per colour"), "{e}");
        assert!(per.fits(2, 2, 4).unwrap_err().contains("3 sigmas"));
        assert!(NoiseLevel::PerColour(vec![9.0; 3]).fits(3, 1, 4).is_ok());
        // A map per plane: rows 0..2 R (sigma 4), 2..4 G (8), 4..6 B (0 and 20: rms 10).
        let mut m = Array2::zeros((6, 2));
        m.slice_mut(ndarray::s![0..2, ..]).fill(4.0);
        m.slice_mut(ndarray::s![2..4, ..]).fill(8.0);
        m[[5, 1]] = 20.0;
        let map = NoiseLevel::PerPixel(m);
        assert!(map.fits(3, 3, 2).is_ok());
        assert!(map.fits(3, 1, 2).is_err());
        assert!(map.fits(3, 3, 3).unwrap_err().contains("6 rows"));
        let v = map.stack_map(&f, 3, 2, 2);
        let want = [4.0, 8.0, 10.0].map(|s| s / 255.0);
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{v:?}");
        }
        let one = NoiseLevel::PerPixel(Array2::from_elem((2, 2), 5.0));
        assert!(one.fits(3, 3, 2).is_ok());
        assert_eq!(one.stack_map(&f, 3, 2, 2), vec![5.0 / 255.0; 3]);
    }

    #[test]
    fn poisson_gaussian_parse_and_sigma() {
        let pg = PoissonGaussian::parse("poisson-gaussian:2,100").unwrap();
        assert_eq!(pg.sigma(0.0), 10.0);
        assert_eq!(pg.sigma(150.0), 20.0);
        for bad in [
            "gaussian:1,2",
            "poisson-gaussian:1",
            "poisson-gaussian:-1,2",
            "poisson-gaussian:0,0",
            "poisson-gaussian:nan,1",
        ] {
            assert!(PoissonGaussian::parse(bad).is_err(), "{bad}");
        }
    }
}
