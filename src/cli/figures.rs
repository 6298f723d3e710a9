//! Figures of `ppdenoise table`: side-by-side comparisons with enlarged crops (like the
//! paper's Figs. 8-11) and a PSNR-against-sigma chart, as PNG.
//!
//! Everything is drawn into an RGB buffer (plotters' bitmap backend for the chart and the
//! text) and encoded with the `image` crate. Text uses an embedded subset of DejaVu Sans
//! (`fonts/`, Bitstream Vera licence) through ab_glyph, so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use ndarray::Array2;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde::Serialize;

/// Per-sigma averages over the images: a row of `ppdenoise table` and a point of its chart.
#[derive(Clone, Debug, Serialize)]
pub struct Average {
    pub sigma: f64,
    pub images: usize,
    pub psnr_noisy: f64,
    pub psnr_float: f64,
    pub ssim_float: f64,
    pub psnr_oracle: f64,
    pub ssim_oracle: f64,
    pub psnr_secure: f64,
    pub ssim_secure: f64,
    /// mean(secure - float) PSNR, dB.
    pub gap_db: f64,
    /// max over images of |secure - float| PSNR, dB.
    pub max_abs_gap_db: f64,
    pub serve_seconds: f64,
    pub bytes_total: f64,
}

static FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is embedded and known to parse; a failure would only lose the text.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

const RED: [u8; 3] = [220, 30, 30];
const GREEN: [u8; 3] = [20, 170, 40];

/// An RGB canvas, white to start with.
struct Canvas {
    w: usize,
    h: usize,
    buf: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            buf: vec![255; w * h * 3],
        }
    }

    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            self.buf[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Draws `img[y0..y0+ch, x0..x0+cw]` (0..255 scale) enlarged `zoom` times (nearest
    /// neighbour) with its top-left corner at (`at_x`, `at_y`).
    #[allow(clippy::too_many_arguments)]
    fn blit(
        &mut self,
        img: &Array2<f64>,
        (y0, x0): (usize, usize),
        (ch, cw): (usize, usize),
        zoom: usize,
        at_x: usize,
        at_y: usize,
    ) {
        for y in 0..ch * zoom {
            for x in 0..cw * zoom {
                let v = img[[y0 + y / zoom, x0 + x / zoom]]
                    .round()
                    .clamp(0.0, 255.0) as u8;
                self.put(at_x + x, at_y + y, [v, v, v]);
            }
        }
    }

    /// Outline of thickness `t` drawn inside the rectangle.
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, t: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                let inside = xx >= x + t && xx + t < x + w && yy >= y + t && yy + t < y + h;
                if !inside {
                    self.put(xx, yy, c);
                }
            }
        }
    }

    fn text(&mut self, items: &[(String, usize, usize, u32)]) -> Result<()> {
        fonts();
        let root = BitMapBackend::with_buffer(&mut self.buf, (self.w as u32, self.h as u32))
            .into_drawing_area();
        for (s, x, y, size) in items {
            root.draw(&Text::new(
                s.clone(),
                (*x as i32, *y as i32),
                (FAMILY, *size).into_font().color(&BLACK),
            ))
            .map_err(|e| anyhow!("cannot draw text: {e}"))?;
        }
        root.present()
            .map_err(|e| anyhow!("cannot draw text: {e}"))?;
        Ok(())
    }

    fn save(self, path: &Path) -> Result<()> {
        use ::image::codecs::png::{CompressionType, FilterType, PngEncoder};
        use ::image::ImageEncoder;
        let tmp = path.with_extension("png.tmp");
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        // Best compression: the figures are meant to be small enough to commit.
        PngEncoder::new_with_quality(
            std::io::BufWriter::new(file),
            CompressionType::Best,
            FilterType::Adaptive,
        )
        .write_image(
            &self.buf,
            self.w as u32,
            self.h as u32,
            ::image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The two fixed crop regions of an `h x w` image: (top, left) and the side length.
pub fn crop_regions(h: usize, w: usize) -> ([(usize, usize); 2], usize) {
    let c = (h.min(w) / 4).clamp(1, 32);
    let at = |fy: usize, fx: usize| {
        let y = (h * fy / 16).saturating_sub(c / 2).min(h - c);
        let x = (w * fx / 16).saturating_sub(c / 2).min(w - c);
        (y, x)
    };
    ([at(6, 6), at(10, 11)], c)
}

/// Panels side by side (each with a caption above), and under each panel its two crop
/// regions enlarged (nearest neighbour), outlined in red and green as on the panels.
pub fn comparison(panels: &[(&Array2<f64>, String)], path: &Path) -> Result<()> {
    let (h, w) = panels.first().context("no panel to draw")?.0.dim();
    let f = 192usize.div_ceil(h.max(w)).max(1);
    let (ph, pw) = (h * f, w * f);
    let (gap, cap) = (10usize, 24usize);
    let (regions, c) = crop_regions(h, w);
    let zoom = ((pw - gap) / 2 / c).clamp(1, 4 * f);
    let d = c * zoom;
    let n = panels.len();
    let mut cv = Canvas::new(n * pw + (n + 1) * gap, gap + cap + ph + gap + d + gap);
    let mut captions = Vec::new();
    for (k, (img, label)) in panels.iter().enumerate() {
        anyhow::ensure!(img.dim() == (h, w), "panels differ in size");
        let x0 = gap + k * (pw + gap);
        let y0 = gap + cap;
        cv.blit(img, (0, 0), (h, w), f, x0, y0);
        for (j, &(ry, rx)) in regions.iter().enumerate() {
            let col = if j == 0 { RED } else { GREEN };
            cv.rect(x0 + rx * f, y0 + ry * f, c * f, c * f, f.clamp(1, 2), col);
            let cx = x0 + if j == 0 { 0 } else { pw - d };
            let cy = y0 + ph + gap;
            cv.blit(img, (ry, rx), (c, c), zoom, cx, cy);
            cv.rect(cx, cy, d, d, 2, col);
        }
        captions.push((label.clone(), x0, gap, 15));
    }
    cv.text(&captions)?;
    cv.save(path)
}

/// Average PSNR against sigma: plaintext (float), secure, and the noisy input.
pub fn psnr_plot(avgs: &[Average], title: &str, path: &Path) -> Result<()> {
    fonts();
    let (w, h) = (760usize, 480usize);
    let mut cv = Canvas::new(w, h);
    let xs: Vec<f64> = avgs.iter().map(|a| a.sigma).collect();
    let ys: Vec<f64> = avgs
        .iter()
        .flat_map(|a| [a.psnr_float, a.psnr_secure, a.psnr_noisy])
        .filter(|v| v.is_finite())
        .collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min) - 3.0,
        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 3.0,
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::INFINITY, f64::min).floor() - 1.0,
        ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max).ceil() + 1.0,
    );
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    {
        let root =
            BitMapBackend::with_buffer(&mut cv.buf, (w as u32, h as u32)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("noise level σ")
            .y_desc("PSNR (dB)")
            .axis_desc_style((FAMILY, 16))
            .label_style((FAMILY, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        let blue = RGBColor(30, 80, 200);
        let red = RGBColor(RED[0], RED[1], RED[2]);
        let grey = RGBColor(120, 120, 120);
        let series = |f: fn(&Average) -> f64| -> Vec<(f64, f64)> {
            avgs.iter().map(|a| (a.sigma, f(a))).collect()
        };
        let float = series(|a| a.psnr_float);
        let secure = series(|a| a.psnr_secure);
        let noisy = series(|a| a.psnr_noisy);
        chart
            .draw_series(LineSeries::new(float.clone(), blue.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("plaintext (float model)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(float.iter().map(|&p| Circle::new(p, 4, blue.filled())))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(secure.clone(), red.stroke_width(1)))
            .map_err(|e| err(&e))?
            .label("secure (two servers)")
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, red.stroke_width(2)));
        chart
            .draw_series(
                secure
                    .iter()
                    .map(|&p| Circle::new(p, 7, red.stroke_width(2))),
            )
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(noisy.clone(), grey.stroke_width(1)))
            .map_err(|e| err(&e))?
            .label("noisy input")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
        chart
            .draw_series(
                noisy
                    .iter()
                    .map(|&p| Cross::new(p, 4, grey.stroke_width(1))),
            )
            .map_err(|e| err(&e))?;
        legend(&mut chart).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    cv.save(path)
}

/// The charts' legend: upper right, on a light box.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
}

/// Hours against server pairs, both axes logarithmic: one line per series (`bench-tiles`).
pub fn scaling_plot(
    pairs: &[f64],
    series: &[(&str, &Vec<f64>)],
    title: &str,
    path: &Path,
) -> Result<()> {
    fonts();
    let (w, h) = (760usize, 480usize);
    let mut cv = Canvas::new(w, h);
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().cloned())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if ys.is_empty() || pairs.is_empty() {
        return Err(anyhow!("cannot draw {}: nothing to plot", path.display()));
    }
    let (x0, x1) = (pairs[0] / 1.3, pairs[pairs.len() - 1] * 1.3);
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5,
        ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max) * 1.5,
    );
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    {
        let root =
            BitMapBackend::with_buffer(&mut cv.buf, (w as u32, h as u32)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("server pairs")
            .y_desc("hours")
            .axis_desc_style((FAMILY, 16))
            .label_style((FAMILY, 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(|e| err(&e))?;
        let colours = [RGBColor(30, 80, 200), RGBColor(RED[0], RED[1], RED[2])];
        for (i, (label, v)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            let pts: Vec<(f64, f64)> = pairs.iter().cloned().zip(v.iter().cloned()).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| err(&e))?;
        }
        legend(&mut chart).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    cv.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_fit() {
        for (h, w) in [(17, 17), (32, 32), (64, 48), (256, 256), (512, 512)] {
            let (r, c) = crop_regions(h, w);
            for (y, x) in r {
                assert!(y + c <= h && x + c <= w, "{h}x{w}");
            }
        }
    }

    #[test]
    fn draws_pngs() {
        let d = tempfile::tempdir().unwrap();
        let img = Array2::from_shape_fn((40, 40), |(y, x)| ((x * 6 + y) % 256) as f64);
        let p = d.path().join("c.png");
        comparison(
            &[(&img, "Original".into()), (&img, "Noisy σ=25".into())],
            &p,
        )
        .unwrap();
        assert!(::image::open(&p).is_ok());
        let avg = |sigma: f64| Average {
            sigma,
            images: 1,
            psnr_noisy: 20.0,
            psnr_float: 30.0 - sigma / 10.0,
            ssim_float: 0.8,
            psnr_oracle: 30.0,
            ssim_oracle: 0.8,
            psnr_secure: 30.0 - sigma / 10.0,
            ssim_secure: 0.8,
            gap_db: 0.0,
            max_abs_gap_db: 0.0,
            serve_seconds: 1.0,
            bytes_total: 1.0,
        };
        let q = d.path().join("p.png");
        psnr_plot(&[avg(15.0), avg(25.0)], "test", &q).unwrap();
        psnr_plot(&[avg(25.0)], "one sigma", &q).unwrap();
        assert!(::image::open(&q).is_ok());
    }
}
