//! The paper's piecewise-quadratic tanh approximation, tanh* (Eq. 3), with its constants
//! as data so that other fits can be plugged in without touching the protocol.

use serde::{Deserialize, Serialize};

/// tanh*(x) = k (n1 |x|^2 + c1 |x| + d1) for |x| <= a, k (n2 |x|^2 + c2 |x| + d2) for
/// a < |x| <= b, and k otherwise, with k = sign(x).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TanhStar {
    pub n1: f64,
    pub c1: f64,
    pub d1: f64,
    pub n2: f64,
    pub c2: f64,
    pub d2: f64,
    pub a: f64,
    pub b: f64,
}

impl TanhStar {
    /// The constants printed in the paper (including d1 = 0.016, which makes tanh*(0+) =
    /// +0.016 and tanh*(0-) = -0.016; a model trained with tanh* loses nothing to it).
    pub const PAPER: TanhStar = TanhStar {
        n1: -0.2716,
        c1: 1.0,
        d1: 0.016,
        n2: -0.0848,
        c2: 0.42654,
        d2: 0.4519,
        a: 1.52,
        b: 2.57,
    };

    /// Float evaluation (sign(0) = +1, as in the fixed-point version).
    pub fn eval(&self, x: f64) -> f64 {
        let k = if x < 0.0 { -1.0 } else { 1.0 };
        let t = x.abs();
        if t <= self.a {
            k * (self.n1 * t * t + self.c1 * t + self.d1)
        } else if t <= self.b {
            k * (self.n2 * t * t + self.c2 * t + self.d2)
        } else {
            k
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.n1, self.c1, self.d1, self.n2, self.c2, self.d2, self.a, self.b,
        ];
        if all.iter().any(|v| !v.is_finite()) {
            return Err("tanh* constants must be finite".into());
        }
        if !(0.0 < self.a && self.a < self.b && self.b < 64.0) {
            return Err(format!(
                "tanh* breakpoints must satisfy 0 < a < b < 64 (a = {}, b = {})",
                self.a, self.b
            ));
        }
        Ok(())
    }
}

impl Default for TanhStar {
    fn default() -> Self {
        Self::PAPER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_constants_behave_as_printed() {
        let t = TanhStar::PAPER;
        assert!((t.eval(1e-9) - 0.016).abs() < 1e-6);
        assert!((t.eval(-1e-9) + 0.016).abs() < 1e-6);
        assert_eq!(t.eval(3.0), 1.0);
        assert_eq!(t.eval(-3.0), -1.0);
        for i in -300..300 {
            let x = i as f64 / 100.0;
            assert!((t.eval(x) - x.tanh()).abs() < 0.03, "x = {x}");
        }
    }
}
