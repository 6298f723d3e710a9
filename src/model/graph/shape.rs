//! Tensor shapes as functions of the image's size. On each axis a tensor has
//! `H / stride + delta` positions for an image side `H` that is a multiple of the graph's
//! total stride: a stride-s convolution multiplies the stride, a transposed one or a resize
//! divides it, an unpadded convolution lowers delta (RED-CNN) and its transposed twin raises
//! it back. Every rule below is exact for all such `H`, so a graph is checked once, not per
//! image.

use super::{ConvOp, Op, Window};

/// One axis of a tensor: `H / stride + delta` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub stride: usize,
    pub delta: i64,
}

impl Extent {
    pub const IMAGE: Extent = Extent {
        stride: 1,
        delta: 0,
    };

    /// Positions for an image side `full` (a multiple of the stride).
    pub fn size(&self, full: usize) -> i64 {
        (full / self.stride) as i64 + self.delta
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: Extent,
    pub w: Extent,
}

impl Shape {
    /// `c` channels at the image's resolution.
    pub fn image(c: usize) -> Shape {
        Shape {
            c,
            h: Extent::IMAGE,
            w: Extent::IMAGE,
        }
    }

    pub fn axes(&self) -> [Extent; 2] {
        [self.h, self.w]
    }

    pub fn describe(&self) -> String {
        let ax = |e: Extent| match (e.stride, e.delta) {
            (1, 0) => "H".to_string(),
            (s, 0) => format!("H/{s}"),
            (1, d) => format!("H{d:+}"),
            (s, d) => format!("H/{s}{d:+}"),
        };
        format!(
            "{} channel(s) of {} x {}",
            self.c,
            ax(self.h),
            ax(self.w).replace('H', "W")
        )
    }
}

/// The output extent of a window (convolution or pooling, no ceil mode) on one axis:
/// floor((n + p0 + p1 - d (k - 1) - 1) / s) + 1 for n = H / stride + delta, where
/// H / stride is a multiple of s.
fn windowed(e: Extent, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Extent {
    let span = (d * (k - 1) + 1) as i64;
    Extent {
        stride: e.stride * s,
        delta: (e.delta + p0 as i64 + p1 as i64 - span).div_euclid(s as i64) + 1,
    }
}

fn window_axes(x: &Shape, w: &Window, c: usize) -> Shape {
    let ax = |a: usize, e: Extent| {
        windowed(
            e,
            w.kernel[a],
            w.stride[a],
            w.dilation[a],
            w.pads[a],
            w.pads[a + 2],
        )
    };
    Shape {
        c,
        h: ax(0, x.h),
        w: ax(1, x.w),
    }
}

/// (n - 1) s - p0 - p1 + d (k - 1) + output_padding + 1, on a stride divisible by s.
fn transposed(c: &ConvOp, a: usize, e: Extent) -> Result<Extent, String> {
    let w = &c.window;
    let s = w.stride[a];
    if !e.stride.is_multiple_of(s) {
        return Err(format!(
            "up-samples by {s} a map at 1/{} of the image's resolution (finer than the image)",
            e.stride
        ));
    }
    let span = (w.dilation[a] * (w.kernel[a] - 1)) as i64;
    Ok(Extent {
        stride: e.stride / s,
        delta: (e.delta - 1) * s as i64 - w.pads[a] as i64 - w.pads[a + 2] as i64
            + span
            + c.output_padding[a] as i64
            + 1,
    })
}

/// Largest |delta| of an extent (a hostile chain of resizes would overflow it otherwise).
const MAX_DELTA: i64 = 1 << 20;

/// The shape of an op's output from its inputs' shapes (the op's own parameters checked
/// apart), refused past [`super::MAX_TOTAL_STRIDE`] or [`MAX_DELTA`], which every step
/// checks, so that no chain of ops overflows.
pub fn infer(op: &Op, ins: &[Shape]) -> Result<Shape, String> {
    let s = infer_unbounded(op, ins)?;
    for e in s.axes() {
        if e.stride > super::MAX_TOTAL_STRIDE || e.delta.abs() > MAX_DELTA {
            return Err(format!(
                "gives a map of {} (strides up to {}, offsets up to {MAX_DELTA})",
                s.describe(),
                super::MAX_TOTAL_STRIDE
            ));
        }
    }
    Ok(s)
}

fn infer_unbounded(op: &Op, ins: &[Shape]) -> Result<Shape, String> {
    let same = |what: &str| -> Result<(), String> {
        let first = ins[0];
        match ins.iter().find(|s| s.axes() != first.axes()) {
            Some(s) => Err(format!(
                "{what} {} and {} (the sizes must agree; cropping is not supported)",
                first.describe(),
                s.describe()
            )),
            None => Ok(()),
        }
    };
    let x = ins.first().copied().unwrap_or(Shape::image(1));
    match op {
        // The image's planes are the graph's (`Graph::shapes`); this is a gray one's.
        Op::Input => Ok(Shape::image(1)),
        Op::NoiseMap { channels, block } => {
            let e = Extent {
                stride: *block,
                delta: 0,
            };
            Ok(Shape {
                c: *channels,
                h: e,
                w: e,
            })
        }
        Op::Conv(c) => {
            if x.c != c.cin {
                return Err(format!("takes {} channels but is given {}", c.cin, x.c));
            }
            if c.transposed {
                Ok(Shape {
                    c: c.cout,
                    h: transposed(c, 0, x.h)?,
                    w: transposed(c, 1, x.w)?,
                })
            } else {
                Ok(window_axes(&x, &c.window, c.cout))
            }
        }
        Op::Add | Op::Sub => {
            same("adds or subtracts")?;
            if ins[0].c != ins[1].c {
                return Err(format!("combines {} and {} channels", ins[0].c, ins[1].c));
            }
            Ok(x)
        }
        Op::Concat => {
            same("concatenates")?;
            let c: usize = ins.iter().map(|s| s.c).sum();
            if c > crate::model::cnn::MAX_CHANNELS {
                return Err(format!(
                    "{c} channels (at most {})",
                    crate::model::cnn::MAX_CHANNELS
                ));
            }
            Ok(Shape { c, ..x })
        }
        Op::Affine { scale, shift } => {
            per_channel(scale.len(), x.c, "scale")?;
            per_channel(shift.len(), x.c, "shift")?;
            Ok(x)
        }
        Op::PRelu { slope } => {
            per_channel(slope.len(), x.c, "slope")?;
            Ok(x)
        }
        Op::AvgPool { window, .. } | Op::MaxPool { window } => Ok(window_axes(&x, window, x.c)),
        Op::Resize(r) => {
            let up = |a: usize, e: Extent| -> Result<Extent, String> {
                let s = r.scale[a];
                if !e.stride.is_multiple_of(s) {
                    return Err(format!(
                        "up-samples by {s} a map at 1/{} of the image's resolution",
                        e.stride
                    ));
                }
                Ok(Extent {
                    stride: e.stride / s,
                    delta: e.delta * s as i64,
                })
            };
            Ok(Shape {
                c: x.c,
                h: up(0, x.h)?,
                w: up(1, x.w)?,
            })
        }
        Op::DepthToSpace { block, .. } => {
            let b = *block;
            if x.c % (b * b) != 0 || x.h.stride % b != 0 || x.w.stride % b != 0 {
                return Err(format!(
                    "{} with blocks of {b}x{b} (channels a multiple of {}, not finer than the \
                     image)",
                    x.describe(),
                    b * b
                ));
            }
            let up = |e: Extent| Extent {
                stride: e.stride / b,
                delta: e.delta * b as i64,
            };
            Ok(Shape {
                c: x.c / (b * b),
                h: up(x.h),
                w: up(x.w),
            })
        }
        Op::SpaceToDepth { block } => {
            let b = *block;
            if x.h.delta % b as i64 != 0 || x.w.delta % b as i64 != 0 {
                return Err(format!("{} in blocks of {b}x{b}", x.describe()));
            }
            let down = |e: Extent| Extent {
                stride: e.stride * b,
                delta: e.delta / b as i64,
            };
            let c = x.c * b * b;
            if c > crate::model::cnn::MAX_CHANNELS {
                return Err(format!("{c} channels"));
            }
            Ok(Shape {
                c,
                h: down(x.h),
                w: down(x.w),
            })
        }
        Op::Relu | Op::LeakyRelu { .. } | Op::Clip { .. } => Ok(x),
    }
}

fn per_channel(n: usize, c: usize, what: &str) -> Result<(), String> {
    if n == 1 || n == c {
        Ok(())
    } else {
        Err(format!(
            "{n} {what} values for {c} channels (1 or one each)"
        ))
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The lcm of every tensor's stride, per axis (an image side must be a multiple of it).
pub fn total_stride(shapes: &[Shape]) -> [usize; 2] {
    let lcm = |a: usize, b: usize| a / gcd(a, b) * b;
    shapes.iter().fold([1, 1], |acc, s| {
        [lcm(acc[0], s.h.stride), lcm(acc[1], s.w.stride)]
    })
}
