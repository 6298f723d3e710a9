//! Input resolution shared by the commands: images (files or built-ins) and the default model.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use ndarray::Array2;

use crate::image::phantom;
use crate::image::window::{Sigma, ValueScale, WindowChoice};
use crate::image::{
    self, DerivedSeries, DicomTemplate, Encoding, Format, GrayImage, Keep, OutputSyntax, Windowed,
};
use crate::job::gateway::Noise;
use crate::model::noise_map::NoiseLevel;

/// How the noise level of an image is given to a model with a noise-map channel (FFDNet):
/// `--sigma` alone is one level everywhere; these two give one per pixel.
#[derive(Args, Clone, Default)]
pub struct NoiseArgs {
    /// Per-pixel noise levels for a model that takes a noise map (FFDNet): a 2-D .npy of
    /// sigmas (0..255 scale, image-sized), or an image whose grey values are the sigmas.
    /// The map is shared with the image, never sent in the clear; --sigma is then not used
    /// (nor recorded: the job names the model's nominal sigma).
    #[arg(long, conflicts_with = "noise")]
    pub noise_map: Option<PathBuf>,
    /// Signal-dependent noise, for a model that takes a noise map: the per-pixel map is
    /// computed from the noisy image, `poisson-gaussian:A,B` meaning variance = A * pixel + B
    /// (0..255 scale). Secret like the image.
    #[arg(long)]
    pub noise: Option<String>,
    /// A noise level per colour plane, R,G,B on the model's 0..255 scale (e.g. 10,25,40),
    /// for a colour model with a noise map per colour (the FFDNet paper's 15-channel
    /// input); one model map channel for all planes takes one level (--sigma). Shared in the
    /// map like a per-pixel one; the job records the model's nominal sigma.
    #[arg(long, value_parser = parse_levels, conflicts_with_all = ["sigma", "noise", "noise_map"])]
    pub sigma_per_colour: Option<Levels>,
}

/// Levels per colour plane, `R,G,B` on the 0..255 scale.
#[derive(Clone, Debug)]
pub struct Levels(pub Vec<f64>);

/// Parses `--sigma-per-colour`: three positive, finite levels.
pub fn parse_levels(s: &str) -> Result<Levels, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("{s:?}: expected three levels on the 0..255 scale, R,G,B (e.g. 10,25,40)")
        })?;
    if v.len() != 3 {
        return Err(format!(
            "{s:?}: {} level(s); one per colour plane, R,G,B, expected",
            v.len()
        ));
    }
    if let Some(bad) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(format!("{s:?}: level {bad} must be positive and finite"));
    }
    Ok(Levels(v))
}

impl NoiseArgs {
    /// Signal-dependent noise only (`--noise`), as `demo` and `table` pass it on.
    pub fn signal_dependent(noise: Option<String>) -> NoiseArgs {
        NoiseArgs {
            noise_map: None,
            noise,
            sigma_per_colour: None,
        }
    }

    /// The noise these arguments ask for.
    pub fn plain(&self) -> Noise {
        Noise {
            noise_map: self.noise_map.clone(),
            noise: self.noise.clone(),
            per_colour: self.sigma_per_colour.as_ref().map(|l| l.0.clone()),
        }
    }

    /// True when a per-pixel map is asked for.
    pub fn per_pixel(&self) -> bool {
        self.plain().per_pixel()
    }

    /// [`Noise::level`] of these arguments.
    pub fn level(
        &self,
        sigma: f64,
        noisy: &Array2<f64>,
        colours_maps: (usize, usize),
    ) -> Result<NoiseLevel> {
        self.plain().level(sigma, noisy, colours_maps)
    }
}

/// Loads an image file, or a built-in image named `builtin:<name>`.
/// The clean reference of `--clean`, which must have the size of the image `of` names
/// (checked before any work, so a mismatch is an error, not a panic in the metrics).
pub fn load_clean(spec: &str, dim: (usize, usize), of: &str) -> Result<GrayImage> {
    let clean = load_image(spec)?;
    if clean.pixels.dim() != dim {
        bail!(
            "--clean {spec}: {}x{} pixels, but {of} is {}x{}",
            clean.pixels.nrows(),
            clean.pixels.ncols(),
            dim.0,
            dim.1
        );
    }
    Ok(clean)
}

pub fn load_image(spec: &str) -> Result<GrayImage> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return phantom::builtin(name).ok_or_else(|| {
            anyhow!("unknown built-in image '{name}' (available: phantom, phantom:<size>)")
        });
    }
    Ok(image::load(Path::new(spec))?)
}

/// `--sigma`, parsed (a clap value parser).
pub fn parse_sigma(s: &str) -> std::result::Result<Sigma, String> {
    s.parse()
}

/// Which of an image's values the model's 0..255 scale spans.
#[derive(Args, Clone, Default)]
pub struct WindowArgs {
    /// The value window mapped onto the model's 0..255 scale, in the image's units: `LO:HI`
    /// (Hounsfield units for a CT, through its rescale slope and intercept; a DICOM's modality
    /// values, or stored values where it has no rescale), `auto` (the image's own range:
    /// 0.1st to 99.9th percentile, widened by 10% each side), `full` (the container's bit
    /// range), or `default`: -1024:3071 for a CT, auto for other DICOM, full for PNG and
    /// TIFF. Values outside are clipped for the model and written back unchanged.
    #[arg(long, default_value = "default", value_parser = parse_window, allow_hyphen_values = true)]
    pub window: WindowChoice,
}

fn parse_window(s: &str) -> std::result::Result<WindowChoice, String> {
    s.parse()
}

/// An input image on the window `choice` resolves to, and what that scale is in its units.
pub fn load_image_windowed(spec: &str, choice: &WindowChoice) -> Result<(GrayImage, ValueScale)> {
    let mut w = load_frames_windowed(spec, choice, false)?;
    Ok((w.frames.remove(0), w.scale))
}

/// Every frame of an input image on the window `choice` resolves to (several only when
/// `multi`).
pub fn load_frames_windowed(spec: &str, choice: &WindowChoice, multi: bool) -> Result<Windowed> {
    if spec.starts_with(image::BUILTIN_PREFIX) {
        match choice {
            WindowChoice::Range(w) => bail!(
                "--window {w}: a window is stated in a DICOM's units; {spec} takes its full range"
            ),
            WindowChoice::Declared(d) => bail!(
                "{spec}: the model was trained on a window of a DICOM's values ({d}); it is not \
                 a model for this image (--override-model-window maps it anyway)"
            ),
            _ => {}
        }
        let img = load_image(spec)?;
        let scale = ValueScale::grey(img.bit_depth, img.pixels.len());
        return Ok(Windowed {
            frames: vec![img],
            scale,
        });
    }
    Ok(image::load_windowed(Path::new(spec), choice, multi)?)
}

/// The derived series a DICOM output goes in.
#[derive(Args, Clone)]
pub struct SeriesArgs {
    /// Series Instance UID of the derived series a DICOM output goes in (default: a new one
    /// per run). Give the same UID to every slice of a series processed one by one, so that
    /// a viewer files them as one derived series.
    #[arg(long, value_name = "UID")]
    pub series_uid: Option<String>,
    /// Series Number of the derived series (default: the source's plus 1000 plus the run's
    /// offset, 0 to 999, past any number of the study's known series).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub series_number: Option<i32>,
    /// Series Description of the derived series, up to 64 characters (default: the
    /// source's, followed by what was done and the run's tag, e.g. "Abdomen (denoised,
    /// ffdnet, sigma 20 HU) #3fa41c").
    #[arg(long, value_name = "TEXT")]
    pub series_description: Option<String>,
    /// The source's private attributes (odd groups): dropped (the default; they describe
    /// the source's acquisition and may hold identifiers) or kept.
    #[arg(long, value_name = "keep|drop", default_value = "drop", value_parser = Keep::parse)]
    pub private_tags: Keep,
    /// The source's overlays (groups 60xx) with their own Overlay Data: kept (the default;
    /// they annotate the unchanged geometry) or dropped. Overlays in the pixel data's unused
    /// bits are always dropped, since the pixels are rewritten.
    #[arg(long, value_name = "keep|drop", default_value = "keep", value_parser = Keep::parse)]
    pub overlays: Keep,
    /// Transfer syntax of a DICOM output: explicit-le (uncompressed, the default),
    /// jpeg-ls-lossless or j2k-lossless (JPEG 2000 lossless only).
    #[arg(long, value_name = "SYNTAX", default_value = "explicit-le", value_parser = OutputSyntax::parse)]
    pub transfer_syntax: OutputSyntax,
}

impl Default for SeriesArgs {
    /// What the command line gives without options.
    fn default() -> SeriesArgs {
        SeriesArgs {
            series_uid: None,
            series_number: None,
            series_description: None,
            private_tags: Keep::Drop,
            overlays: Keep::Keep,
            transfer_syntax: OutputSyntax::ExplicitLe,
        }
    }
}

impl SeriesArgs {
    /// The series UID: the one given (checked) or a new one.
    pub fn uid(&self) -> Result<String> {
        match &self.series_uid {
            Some(u) if image::dicom::valid_uid(u) => Ok(u.clone()),
            Some(u) => bail!(
                "--series-uid {u:?}: not a DICOM UID (digits and dots, at most 64 characters, \
                 no empty or zero-led component)"
            ),
            None => Ok(image::dicom::new_uid()),
        }
    }

    /// The run's derived series: every choice checked, its time the run's.
    pub fn derived(&self) -> Result<DerivedSeries> {
        if let Some(d) = &self.series_description {
            image::derived::check_description(d)
                .map_err(|e| anyhow!("--series-description {e}"))?;
        }
        Ok(DerivedSeries {
            number: self.series_number.map(i64::from),
            description: self.series_description.clone(),
            private_tags: self.private_tags,
            overlays: self.overlays,
            syntax: self.transfer_syntax,
            ..DerivedSeries::new(self.uid()?)
        })
    }
}

/// How to write the image `out`, by its extension: PNG or TIFF at `depth` (8 or 16), or
/// DICOM like `like`, or else like the input image `input` when that is a DICOM file
/// (`derivation` goes in its Derivation Description; the output goes in the derived series
/// `series`, described by `what`), on the window `window` resolves to for the template's
/// pixels. Called before any work is done, so a DICOM output without
/// a usable template is refused first.
pub fn output_encoding(
    out: &Path,
    depth: u8,
    like: Option<&Path>,
    input: Option<&str>,
    derivation: String,
    (series, what): (&SeriesArgs, &str),
    window: &WindowChoice,
) -> Result<Encoding> {
    let mut derived = series.derived()?;
    let template = match like {
        Some(p) => Some(p.to_path_buf()),
        None if Format::of_extension(out) == Format::Dicom => input
            .filter(|s| !s.starts_with(image::BUILTIN_PREFIX))
            .map(PathBuf::from)
            .filter(|p| Format::of_file(p) == Some(Format::Dicom)),
        None => None,
    };
    // A new series per run: the series of the template's folder (an earlier run's output
    // written beside it among them) are the study's known to this run. Not with
    // --series-uid, the slices of one series processed one by one.
    if let (Some(t), None) = (&template, &series.series_uid) {
        let dir = t.parent().filter(|d| !d.as_os_str().is_empty());
        derived.known = image::series::known_series(dir.unwrap_or(Path::new(".")), 10_000);
    }
    let template = template
        .map(|p| {
            DicomTemplate::read(p)?
                .with_derivation(derivation)
                .in_series(&derived, what)
                .with_window(window)
                .map(|(t, _)| t)
        })
        .transpose()?;
    Ok(Encoding::for_path(out, depth, template)?)
}

/// The shipped default model: `fixtures/default-model.npz` in the working directory or in
/// the source tree this binary was built from.
pub fn default_model() -> PathBuf {
    let local = PathBuf::from("fixtures/default-model.npz");
    if local.exists() {
        return local;
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/default-model.npz"
    ))
}

pub fn model_or_default(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(default_model)
}

/// A model file as the commands that run it end to end (`demo`, `table`, `bench`) tell it
/// apart, read once: an MLP, a CNN, or a CNN graph (docs/graph.md).
pub enum ModelFile {
    Mlp(Box<crate::model::mlp::Model>),
    Cnn(Box<crate::model::cnn::Cnn>),
    Graph(Box<crate::model::graph::Graph>),
}

impl ModelFile {
    pub fn load(path: &Path) -> Result<ModelFile> {
        use crate::import::onnx::{is_onnx, load, Net};
        use crate::model::cnn::Cnn;
        Ok(if is_onnx(path) {
            match load(path)? {
                Net::Mlp(m) => ModelFile::Mlp(Box::new(m)),
                Net::Cnn(c) => ModelFile::Cnn(Box::new(c)),
                Net::Graph(g) => ModelFile::Graph(Box::new(g)),
            }
        } else if Cnn::is_cnn_file(path)? {
            ModelFile::Cnn(Box::new(Cnn::load(path)?))
        } else {
            ModelFile::Mlp(Box::new(crate::model::mlp::Model::load(path)?))
        })
    }
}
