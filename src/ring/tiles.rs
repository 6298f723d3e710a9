//! Tiles: one job split into parts that server pairs run independently, each with its own
//! correlated randomness, whose outputs the receiver puts together.
//!
//! An MLP tile is a run of the patch grid: its output share is a canvas of its patches'
//! weighted sums, and the tiles' canvases add up to the one-piece job's.
//!
//! A CNN graph's tile (a chain CNN's too, run as its graph) is a band of output rows, cut
//! from the image padded to the total stride: it starts and ends at multiples of the stride
//! (so that every pooling, strided convolution and resize sees the grid the whole image
//! gives it) and holds the graph's reach above and below its rows
//! ([`crate::model::graph::reach`]): a row's value depends only on input rows within the
//! reach, so its rows are the one-piece job's, bit for bit.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::ring::graph::{padded_dims, GraphPlan};

/// Most tiles one job may be split into.
pub const MAX_TILES: usize = 4096;

/// Tile `index` of a job split into `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    pub index: usize,
    pub count: usize,
}

impl Tile {
    pub fn new(index: usize, count: usize) -> Result<Tile, String> {
        if count == 0 || count > MAX_TILES {
            return Err(format!("{count} tiles (1 to {MAX_TILES} supported)"));
        }
        if index >= count {
            return Err(format!(
                "tile {index} of {count}: tiles are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Tile { index, count })
    }

    /// The form a file's header records: `I/K`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    /// The header facts of this tile's output share: `tile = I/K`, and `what = a..b`, the
    /// part of the job it holds (rows for a CNN, patches for an MLP; see [`parse_range`]).
    pub fn facts(&self, what: &str, part: &Range<usize>) -> Vec<(String, String)> {
        vec![
            ("tile".into(), self.label()),
            (what.into(), format!("{}..{}", part.start, part.end)),
        ]
    }

    /// Reads [`Tile::label`]'s form back, checked.
    pub fn parse(s: &str) -> Result<Tile, String> {
        let bad = || format!("tile {s:?}: expected I/K, e.g. 2/4");
        let (i, k) = s.split_once('/').ok_or_else(bad)?;
        let (i, k) = (i.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
        Tile::new(i, k)
    }
}

/// The image rows a CNN tile reads (`input`: its rows and the halo) and writes (`output`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub input: Range<usize>,
    pub output: Range<usize>,
}

impl Band {
    /// Rows of the band's input: the height of the image the tile's job runs on.
    pub fn height(&self) -> usize {
        self.input.len()
    }
}

/// Output rows `0..h` cut into `count` runs of near-equal length, the tile's: every tile must
/// get at least one row.
fn rows_of(h: usize, tile: Tile, of: &str) -> Result<Range<usize>, String> {
    if tile.count > h {
        return Err(format!(
            "{} tiles for {h} rows of {of}: at most one tile per row",
            tile.count
        ));
    }
    Ok(tile.index * h / tile.count..(tile.index + 1) * h / tile.count)
}

impl GraphPlan {
    /// The band of tile `tile` of an `h x w` image. `input`: rows of the image padded to the
    /// stride (what the tile's job runs on, as tall as a multiple of the stride); `output`:
    /// the image rows the tile keeps.
    pub fn band(&self, h: usize, w: usize, tile: Tile) -> Result<Band, String> {
        // As a CNN's: a colour job runs whole (its output's planes are put together whole).
        if self.colours() != 1 {
            return Err(format!(
                "tiles of a colour ({} planes) image: a colour job runs untiled",
                self.colours()
            ));
        }
        let (ph, pw) = padded_dims(self.stride, h, w);
        let output = rows_of(h, tile, "the image")?;
        let s = self.stride[0];
        let a = output.start.saturating_sub(self.reach.before) / s * s;
        let b = ((output.end + self.reach.after).div_ceil(s) * s).min(ph);
        self.dims(b - a, pw).map_err(|e| {
            format!(
                "tile {}: its band of {} rows (rows {a}..{b} with the network's reach of {} \
                 above and {} below) is too small for this network ({e}); use fewer tiles",
                tile.label(),
                b - a,
                self.reach.before,
                self.reach.after
            )
        })?;
        Ok(Band {
            input: a..b,
            output,
        })
    }

    /// The tile's own rows, `w` wide, of the output its job computed on `band`'s rows of the
    /// padded image (`pw` wide).
    pub fn band_output<T: Copy>(&self, out: &[T], pw: usize, w: usize, band: &Band) -> Vec<T> {
        let skip = band.output.start - band.input.start;
        (skip..skip + band.output.len())
            .flat_map(|y| out[y * pw..y * pw + w].iter().copied())
            .collect()
    }
}

/// The patches of an MLP tile: the job's `num_patches` (in the patch grid's order) cut into
/// `count` runs of near-equal length. Every tile must get at least one patch.
pub fn patch_range(num_patches: usize, tile: Tile) -> Result<Range<usize>, String> {
    if tile.count > num_patches {
        return Err(format!(
            "{} tiles for {num_patches} patches: at most one tile per patch",
            tile.count
        ));
    }
    let at = |i: usize| i * num_patches / tile.count;
    Ok(at(tile.index)..at(tile.index + 1))
}

/// Reads a header's `a..b` range back.
pub fn parse_range(s: &str) -> Option<Range<usize>> {
    let (lo, hi) = s.split_once("..")?;
    Some(lo.parse().ok()?..hi.parse().ok()?)
}

/// Checks that the ranges `bands` (rows or patches, tile after tile) cover `0..h` once, in
/// order.
pub fn check_cover(bands: &[Range<usize>], h: usize) -> Result<(), String> {
    let mut next = 0;
    for (i, b) in bands.iter().enumerate() {
        if b.start != next || b.end <= b.start {
            return Err(format!(
                "tile {i} holds {}..{} where {next}.. was expected",
                b.start, b.end
            ));
        }
        next = b.end;
    }
    if next != h {
        return Err(format!("the tiles cover 0..{next} of 0..{h}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::cnn::CnnFixed;
    /// What the random graphs do not draw: pads unequal above and below, stride 3, a
    /// transposed 4x4 conv with output padding, a linear resize by 3.
    fn odd_strides() -> crate::model::graph::Graph {
        use crate::model::graph::random::{win, Net};
        use crate::model::graph::{Coords, Interp, Op, Resize};
        let mut n = Net::new(5);
        let mut w = win(3, 1, 0);
        w.pads = [0, 0, 2, 2];
        let a = n.conv(0, 1, 3, w, false, 1);
        let a = n.add(Op::Relu, &[a]);
        let d = n.conv(a, 3, 3, win(3, 3, 1), false, 1);
        let d = n.add(Op::Relu, &[d]);
        let mut t = win(4, 3, 1);
        t.pads = [1, 1, 1, 1];
        let u = n.conv(d, 3, 3, t, true, 1);
        if let Op::Conv(c) = &mut n.nodes[u].op {
            c.output_padding = [1, 1];
        }
        let j = n.add(Op::Add, &[a, u]);
        let r = n.conv(j, 3, 3, win(3, 3, 1), false, 1);
        let r = n.add(
            Op::Resize(Resize {
                scale: [3, 3],
                interp: Interp::Linear,
                coords: Coords::HalfPixel,
            }),
            &[r],
        );
        let j = n.add(Op::Add, &[j, r]);
        let out = n.conv(j, 3, 1, win(3, 1, 1), false, 1);
        n.graph(out)
    }

    /// A CNN graph's tiles (random graphs of every op: strides, unpadded convs, resizes,
    /// pixel (un)shuffles, skips across levels) give the one-piece run's rows bit for bit,
    /// with bands strictly inside the image; and a band one stride short of the reach, or
    /// started off the stride's grid, does not (the reach and the alignment are needed).
    #[test]
    fn graph_tiles_reproduce_the_whole_job_bit_for_bit() {
        use crate::model::cnn::{random_framed_cnn, CnnMeta};
        use crate::model::frame::Frame;
        use crate::model::graph::random::{every_op, random_graph};
        use crate::model::graph::Graph;
        use crate::ring::graph::run as run_graph;
        let (mut inside, mut short_differs, mut shifted_differs) = (0, 0, 0);
        for seed in 0..14 {
            let g = match seed {
                0 => every_op(3),
                12 => odd_strides(),
                // FFDNet's frame: the noise map's rows are cut with the image's.
                13 => {
                    let meta = CnnMeta {
                        sigma: 25.0,
                        residual: false,
                    };
                    let m = random_framed_cnn(&[5, 6, 6, 4], 3, 2, meta, Frame::FFDNET);
                    Graph::from_cnn(&m).unwrap()
                }
                _ => random_graph(seed),
            };
            let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
            assert!(seed != 12 || plan.stride == [3, 3], "{:?}", plan.stride);
            let s = plan.stride[0];
            let r = plan.reach;
            // Three tiles whose bands are shorter than the image; odd sizes.
            let h = 2 * (r.before + r.after) + 3 * s + 5;
            let w = 2 * plan.stride[1] + 3;
            let (ph, pw) = padded_dims(plan.stride, h, w);
            let inputs = plan.inputs();
            let enc: Vec<u64> = (0..inputs.len(h, w) as u64)
                .map(|i| (i.wrapping_mul(0x9e37_79b9) % 9000) << 4)
                .collect();
            let padded = inputs.pad(&enc, (h, w), (ph, pw));
            let whole = run_graph(&plan, &padded, ph, pw).output.v;
            let whole: Vec<u64> = (0..h)
                .flat_map(|y| whole[y * pw..y * pw + w].to_vec())
                .collect();
            let band_run = |a: usize, b: usize, band: &Band| {
                let out = run_graph(&plan, &inputs.rows(&padded, (ph, pw), a..b), b - a, pw)
                    .output
                    .v;
                let moved = Band {
                    input: a..b,
                    output: band.output.clone(),
                };
                plan.band_output(&out, pw, w, &moved)
            };
            for count in [1, 2, 3] {
                let (mut got, mut rows) = (Vec::new(), Vec::new());
                for index in 0..count {
                    let band = plan.band(h, w, Tile::new(index, count).unwrap()).unwrap();
                    assert!(band.input.start.is_multiple_of(s) && band.input.end.is_multiple_of(s));
                    let (a, b) = (band.input.start, band.input.end);
                    let mine = band_run(a, b, &band);
                    let keep = band.output.start * w..band.output.end * w;
                    assert_eq!(
                        mine,
                        whole[keep.clone()],
                        "seed {seed}, tile {index}/{count}"
                    );
                    got.extend(mine);
                    rows.push(band.output.clone());
                    if a > 0 && b < ph {
                        inside += 1;
                    }
                    // One stride less of halo above (where there was one to spare), or a
                    // band started one row off the grid.
                    if a >= s && b - a > s {
                        short_differs +=
                            (band_run(a + s, b, &band) != whole[keep.clone()]) as usize;
                    }
                    if a > 0 && s > 1 && b + s - 1 <= ph && plan.dims(b - a + s, pw).is_ok() {
                        let off = band_run(a - 1, b + s - 1, &band);
                        shifted_differs += (off != whole[keep]) as usize;
                    }
                }
                check_cover(&rows, h).unwrap();
                assert_eq!(got, whole, "seed {seed}, {count} tiles");
            }
            assert!(plan.band(h, w, Tile::new(0, h + 1).unwrap()).is_err());
        }
        assert!(inside >= 14, "{inside} bands strictly inside the image");
        assert!(
            short_differs > 0 && shifted_differs > 0,
            "{short_differs} {shifted_differs}"
        );
    }

    #[test]
    fn labels_and_covers_are_checked() {
        assert_eq!(Tile::parse("2/4").unwrap(), Tile { index: 2, count: 4 });
        for bad in ["4/4", "1/0", "x/2", "3", "1/5000"] {
            assert!(Tile::parse(bad).is_err(), "{bad}");
        }
        assert!(check_cover(&[0..3, 3..5], 5).is_ok());
        assert!(check_cover(&[0..3, 4..5], 5).is_err());
        assert!(check_cover(&[0..3, 2..5], 5).is_err());
        assert!(check_cover(&[0..3, 3..4], 5).is_err());
        let runs: Vec<_> = (0..3)
            .map(|i| patch_range(10, Tile::new(i, 3).unwrap()).unwrap())
            .collect();
        assert_eq!(runs, vec![0..3, 3..6, 6..10]);
        check_cover(&runs, 10).unwrap();
        assert!(patch_range(2, Tile::new(0, 3).unwrap()).is_err());
        assert_eq!(parse_range("3..6"), Some(3..6));
        assert_eq!(parse_range("3-6"), None);
    }
}
