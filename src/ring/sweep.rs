//! The noise levels a shared model's fixed point holds for, measured by its owner
//! (`share-model`) and recorded in its public header, so that the gateway can refuse, before
//! anything is shared, an image whose noise level (on the model's 0..255 scale, after the
//! window) would push the model past its fixed-point range.
//!
//! The fixed-point oracle (exactly what the secure protocol computes) runs on the built-in
//! phantom with white Gaussian noise at each level of [`LEVELS`], the phantom's values
//! spread over each span of [`CONTRASTS`] (a CT's body spans about 100 levels of the model's
//! scale in its default window). The fixed point *holds* at a level when at most one
//! pre-activation per [`PIXELS_PER_OVERFLOW`] pixels leaves its range (a pre-activation
//! out of range wraps in the ring: a saturated unit flips sign). Recorded per span is the
//! longest run of consecutive levels where it holds; the gateway measures the image's own
//! span ([`span`]) and takes the range of the smallest swept span that covers it. Why: an
//! MLP trained at sigma* = 25 is fed `sigma*/sigma` times its input; at a CT's noise of 5 HU
//! in a 4096 HU window (0.31 levels) that is 80 times, its edges leave the range, and the
//! result comes back worse than the input (issue 44). How far it can go depends on how
//! strong the image's edges are, hence the spans. The sweep also reports, level by level,
//! whether the oracle's result was closer to the clean phantom than the noisy input: a
//! model's quality on the owner's own images is the owner's to judge, not the header's.

use ndarray::Array2;

use crate::image::add_noise;

/// The levels tried (0..255 scale): about half an octave apart, from a CT's few HU in its
/// full window to the top of what FFDNet's map takes.
pub const LEVELS: [f64; 16] = [
    0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0, 16.0, 25.0, 40.0, 75.0,
];

/// Side of the phantom the sweep runs on: big enough for a CNN's receptive field and the
/// MLP's 39x39 windows, small enough to cost seconds.
pub const SIDE: usize = 64;

/// The spans of values the phantom is swept at (levels of the 0..255 scale), widest first.
pub const CONTRASTS: [f64; 7] = [255.0, 192.0, 128.0, 96.0, 64.0, 48.0, 32.0];

/// The fixed point holds when at most one pre-activation per this many pixels is out of
/// range (the shipped MLP has 1,024 hidden units per 17x17 output patch at stride 3).
pub const PIXELS_PER_OVERFLOW: usize = 100;

/// The header entry: `255=lo:hi;128=lo:hi;64=none` (levels on the 0..255 scale).
pub const SIGMA_RANGE: &str = "sigma_range";

/// The span of an image's values (0..255 scale): its 0.5th to 99.5th percentile, clipped to
/// the scale. What the gateway compares with [`CONTRASTS`].
pub fn span(pixels: &Array2<f64>) -> f64 {
    let mut v: Vec<f64> = pixels.iter().map(|x| x.clamp(0.0, 255.0)).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    at(0.995) - at(0.005)
}

/// Per swept span, the range of levels the model's fixed point holds for (`None`: none).
pub type Ranges = Vec<(f64, Option<(f64, f64)>)>;

/// The sweep at every span of [`CONTRASTS`].
pub fn sweep_all(
    denoise: impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64) + Sync,
) -> Vec<(f64, Vec<Level>)> {
    use rayon::prelude::*;
    // The points are independent, each with its own seed: on every core, with the same
    // results in the same order (the owner's `share-model` waited 7 s on one core).
    let points: Vec<(f64, usize)> = CONTRASTS
        .iter()
        .flat_map(|&c| (0..LEVELS.len()).map(move |i| (c, i)))
        .collect();
    let levels: Vec<Level> = points
        .par_iter()
        .map(|&(c, i)| level_at(c, LEVELS[i], seed_of(i), &denoise))
        .collect();
    CONTRASTS
        .iter()
        .zip(levels.chunks(LEVELS.len()))
        .map(|(&c, l)| (c, l.to_vec()))
        .collect()
}

/// The noise seed of level `i` of [`LEVELS`], the same at every span.
fn seed_of(i: usize) -> u64 {
    0x5eed + i as u64
}

/// The ranges of a [`sweep_all`].
pub fn ranges(all: &[(f64, Vec<Level>)]) -> Ranges {
    all.iter().map(|(c, l)| (*c, range(l))).collect()
}

/// The header's text of `r`.
pub fn format_ranges(r: &Ranges) -> String {
    r.iter()
        .map(|(c, x)| match x {
            Some(x) => format!("{c}={}", format_range(*x)),
            None => format!("{c}=none"),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A header's ranges, `None` when malformed.
pub fn parse_ranges(s: &str) -> Option<Ranges> {
    let mut out = Vec::new();
    for part in s.split(';') {
        let (c, r) = part.split_once('=')?;
        let c: f64 = c.parse().ok().filter(|c: &f64| c.is_finite() && *c > 0.0)?;
        let r = if r == "none" {
            None
        } else {
            Some(parse_range(r)?)
        };
        out.push((c, r));
    }
    (!out.is_empty() && out.len() <= 16).then_some(out)
}

/// The range that applies to an image of span `span`. Between two swept spans the bounds
/// are interpolated linearly: a pre-activation grows with the input's scaling times its
/// span, so the level where the fixed point stops holding does too (the shipped MLP's: 0.35,
/// 0.7, 1.4, 2.8 at spans 32, 64, 128, 255). Past the swept spans, the nearest one's; where
/// either neighbour recorded none, the wider one's. `None`: the fixed point holds at no
/// level there (refused).
pub fn range_for(r: &Ranges, span: f64) -> Option<(f64, f64)> {
    let mut r = r.clone();
    r.sort_by(|a, b| a.0.total_cmp(&b.0));
    let above = r.iter().position(|(c, _)| *c >= span);
    let (a, b) = match above {
        None => return r.last().and_then(|x| x.1),
        Some(0) => return r[0].1,
        Some(i) => (r[i - 1], r[i]),
    };
    let (Some(ra), Some(rb)) = (a.1, b.1) else {
        return b.1;
    };
    let t = (span - a.0) / (b.0 - a.0);
    let lerp = |x: f64, y: f64| {
        if x.is_finite() && y.is_finite() {
            x + (y - x) * t
        } else {
            x.max(y)
        }
    };
    Some((lerp(ra.0, rb.0), lerp(ra.1, rb.1).min(ra.1.max(rb.1))))
}

/// What one level gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub sigma: f64,
    pub noisy_rmse: f64,
    pub rmse: f64,
    pub out_of_range: u64,
}

impl Level {
    /// The result is closer to the clean phantom than the noisy input.
    pub fn denoises(&self) -> bool {
        self.rmse < 0.97 * self.noisy_rmse
    }

    /// The fixed point holds (see the module doc).
    pub fn holds(&self) -> bool {
        self.out_of_range as usize * PIXELS_PER_OVERFLOW <= SIDE * SIDE
    }
}

fn rmse(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let n = a.len().max(1) as f64;
    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / n).sqrt()
}

/// Runs `denoise(noisy, sigma)` (the model's fixed-point oracle: the result and its count of
/// out-of-range pre-activations) at every level of [`LEVELS`], on the phantom at full span.
pub fn sweep(denoise: impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64)) -> Vec<Level> {
    sweep_at(255.0, &denoise)
}

/// [`sweep`] with the phantom's values spread over `contrast` levels around mid-grey.
fn sweep_at(
    contrast: f64,
    denoise: &impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64),
) -> Vec<Level> {
    LEVELS
        .iter()
        .enumerate()
        .map(|(i, &sigma)| level_at(contrast, sigma, seed_of(i), denoise))
        .collect()
}

/// One point of the sweep: the phantom spread over `contrast` levels, noise `sigma`.
fn level_at(
    contrast: f64,
    sigma: f64,
    seed: u64,
    denoise: &impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64),
) -> Level {
    let mut clean = crate::image::phantom::builtin(&format!("phantom:{SIDE}"))
        .expect("the built-in phantom exists");
    let f = contrast / 255.0;
    clean.pixels.mapv_inplace(|p| 127.5 + (p - 127.5) * f);
    let noisy = add_noise(&clean, sigma, seed);
    let (out, out_of_range) = denoise(&noisy.pixels, sigma);
    Level {
        sigma,
        noisy_rmse: rmse(&noisy.pixels, &clean.pixels),
        rmse: rmse(&out, &clean.pixels),
        out_of_range,
    }
}

/// The sweep's test at one point, for a tool that holds the model itself (`denoise`): the
/// phantom spread over the image's own span (at least the narrowest swept one), at its own
/// noise level.
pub fn probe(
    span: f64,
    sigma: f64,
    denoise: impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64),
) -> Level {
    let narrowest = CONTRASTS[CONTRASTS.len() - 1];
    level_at(span.clamp(narrowest, 255.0), sigma, 0x5eed, &denoise)
}

/// The longest run of consecutive levels where the fixed point holds, as `(lo, hi)` (0 and
/// infinity where it reaches the sweep's first or last level); `None` when it holds at none.
pub fn range(levels: &[Level]) -> Option<(f64, f64)> {
    let mut best: Option<(usize, usize)> = None;
    let mut start = None;
    for (i, l) in levels.iter().enumerate() {
        match (l.holds(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if best.is_none_or(|(a, b)| i - s > b - a + 1) {
                    best = Some((s, i - 1));
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        let e = levels.len() - 1;
        if best.is_none_or(|(a, b)| e - s > b - a) {
            best = Some((s, e));
        }
    }
    // An edge of the sweep is no edge of the model: open there.
    best.map(|(a, b)| {
        (
            if a == 0 { 0.0 } else { levels[a].sigma },
            if b == levels.len() - 1 {
                f64::INFINITY
            } else {
                levels[b].sigma
            },
        )
    })
}

/// `lo:hi` as the header holds it.
pub fn format_range((lo, hi): (f64, f64)) -> String {
    format!("{lo}:{hi}")
}

/// A header's `lo:hi`, `None` when malformed.
pub fn parse_range(s: &str) -> Option<(f64, f64)> {
    let (lo, hi) = s.split_once(':')?;
    let (lo, hi): (f64, f64) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo.is_finite() && 0.0 <= lo && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(ok: &[bool]) -> Vec<Level> {
        ok.iter()
            .enumerate()
            .map(|(i, &d)| Level {
                sigma: i as f64 + 1.0,
                noisy_rmse: 1.0,
                rmse: 0.5,
                out_of_range: if d { 40 } else { 41 },
            })
            .collect()
    }

    #[test]
    fn the_range_is_the_longest_run_of_levels_that_denoise() {
        let inf = f64::INFINITY;
        assert_eq!(
            range(&levels(&[false, true, true, false, true])),
            Some((2.0, 3.0))
        );
        assert_eq!(
            range(&levels(&[false, false, true, true, true])),
            Some((3.0, inf))
        );
        assert_eq!(range(&levels(&[true, true, false])), Some((0.0, 2.0)));
        assert_eq!(range(&levels(&[false, false])), None);
        assert_eq!(parse_range(&format_range((0.5, 75.0))), Some((0.5, 75.0)));
        assert_eq!(parse_range(&format_range((0.0, inf))), Some((0.0, inf)));
        for bad in ["", "1", "2:1", "-1:3", "a:b", "nan:2", "inf:inf"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_round_trip_and_the_smallest_covering_span_applies() {
        let r: Ranges = vec![
            (255.0, Some((8.0, f64::INFINITY))),
            (128.0, Some((2.0, f64::INFINITY))),
            (64.0, None),
        ];
        assert_eq!(parse_ranges(&format_ranges(&r)), Some(r.clone()));
        let inf = f64::INFINITY;
        assert_eq!(range_for(&r, 255.0), Some((8.0, inf)));
        assert_eq!(range_for(&r, 128.0), Some((2.0, inf)));
        // Halfway between 128 and 255: halfway between their bounds.
        assert_eq!(range_for(&r, 191.5), Some((5.0, inf)));
        // Between a span with a range and one without: the wider one's.
        assert_eq!(range_for(&r, 100.0), Some((2.0, inf)));
        assert_eq!(range_for(&r, 10.0), None);
        assert_eq!(range_for(&r, 300.0), Some((8.0, inf)));
        let finite: Ranges = vec![(64.0, Some((1.0, 10.0))), (128.0, Some((2.0, 20.0)))];
        assert_eq!(range_for(&finite, 96.0), Some((1.5, 15.0)));
        for bad in ["", "255", "255=1", "x=none", "0=none", "255=2:1"] {
            assert_eq!(parse_ranges(bad), None, "{bad}");
        }
        let img = Array2::from_shape_fn((20, 20), |(i, _)| 50.0 + i as f64);
        assert!((span(&img) - 19.0).abs() < 1e-9);
    }

    #[test]
    fn the_sweep_measures_quality_and_overflow_per_level() {
        let clean = crate::image::phantom::builtin(&format!("phantom:{SIDE}")).unwrap();
        let id = sweep(|noisy, _| (noisy.clone(), 0));
        assert!(id.iter().all(|l| !l.denoises() && l.holds()));
        assert_eq!(range(&id), Some((0.0, f64::INFINITY)));
        let perfect = sweep(|_, _| (clean.pixels.clone(), 0));
        assert!(perfect.iter().all(|l| l.denoises()));
        // Overflowing below level 2: the range starts there.
        let low = sweep(|noisy, sigma| (noisy.clone(), if sigma < 2.0 { 1000 } else { 0 }));
        assert_eq!(range(&low), Some((2.0, f64::INFINITY)));
    }
}
