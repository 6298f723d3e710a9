//! Image quality metrics: MSE, PSNR and SSIM; and the receiver's check that a result does not
//! look ruined ([`suspect`]).
//!
//! Both PSNR and SSIM reproduce scikit-image (checked against
//! `skimage.metrics` 0.26.0 to ~1e-12 on the fixtures in
//! `fixtures/metrics/`, see its README):
//!
//! * [`psnr`] = `peak_signal_noise_ratio(a, b, data_range=...)`,
//! * [`ssim`] = `structural_similarity(a, b, gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False, data_range=255)`, i.e. the
//!   SSIM of Wang et al. 2004.
//!
//! How skimage computes that SSIM: the local means `ux, uy` and second
//! moments `uxx, uyy, uxy` are `scipy.ndimage.gaussian_filter` outputs
//! (sigma 1.5, truncate 3.5, so an 11-tap kernel of radius 5, mode
//! 'reflect'); `vx = uxx - ux^2` etc. (population covariance);
//! `S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2))` with
//! `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2`; the result is the mean of `S` after
//! cropping `(11 - 1) / 2 = 5` pixels from every border. Because the crop
//! equals the filter radius, every pixel that survives the crop has its whole
//! 11x11 window inside the image, so the 'reflect' padding never reaches the
//! result: this module filters the valid region only, which is exact and
//! cheaper.

pub mod suspect;

use ndarray::{Array2, ArrayBase, Data, Ix2};

/// Gaussian sigma of the SSIM window.
pub const SSIM_SIGMA: f64 = 1.5;
/// Radius of the SSIM window: `int(3.5 * 1.5 + 0.5) = 5` as in scipy.
pub const SSIM_RADIUS: usize = 5;
/// Smallest side length [`ssim`] accepts (the 11x11 window must fit).
pub const SSIM_MIN_SIDE: usize = 2 * SSIM_RADIUS + 1;
/// SSIM stabilising constant K1.
pub const SSIM_K1: f64 = 0.01;
/// SSIM stabilising constant K2.
pub const SSIM_K2: f64 = 0.03;
/// Data range of 0..255-scale images.
pub const DATA_RANGE_8BIT: f64 = 255.0;

fn check_shapes<S1, S2>(a: &ArrayBase<S1, Ix2>, b: &ArrayBase<S2, Ix2>, what: &str)
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    assert_eq!(
        a.dim(),
        b.dim(),
        "{what}: images must have the same shape, got {:?} and {:?}",
        a.dim(),
        b.dim()
    );
}

/// Mean squared error over all pixels.
///
/// # Panics
/// If the shapes differ or the images are empty.
pub fn mse<S1, S2>(a: &ArrayBase<S1, Ix2>, b: &ArrayBase<S2, Ix2>) -> f64
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    check_shapes(a, b, "mse");
    assert!(!a.is_empty(), "mse: images are empty");
    let sum: f64 = a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum();
    sum / a.len() as f64
}

/// Peak signal-to-noise ratio in dB: `10 log10(data_range^2 / MSE)`, with
/// the MSE over all pixels. Identical images give `+inf`. Use
/// [`DATA_RANGE_8BIT`] (255) for 0..255-scale images.
///
/// # Panics
/// If the shapes differ or the images are empty.
pub fn psnr<S1, S2>(a: &ArrayBase<S1, Ix2>, b: &ArrayBase<S2, Ix2>, data_range: f64) -> f64
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    let err = mse(a, b);
    if err == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (data_range * data_range / err).log10()
}

/// SSIM of two 0..255-scale images (data range 255); see the module
/// documentation for the exact definition. Symmetric in `a` and `b`;
/// `ssim(a, a) == 1` up to rounding.
///
/// # Panics
/// If the shapes differ or a side is shorter than [`SSIM_MIN_SIDE`] (11),
/// as skimage raises in that case.
pub fn ssim<S1, S2>(a: &ArrayBase<S1, Ix2>, b: &ArrayBase<S2, Ix2>) -> f64
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    ssim_with_range(a, b, DATA_RANGE_8BIT)
}

/// SSIM of images of `colours` planes stacked, (colours h) x w: the mean of the planes'
/// [`ssim`]s, as the FFDNet authors' and KAIR's `calculate_ssim` score RGB (gray: [`ssim`]).
///
/// # Panics
/// As [`ssim`], and if the rows are not a multiple of `colours`.
pub fn ssim_planes<S1, S2>(a: &ArrayBase<S1, Ix2>, b: &ArrayBase<S2, Ix2>, colours: usize) -> f64
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    assert!(
        colours > 0 && a.nrows().is_multiple_of(colours),
        "rows of {colours} planes"
    );
    let h = a.nrows() / colours;
    (0..colours)
        .map(|c| {
            let rows = ndarray::s![c * h..(c + 1) * h, ..];
            ssim(&a.slice(rows), &b.slice(rows))
        })
        .sum::<f64>()
        / colours as f64
}

/// [`ssim`] with an explicit data range `L` (`C1 = (0.01 L)^2`,
/// `C2 = (0.03 L)^2`).
///
/// # Panics
/// As [`ssim`].
pub fn ssim_with_range<S1, S2>(
    a: &ArrayBase<S1, Ix2>,
    b: &ArrayBase<S2, Ix2>,
    data_range: f64,
) -> f64
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    check_shapes(a, b, "ssim");
    let (h, w) = a.dim();
    assert!(
        h >= SSIM_MIN_SIDE && w >= SSIM_MIN_SIDE,
        "ssim: images must be at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, got {h}x{w}"
    );
    let kernel = gaussian_kernel(SSIM_SIGMA, SSIM_RADIUS);
    // The five filtered maps, valid region only: (h - 10) x (w - 10).
    let ux = filter_valid(a, b, |x, _| x, &kernel);
    let uy = filter_valid(a, b, |_, y| y, &kernel);
    let uxx = filter_valid(a, b, |x, _| x * x, &kernel);
    let uyy = filter_valid(a, b, |_, y| y * y, &kernel);
    let uxy = filter_valid(a, b, |x, y| x * y, &kernel);
    let c1 = (SSIM_K1 * data_range).powi(2);
    let c2 = (SSIM_K2 * data_range).powi(2);
    let mut sum = 0.0;
    for ((((&mx, &my), &mxx), &myy), &mxy) in ux
        .iter()
        .zip(uy.iter())
        .zip(uxx.iter())
        .zip(uyy.iter())
        .zip(uxy.iter())
    {
        let vx = mxx - mx * mx;
        let vy = myy - my * my;
        let vxy = mxy - mx * my;
        let a1 = 2.0 * mx * my + c1;
        let a2 = 2.0 * vxy + c2;
        let b1 = mx * mx + my * my + c1;
        let b2 = vx + vy + c2;
        sum += (a1 * a2) / (b1 * b2);
    }
    sum / ux.len() as f64
}

/// Normalised 1-D Gaussian kernel of `2 radius + 1` taps, as scipy's
/// `_gaussian_kernel1d`: `exp(-x^2 / (2 sigma^2))` for `x = -radius..=radius`,
/// divided by its sum.
pub fn gaussian_kernel(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
        .collect();
    let total: f64 = k.iter().sum();
    k.into_iter().map(|v| v / total).collect()
}

/// Separable filtering of the image `f(a, b)` with `kernel` (odd length
/// `2r + 1`), returning only the valid region `(h - 2r) x (w - 2r)`: output
/// pixel `(i, j)` is centred on input pixel `(i + r, j + r)`.
fn filter_valid<S1, S2>(
    a: &ArrayBase<S1, Ix2>,
    b: &ArrayBase<S2, Ix2>,
    f: impl Fn(f64, f64) -> f64,
    kernel: &[f64],
) -> Array2<f64>
where
    S1: Data<Elem = f64>,
    S2: Data<Elem = f64>,
{
    let (h, w) = a.dim();
    let taps = kernel.len();
    let (oh, ow) = (h + 1 - taps, w + 1 - taps);
    // Vertical pass (scipy filters axis 0 first): (h - 2r) x w.
    let src: Vec<f64> = a.iter().zip(b.iter()).map(|(&x, &y)| f(x, y)).collect();
    let mut vert = vec![0.0; oh * w];
    for i in 0..oh {
        let out = &mut vert[i * w..(i + 1) * w];
        for (t, &k) in kernel.iter().enumerate() {
            let row = &src[(i + t) * w..(i + t + 1) * w];
            for (o, &v) in out.iter_mut().zip(row) {
                *o += k * v;
            }
        }
    }
    // Horizontal pass: (h - 2r) x (w - 2r).
    let mut out = Vec::with_capacity(oh * ow);
    for i in 0..oh {
        let row = &vert[i * w..(i + 1) * w];
        out.extend(
            row.windows(taps)
                .map(|win| win.iter().zip(kernel).map(|(v, k)| v * k).sum::<f64>()),
        );
    }
    Array2::from_shape_vec((oh, ow), out).expect("valid-region shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::load;
    use ndarray::Array2;
    use std::path::Path;

    /// (file a, file b, skimage PSNR, skimage SSIM), from `ref.py` with
    /// skimage 0.26.0 / scipy 1.17.1 / numpy 2.4.6 / pillow 13.0.0
    /// (see fixtures/metrics/README.md). 16-bit files are compared on the
    /// 0..255 scale (value / 257) with data_range 255.
    const REFERENCE: [(&str, &str, f64, f64); 5] = [
        (
            "pair1_a.png",
            "pair1_b.png",
            28.14656687413313,
            0.6494350286201661,
        ),
        (
            "pair2_a.png",
            "pair2_b.png",
            22.91658200089431,
            0.9870506390993933,
        ),
        (
            "pair3_a.png",
            "pair3_b.png",
            19.86631400352364,
            0.7638601629909726,
        ),
        (
            "pair4_a.png",
            "pair4_b.png",
            7.941866585092522,
            0.030598741573520206,
        ),
        (
            "pair5_a16.png",
            "pair5_b16.png",
            30.43630920135461,
            0.7377212142519284,
        ),
    ];

    fn fixture(name: &str) -> Array2<f64> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/metrics")
            .join(name);
        load(&p).unwrap_or_else(|e| panic!("{e}")).pixels
    }

    #[test]
    fn matches_skimage_reference_values() {
        for (fa, fb, want_psnr, want_ssim) in REFERENCE {
            let (a, b) = (fixture(fa), fixture(fb));
            let p = psnr(&a, &b, DATA_RANGE_8BIT);
            let s = ssim(&a, &b);
            assert!(
                (p - want_psnr).abs() < 1e-9,
                "{fa}: psnr {p} vs {want_psnr}"
            );
            assert!(
                (s - want_ssim).abs() < 1e-9,
                "{fa}: ssim {s} vs {want_ssim}"
            );
            // Both metrics are symmetric.
            assert!((psnr(&b, &a, 255.0) - p).abs() < 1e-12);
            assert!((ssim(&b.view(), &a.view()) - s).abs() < 1e-12);
        }
    }

    #[test]
    fn identical_images() {
        let a = fixture("pair1_a.png");
        assert_eq!(psnr(&a, &a, 255.0), f64::INFINITY);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        let flat = Array2::from_elem((11, 11), 7.0);
        assert!((ssim(&flat, &flat) - 1.0).abs() < 1e-12);
        assert_eq!(mse(&a, &a), 0.0);
    }

    #[test]
    fn psnr_closed_form() {
        let a = Array2::from_elem((4, 5), 100.0);
        let b = Array2::from_elem((4, 5), 110.0); // MSE 100
        let want = 10.0 * (255.0f64 * 255.0 / 100.0).log10();
        assert!((psnr(&a, &b, 255.0) - want).abs() < 1e-12);
        assert!((psnr(&a, &b, 1.0) - 10.0 * (1.0f64 / 100.0).log10()).abs() < 1e-12);
        assert_eq!(mse(&a, &b), 100.0);
    }

    #[test]
    fn kernel_is_scipys() {
        let k = gaussian_kernel(1.5, 5);
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // scipy.ndimage._filters._gaussian_kernel1d(1.5, 0, 5)
        let centre = 1.0
            / (-5i32..=5)
                .map(|x| (-(x * x) as f64 / 4.5).exp())
                .sum::<f64>();
        assert!((k[5] - centre).abs() < 1e-15);
        assert!((k[5] - 0.26601_17).abs() < 1e-6, "{}", k[5]);
        assert_eq!(k[0], k[10]);
    }

    /// scipy `gaussian_filter(mode='reflect')` written the slow, direct way:
    /// 'reflect' extends `a b c d` as `... b a | a b c d | d c ...`.
    fn gaussian_filter_reflect(img: &Array2<f64>) -> Array2<f64> {
        let k = gaussian_kernel(SSIM_SIGMA, SSIM_RADIUS);
        let r = SSIM_RADIUS as i64;
        let reflect = |i: i64, n: usize| -> usize {
            let n = n as i64;
            let period = 2 * n;
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - 1 - m }) as usize
        };
        let (h, w) = img.dim();
        let mut out = Array2::zeros((h, w));
        for i in 0..h {
            for j in 0..w {
                let mut acc = 0.0;
                for di in -r..=r {
                    for dj in -r..=r {
                        let ii = reflect(i as i64 + di, h);
                        let jj = reflect(j as i64 + dj, w);
                        acc += k[(di + r) as usize] * k[(dj + r) as usize] * img[[ii, jj]];
                    }
                }
                out[[i, j]] = acc;
            }
        }
        out
    }

    #[test]
    fn equals_full_reflect_filtering_then_crop() {
        let a = fixture("pair2_a.png");
        let b = fixture("pair2_b.png");
        let ux = gaussian_filter_reflect(&a);
        let uy = gaussian_filter_reflect(&b);
        let uxx = gaussian_filter_reflect(&(&a * &a));
        let uyy = gaussian_filter_reflect(&(&b * &b));
        let uxy = gaussian_filter_reflect(&(&a * &b));
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let s_map = Array2::from_shape_fn(a.dim(), |ix| {
            let (mx, my) = (ux[ix], uy[ix]);
            let (vx, vy, vxy) = (uxx[ix] - mx * mx, uyy[ix] - my * my, uxy[ix] - mx * my);
            ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        });
        let (h, w) = a.dim();
        let p = SSIM_RADIUS;
        let cropped = s_map.slice(ndarray::s![p..h - p, p..w - p]);
        let want = cropped.sum() / cropped.len() as f64;
        assert!((ssim(&a, &b) - want).abs() < 1e-12);
        // Reflect mode does matter outside the crop (sanity check of the oracle).
        assert_ne!(ux[[0, 0]], a[[0, 0]]);
    }

    #[test]
    fn ssim_minimum_size() {
        let a = Array2::from_shape_fn((11, 13), |(r, c)| (r * 13 + c) as f64);
        let b = a.mapv(|v| 255.0 - v);
        let s = ssim(&a, &b);
        assert!(
            s < 0.0,
            "anti-correlated images have negative SSIM, got {s}"
        );
    }

    #[test]
    #[should_panic(expected = "at least 11x11")]
    fn ssim_rejects_small_images() {
        let a = Array2::<f64>::zeros((10, 40));
        let _ = ssim(&a, &a);
    }

    #[test]
    #[should_panic(expected = "same shape")]
    fn psnr_rejects_shape_mismatch() {
        let _ = psnr(
            &Array2::<f64>::zeros((3, 4)),
            &Array2::<f64>::zeros((4, 3)),
            255.0,
        );
    }
}
