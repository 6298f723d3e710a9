//! The paper's per-pixel pre- and postprocessing (section 4.5): optional noise-level scaling
//! by sigma*/sigma and normalisation (p/255 - 0.5) * 5. The per-patch mean shift is not done
//! here: it is a public linear map that the model folds into its first layer.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// sigma*/sigma when the image's noise level differs from the model's, else 1.
    pub noise_scale: f64,
}

impl Preprocess {
    /// `scale_noise`: apply the paper's sigma*/sigma scaling (off: feed the image as is).
    pub fn new(sigma: f64, model_sigma: f64, scale_noise: bool) -> Preprocess {
        let noise_scale = if scale_noise && sigma > 0.0 {
            model_sigma / sigma
        } else {
            1.0
        };
        Preprocess { noise_scale }
    }

    pub fn identity() -> Preprocess {
        Preprocess { noise_scale: 1.0 }
    }

    pub fn normalize(&self, pix: f64) -> f64 {
        (self.noise_scale * pix / 255.0 - 0.5) * 5.0
    }

    pub fn denormalize(&self, v: f64) -> f64 {
        (v / 5.0 + 0.5) * 255.0 / self.noise_scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_range() {
        let p = Preprocess::new(15.0, 25.0, true);
        for pix in [0.0, 17.0, 128.0, 255.0] {
            assert!((p.denormalize(p.normalize(pix)) - pix).abs() < 1e-9);
        }
        let id = Preprocess::identity();
        assert_eq!(id.normalize(0.0), -2.5);
        assert_eq!(id.normalize(255.0), 2.5);
    }
}
