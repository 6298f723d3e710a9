//! The receiver's last look at a result before it writes it: does it look ruined, measured
//! against what the receiver can see (the noisy image it holds as the DICOM template, and
//! the noise level the job records)? A wrong window or noise level, or a model pushed past
//! its fixed point, pins most pixels at the window's limits or moves them far more than
//! the noise could explain (issue 44: a CT came back with 76% of its pixels at -32768, and
//! nothing said so).

use ndarray::Array2;

/// A pixel at most this far inside the 0..255 scale's ends is pinned at a limit.
const PINNED: f64 = 0.5;

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
        }
    }

    /// Why the result looks ruined, or `None`. A denoiser moves a pixel by about the noise
    /// level; five times it, plus three levels for the detail a strong denoiser smooths, is
    /// far past that. A quarter of the image newly pinned at a limit is no denoising either.
    pub fn ruined(&self) -> Option<String> {
        let pinned_more =
            self.pinned > self.pinned_noisy + 0.25 && self.pinned > 2.0 * self.pinned_noisy;
        let moved = self.change > 5.0 * self.sigma + 3.0;
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
        assert_eq!(Look::of(&moved, &noisy, 25.0).ruined(), None);
    }
}
