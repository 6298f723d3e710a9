//! Built-in test images: the modified Shepp-Logan phantom.
//!
//! The phantom is the sum of ten ellipses with Toft's "modified" intensities
//! (the ones of MATLAB's `phantom('Modified Shepp-Logan', n)` and of
//! scikit-image's `shepp_logan_phantom`), sampled on MATLAB's grid: pixel
//! centres at `x = (c - (n-1)/2) / ((n-1)/2)` (columns, left to right) and
//! `y = ((n-1)/2 - r) / ((n-1)/2)` (rows, top to bottom, so `y = +1` is the
//! top row). A pixel belongs to an ellipse when its rotated, normalised
//! radius is `<= 1`.
//!
//! Scaling rule: the phantom's intensities are all multiples of 0.1, so they
//! are summed exactly as integers in tenths, clamped to 0..=10 and mapped to
//! the 0..255 scale as `tenths * 25.5` (that is, `value * 255` without
//! rounding error). Levels present: 0 (outside and ventricles), 25.5 (0.1),
//! 51 (0.2, brain), 76.5 (0.3), 102 (0.4) and 255 (1.0, skull).
//!
//! At n = 400 the result equals scikit-image's `shepp_logan_phantom()` (a
//! 400x400 8-bit image) pixel for pixel once floored to integers (skimage
//! stores 25.5 as 25 and 76.5 as 76); a test checks this.

use crate::image::GrayImage;
use ndarray::Array2;

/// Default side length of the phantom (`builtin:phantom`).
pub const DEFAULT_SIZE: usize = 512;

/// Largest side accepted by [`builtin`] (guards against absurd allocations).
pub const MAX_BUILTIN_SIZE: usize = 8192;

/// One ellipse: intensity in tenths, semi-axes a (x) and b (y), centre
/// (x0, y0), rotation in degrees (counter-clockwise).
struct Ellipse {
    tenths: i32,
    a: f64,
    b: f64,
    x0: f64,
    y0: f64,
    phi_deg: f64,
}

/// Toft's modified Shepp-Logan ellipses (MATLAB `phantom` table order).
const MODIFIED_SHEPP_LOGAN: [Ellipse; 10] = [
    Ellipse {
        tenths: 10,
        a: 0.69,
        b: 0.92,
        x0: 0.0,
        y0: 0.0,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: -8,
        a: 0.6624,
        b: 0.874,
        x0: 0.0,
        y0: -0.0184,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: -2,
        a: 0.11,
        b: 0.31,
        x0: 0.22,
        y0: 0.0,
        phi_deg: -18.0,
    },
    Ellipse {
        tenths: -2,
        a: 0.16,
        b: 0.41,
        x0: -0.22,
        y0: 0.0,
        phi_deg: 18.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.21,
        b: 0.25,
        x0: 0.0,
        y0: 0.35,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.046,
        b: 0.046,
        x0: 0.0,
        y0: 0.1,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.046,
        b: 0.046,
        x0: 0.0,
        y0: -0.1,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.046,
        b: 0.023,
        x0: -0.08,
        y0: -0.605,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.023,
        b: 0.023,
        x0: 0.0,
        y0: -0.606,
        phi_deg: 0.0,
    },
    Ellipse {
        tenths: 1,
        a: 0.023,
        b: 0.046,
        x0: 0.06,
        y0: -0.605,
        phi_deg: 0.0,
    },
];

/// The modified Shepp-Logan phantom of size `n x n` on the 0..255 scale
/// (see the module documentation for the grid and the scaling rule).
/// `bit_depth` is 8. `n = 0` gives an empty image; `n = 1` samples the
/// centre only.
pub fn shepp_logan(n: usize) -> GrayImage {
    let half = (n as f64 - 1.0) / 2.0;
    // For n = 1 the single pixel sits at the centre (0, 0).
    let coord = |i: usize| if n > 1 { (i as f64 - half) / half } else { 0.0 };
    let mut tenths = Array2::<i32>::zeros((n, n));
    for e in &MODIFIED_SHEPP_LOGAN {
        let (sin_p, cos_p) = e.phi_deg.to_radians().sin_cos();
        let (asq, bsq) = (e.a * e.a, e.b * e.b);
        for r in 0..n {
            let y = -coord(r) - e.y0;
            for c in 0..n {
                let x = coord(c) - e.x0;
                let u = x * cos_p + y * sin_p;
                let v = y * cos_p - x * sin_p;
                if u * u / asq + v * v / bsq <= 1.0 {
                    tenths[[r, c]] += e.tenths;
                }
            }
        }
    }
    GrayImage::new(tenths.mapv(|t| f64::from(t.clamp(0, 10)) * 25.5), 8)
}

/// Resolves a built-in image by name: `"phantom"` (512 x 512) or
/// `"phantom:<size>"` with `1 <= size <=` [`MAX_BUILTIN_SIZE`]
/// (e.g. `"phantom:128"`). The CLI accepts these as `builtin:<name>`
/// wherever an input image is expected (see
/// [`crate::image::load_input`]). Unknown names give `None`.
pub fn builtin(name: &str) -> Option<GrayImage> {
    let size = match name.strip_prefix("phantom") {
        Some("") => DEFAULT_SIZE,
        Some(rest) => {
            let digits = rest.strip_prefix(':')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<usize>().ok()?
        }
        None => return None,
    };
    (1..=MAX_BUILTIN_SIZE)
        .contains(&size)
        .then(|| shepp_logan(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel index of coordinate `t` in [-1, 1] on an n-grid (nearest).
    fn idx(n: usize, t: f64) -> usize {
        let half = (n as f64 - 1.0) / 2.0;
        (t * half + half).round() as usize
    }

    /// Value at (x, y) in phantom coordinates.
    fn at(img: &GrayImage, x: f64, y: f64) -> f64 {
        let n = img.width();
        img.pixels[[idx(n, -y), idx(n, x)]]
    }

    #[test]
    fn known_values() {
        let img = shepp_logan(256);
        assert_eq!(img.pixels.dim(), (256, 256));
        assert_eq!(img.bit_depth, 8);
        // Corners and the area outside the skull are 0.
        for &(r, c) in &[(0, 0), (0, 255), (255, 0), (255, 255), (128, 0), (0, 128)] {
            assert_eq!(img.pixels[[r, c]], 0.0);
        }
        // Centre: brain matter, 1 - 0.8 = 0.2 -> 51.
        assert_eq!(img.pixels[[127, 127]], 51.0);
        assert_eq!(img.pixels[[128, 128]], 51.0);
        assert_eq!(at(&img, 0.0, 0.0), 51.0);
        // Skull (between the two outer ellipses): 1.0 -> 255.
        assert_eq!(at(&img, 0.0, 0.90), 255.0);
        assert_eq!(at(&img, 0.0, -0.905), 255.0);
        assert_eq!(at(&img, 0.68, 0.0), 255.0);
        // Ventricles: 0.2 - 0.2 = 0.
        assert_eq!(at(&img, 0.22, 0.0), 0.0);
        assert_eq!(at(&img, -0.22, 0.0), 0.0);
        // Upper blob (ellipse 5): 0.3 -> 76.5.
        assert_eq!(at(&img, 0.0, 0.35), 76.5);
        // Small discs at y = -0.1 and the overlap at y = 0.1 with ellipse 5.
        assert_eq!(at(&img, 0.0, -0.1), 76.5);
        assert_eq!(at(&img, 0.0, 0.12), 102.0);
        // Outside the head.
        assert_eq!(at(&img, 0.0, 0.97), 0.0);
        assert_eq!(at(&img, 0.8, 0.0), 0.0);
    }

    #[test]
    fn range_and_levels() {
        let img = shepp_logan(200);
        let allowed = [0.0, 25.5, 51.0, 76.5, 102.0, 255.0];
        for &v in img.pixels.iter() {
            assert!(allowed.contains(&v), "unexpected level {v}");
        }
        let max = img.pixels.iter().cloned().fold(f64::MIN, f64::max);
        let min = img.pixels.iter().cloned().fold(f64::MAX, f64::min);
        assert_eq!((min, max), (0.0, 255.0));
        // Every level occurs.
        for level in allowed {
            assert!(
                img.pixels.iter().any(|&v| v == level),
                "level {level} missing"
            );
        }
    }

    #[test]
    fn left_right_symmetric_except_ventricles_and_small_bottom_ellipses() {
        let n = 256;
        let img = shepp_logan(n);
        let half = (n as f64 - 1.0) / 2.0;
        // Mirror symmetry is broken only by the two ventricles (different
        // sizes; bounding boxes |x| in [0.022, 0.418], |y| <= 0.393) and by
        // ellipses 8 and 10 (x0 = -0.08 and 0.06) in the band
        // y in [-0.651, -0.559], |x| <= 0.126.
        let explained = |r: usize, c: usize| {
            let x = ((c as f64 - half) / half).abs();
            let y = (half - r as f64) / half;
            let ventricles = (0.015..=0.425).contains(&x) && y.abs() <= 0.40;
            let bottom = (-0.66..=-0.55).contains(&y) && x <= 0.13;
            ventricles || bottom
        };
        let mut differ = 0;
        for r in 0..n {
            for c in 0..n {
                if img.pixels[[r, c]] != img.pixels[[r, n - 1 - c]] {
                    assert!(explained(r, c), "asymmetry at row {r} col {c}");
                    differ += 1;
                }
            }
        }
        assert!(differ > 0, "the phantom is not exactly symmetric");
        // Top-bottom is not symmetric (the blob is on top).
        assert_ne!(
            img.pixels[[idx(n, -0.35), n / 2]],
            img.pixels[[idx(n, 0.35), n / 2]]
        );
    }

    #[test]
    fn sizes_and_area_fractions_agree() {
        // The brain (0.2) covers about the same fraction of the field at every size.
        let frac = |n: usize| {
            let img = shepp_logan(n);
            img.pixels.iter().filter(|&&v| v == 51.0).count() as f64 / (n * n) as f64
        };
        let (f64_, f512) = (frac(64), frac(512));
        assert!((f64_ - f512).abs() < 0.02, "{f64_} vs {f512}");
        assert_eq!(shepp_logan(1).pixels[[0, 0]], 51.0);
        assert_eq!(shepp_logan(0).pixels.dim(), (0, 0));
    }

    #[test]
    fn matches_scikit_image_phantom_at_400() {
        // scikit-image 0.26.0 ships `shepp_logan_phantom()` as a 400x400
        // 8-bit image (levels 0, 25, 51, 76, 102, 255: our value floored).
        // Its pixel counts per level and FNV-1a-64 hash of the row-major
        // bytes, computed with numpy from `skimage.data.shepp_logan_phantom()`
        // (`np.round(img * 255).astype(np.uint8)`), must be reproduced.
        let img = shepp_logan(400);
        let bytes: Vec<u8> = img.pixels.iter().map(|&v| v.floor() as u8).collect();
        let mut counts = std::collections::BTreeMap::new();
        for &b in &bytes {
            *counts.entry(b).or_insert(0usize) += 1;
        }
        let want: std::collections::BTreeMap<u8, usize> = [
            (0, 92847),
            (25, 225),
            (51, 52866),
            (76, 6950),
            (102, 122),
            (255, 6990),
        ]
        .into_iter()
        .collect();
        assert_eq!(counts, want);
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(hash, 0x33cf_6eb3_9725_2a92);
    }

    #[test]
    fn builtin_names() {
        let d = builtin("phantom").unwrap();
        assert_eq!(d.pixels.dim(), (DEFAULT_SIZE, DEFAULT_SIZE));
        assert_eq!(d, shepp_logan(512));
        assert_eq!(builtin("phantom:128").unwrap(), shepp_logan(128));
        assert_eq!(builtin("phantom:7").unwrap().pixels.dim(), (7, 7));
        for bad in [
            "",
            "lena",
            "phantom:",
            "phantom:0",
            "phantom:-3",
            "phantom:+3",
            "phantom:12x",
            "phantom128",
            "phantom:99999999",
            "Phantom",
            "phantom: 64",
        ] {
            assert!(builtin(bad).is_none(), "{bad:?} should be rejected");
        }
    }
}
