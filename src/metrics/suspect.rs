//! The receiver's last look at a result before it writes it: does it look ruined, measured
//! against what the receiver can see (the noisy image it holds as the DICOM template, and
//! the noise level the job records)? A wrong window or noise level, or a model pushed past
//! its fixed point, pins most pixels at the window's limits or moves them far more than
//! the noise could explain (issue 44: a CT came back with 76% of its pixels at -32768, and
//! nothing said so).

use ndarray::Array2;

/// A pixel at most this far inside the 0..255 scale's ends is pinned at a limit.
const PINNED: f64 = 0.5;

/// A stated noise level above this many times the image's own estimate (plus [`SLACK`]) is
/// implausible: the estimate is within a few percent of the total noise on pydicom's CT and
/// MR (image::noise_estimate), so three times it is no measurement error. A CT's bare `20`
/// read on the 0..255 scale (321 HU) is 16 times its 20 HU.
const STATED_OVER_ESTIMATE: f64 = 3.0;

/// A result whose RMS change from the noisy input is above this many times the input's own
/// noise estimate (plus [`SLACK`]) has lost more than noise: a denoiser removes about the
/// noise, so its residual is about the noise level; one told a far higher level smooths
/// structure away too.
const RESIDUAL_OVER_ESTIMATE: f64 = 2.0;

/// Levels of the 0..255 scale added to both bounds, for near-noiseless images whose
/// estimate is a fraction of a level.
const SLACK: f64 = 0.5;

/// The noise `pixels` (on the 0..255 scale) hold by their own estimate, from the cells
/// strictly inside the scale: pixels at its ends are clipped or padding (a CT's air under
/// `--window full`, an MR's zeroed background), flat, and would pull the median down until
/// a right level looked implausible.
pub fn noise_in(pixels: &Array2<f64>) -> Option<f64> {
    crate::image::noise_estimate::estimate_sigma_inside(pixels, 0.0, 255.0).filter(|s| *s > 0.0)
}

/// Why a stated noise level `level` looks implausible beside the image's own `estimate`
/// (both on the 0..255 scale), or None (also when there is no estimate).
pub fn implausible_level(level: f64, estimate: Option<f64>) -> Option<String> {
    let est = estimate?;
    (level > STATED_OVER_ESTIMATE * est + SLACK).then(|| {
        format!(
            "{:.1} times the noise the image holds by its own estimate, which would smooth its \
             structure away",
            level / est
        )
    })
}

/// What the check measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Look {
    /// Fraction of the result's pixels at the window's limits.
    pub pinned: f64,
    /// Fraction of the noisy input's pixels there.
    pub pinned_noisy: f64,
    /// RMS change from the noisy input, in levels of the 0..255 scale.
    pub change: f64,
    /// The noise level the job records, on that scale.
    pub sigma: f64,
    /// The noise the noisy input holds by its own estimate, on that scale (None where none
    /// can be made).
    pub noise: Option<f64>,
}

impl Look {
    pub fn of(result: &Array2<f64>, noisy: &Array2<f64>, sigma: f64) -> Look {
        let n = result.len().max(1) as f64;
        let pinned = |a: &Array2<f64>| {
            a.iter()
                .filter(|&&x| x <= PINNED || x >= 255.0 - PINNED)
                .count() as f64
                / n
        };
        let change = (result
            .iter()
            .zip(noisy)
            .map(|(a, b)| (a.clamp(0.0, 255.0) - b) * (a.clamp(0.0, 255.0) - b))
            .sum::<f64>()
            / n)
            .sqrt();
        Look {
            pinned: pinned(result),
            pinned_noisy: pinned(noisy),
            change,
            sigma,
            // Pixels pinned at the window's limits are flat, not noiseless: left out.
            noise: noise_in(noisy),
        }
    }

    /// Why the result looks ruined, or `None`. A denoiser moves a pixel by about the noise
    /// level; five times it, plus three levels for the detail a strong denoiser smooths, is
    /// far past that. A quarter of the image newly pinned at a limit is no denoising either.
    pub fn ruined(&self) -> Option<String> {
        let pinned_more =
            self.pinned > self.pinned_noisy + 0.25 && self.pinned > 2.0 * self.pinned_noisy;
        let moved = self.change > 5.0 * self.sigma + 3.0;
        // Both the level the job records and what the result lost, beside the noise the
        // input holds: a weak model on a dark, clipped image (whose estimate runs low) moves
        // pixels by more than the estimate without any wrong level behind it.
        if let (false, false, Some(noise)) = (pinned_more, moved, self.noise) {
            let told = implausible_level(self.sigma, self.noise);
            if told.is_some() && self.change > RESIDUAL_OVER_ESTIMATE * noise + SLACK {
                return Some(format!(
                    "over-smoothed: the job's noise level, {:.2} levels of the model's 0..255 \
                     scale, is {:.1} times the {:.2} levels of noise the noisy input holds by its \
                     own estimate, and the result moved {:.2} levels (RMS) from that input, {:.1} \
                     times its noise: structure was removed with the noise",
                    self.sigma,
                    self.sigma / noise,
                    noise,
                    self.change,
                    self.change / noise
                ));
            }
        }
        if !(pinned_more || moved) {
            return None;
        }
        Some(format!(
            "{:.1}% of its pixels at the window's limits (the noisy input {:.1}%), an RMS change \
             of {:.2} levels of the model's 0..255 scale from the noisy input against a noise \
             level of {:.2}",
            100.0 * self.pinned,
            100.0 * self.pinned_noisy,
            self.change,
            self.sigma
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denoised_image_passes_and_a_ruined_one_does_not() {
        let noisy = Array2::from_shape_fn((32, 32), |(i, j)| {
            100.0 + ((i * 7 + j * 13) % 5) as f64 - 2.0
        });
        let denoised = Array2::from_elem((32, 32), 100.0);
        assert_eq!(Look::of(&denoised, &noisy, 1.5).ruined(), None);
        // Most pixels pinned at the bottom: the -32768 of issue 44.
        let pinned = Array2::from_shape_fn((32, 32), |(i, _)| if i < 24 { -5.0 } else { 100.0 });
        let why = Look::of(&pinned, &noisy, 1.5).ruined().unwrap();
        assert!(why.contains("75.0% of its pixels"), "{why}");
        // Moved far more than the noise explains.
        let moved = noisy.mapv(|x| x + 20.0);
        assert!(Look::of(&moved, &noisy, 1.5).ruined().is_some());
        // Within five times a stated 25, but 20 levels on an input holding about 1.4 of
        // noise is no denoising either.
        let why = Look::of(&moved, &noisy, 25.0).ruined().unwrap();
        assert!(why.contains("over-smoothed"), "{why}");
    }

    /// An image of stripes (amplitude 40) under Gaussian noise of `sigma`, deterministic.
    fn striped(sigma: f64) -> (Array2<f64>, Array2<f64>) {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let clean = Array2::from_shape_fn(
            (64, 64),
            |(_, j)| if (j / 16) % 2 == 0 { 80.0 } else { 120.0 },
        );
        let noisy = clean.mapv(|x| {
            let (u, v) = (uniform(), uniform());
            x + sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        });
        (clean, noisy)
    }

    /// The CT of issue 71: told 16 times its noise, a denoiser smooths structure away. The
    /// receiver, holding the noisy input, sees a residual far above the noise the input
    /// holds, whatever level the job records.
    #[test]
    fn an_over_smoothed_result_is_flagged_and_a_denoised_one_is_not() {
        let (clean, noisy) = striped(8.0);
        let look = Look::of(&clean, &noisy, 8.0);
        let noise = look.noise.unwrap();
        assert!((noise - 8.0).abs() < 1.0, "{noise}");
        assert_eq!(look.ruined(), None);
        // The stripes smoothed flat, by a job told 16 times the noise: the residual holds
        // them beside the noise.
        let flat = Array2::from_elem((64, 64), 100.0);
        let why = Look::of(&flat, &noisy, 128.0).ruined().unwrap();
        assert!(
            why.contains("over-smoothed") && why.contains("128.00 levels"),
            "{why}"
        );
        // The same result of a job told the right level is a weak model, not a wrong level,
        // and within five times that level.
        assert_eq!(Look::of(&flat, &noisy, 8.0).ruined(), None);
        // A job told 16 times the noise whose result kept the structure is no smoothing.
        assert_eq!(Look::of(&clean, &noisy, 128.0).ruined(), None);
    }

    /// A third of the image flat at the scale's bottom (an MR's zeroed background, a CT's
    /// padding under `--window full`): the right level is neither refused nor its result
    /// flagged. Counted, those flat cells put the estimate at a third of the noise.
    #[test]
    fn a_flat_background_at_the_scales_end_does_not_make_a_right_level_implausible() {
        let (clean, noisy) = striped(8.0);
        let background = |a: &Array2<f64>| {
            Array2::from_shape_fn((64, 64), |(i, j)| if i < 22 { 0.0 } else { a[[i, j]] })
        };
        let (clean, noisy) = (background(&clean), background(&noisy));
        let counted = crate::image::noise_estimate::estimate_sigma(&noisy).unwrap();
        let noise = noise_in(&noisy).unwrap();
        assert!(
            (noise - 8.0).abs() < 1.0,
            "{noise} (counting the flat cells: {counted})"
        );
        assert_eq!(implausible_level(8.0, Some(noise)), None);
        assert!(counted < 0.7 * noise, "{counted} against {noise}");
        // Denoised perfectly: a result that moved about the noise.
        assert_eq!(Look::of(&clean, &noisy, 8.0).ruined(), None);
    }

    #[test]
    fn a_stated_level_far_above_the_estimate_is_implausible() {
        // The bare `20` on a CT's default window against its 20 HU (1.25 levels).
        let why = implausible_level(20.0, Some(1.25)).unwrap();
        assert!(why.contains("16.0 times"), "{why}");
        // Three times the estimate, and half a level, are taken.
        assert_eq!(implausible_level(3.75, Some(1.25)), None);
        assert_eq!(implausible_level(4.2, Some(1.25)), None);
        assert!(implausible_level(4.3, Some(1.25)).is_some());
        assert_eq!(implausible_level(0.5, Some(0.0001)), None);
        assert_eq!(implausible_level(1e6, None), None);
    }
}
