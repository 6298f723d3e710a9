//! The gateway's steps: `share-image` (and the `add-noise` tool for experiments).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inputs::{load_image, output_encoding};
use super::owner::with_ext;
use super::Summary;
use crate::formats::atomic::Staged;
use crate::formats::bodies::{is_cnn, Data, ImageShare, JobParams, CNN, NETWORK, NOISE_MAP};
use crate::formats::container::{self, fresh_id, id_hex, Header, Kind};
use crate::plain::frame::Frame;
use crate::plain::image::{add_noise as awgn, GrayImage};
use crate::plain::noise_map::{NoiseLevel, PoissonGaussian};
use crate::plain::preprocess::Preprocess;
use crate::ring::oracle::encode_image;
use crate::ring::share::{fresh_seed, share_with_seed, Stream};

/// Secret-share a noisy image for S0 and S1 (a new job).
///
/// The image is normalised ((p/255 - 0.5) * 5, after optional sigma*/sigma scaling), encoded
/// in fixed point and shared once, not per patch: the servers pad it and extract patches from
/// their shares. S1's share is a 32-byte PRG seed, so the upload is about one image's worth.
#[derive(Args)]
pub struct ShareImageArgs {
    /// Noisy image (PNG or TIFF, 8 or 16 bit grayscale; single-frame grayscale DICOM) or
    /// builtin:phantom.
    #[arg(long)]
    pub image: String,
    /// Output prefix: writes <out>.p0 and <out>.p1 (one per server) and <out>.pub (the public
    /// job header, all the dealer needs).
    #[arg(long, default_value = "image")]
    pub out: PathBuf,
    #[command(flatten)]
    pub opts: ShareOpts,
}

/// How an image is encoded and shared (`share-image`, `share-study`).
#[derive(Args)]
pub struct ShareOpts {
    /// Noise level of the image (0..255 scale).
    #[arg(long, default_value_t = 25.0)]
    pub sigma: f64,
    /// Noise level the model was trained for (sigma*).
    #[arg(long, default_value_t = 25.0)]
    pub model_sigma: f64,
    /// Do not apply the paper's sigma*/sigma scaling. Scaling is on by default: with the
    /// shipped model it measured +0.62 dB at sigma 15 and +1.49 dB at sigma 35 on set12.
    #[arg(long)]
    pub no_scale_noise: bool,
    /// Patch stride.
    #[arg(long, default_value_t = 3)]
    pub stride: usize,
    /// Fixed-point fractional bits (must match the model shares).
    #[arg(long, default_value_t = crate::ring::plan::FixedParams::default().s)]
    pub scale: u32,
    /// The model's public header (model.pub from `share-model`): the image is then encoded as
    /// that model takes it (its scale and sigma* replace --scale and --model-sigma; a CNN
    /// gets p/255 instead of the MLP's normalisation, and no patches; a CNN with a noise-map
    /// channel, FFDNet, gets the noise map: --sigma everywhere, or --noise-map / --noise).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub noise: super::inputs::NoiseArgs,
    #[command(flatten)]
    pub seal: super::keys::SealArgs,
}

/// What the gateway takes from a model's public header.
struct ModelFacts {
    scale: u32,
    sigma: f64,
    cnn: bool,
    /// The CNN's frame (sub-images, noise map); the identity for MLPs.
    frame: Frame,
}

fn model_facts(path: &std::path::Path) -> Result<ModelFacts> {
    let h = container::verify(path)?;
    container::expect(path, &h, Kind::PublicModel, None)?;
    let sigma = h
        .info("sigma")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .with_context(|| format!("{}: header lacks the model's sigma", path.display()))?;
    let frame = if is_cnn(&h) {
        crate::formats::checks::cnn_plan_from_header(path, &h)?.frame
    } else {
        Frame::PLAIN
    };
    Ok(ModelFacts {
        scale: h.scale,
        sigma,
        cnn: is_cnn(&h),
        frame,
    })
}

pub fn job_header(kind: Kind, party: u8, job_id: [u8; 16], job: &JobParams) -> Header {
    let mut h = Header::new(kind, party, job.scale);
    h.job_id = Some(job_id);
    h.shapes
        .push(("image".into(), vec![job.height as u64, job.width as u64]));
    h.info.push((
        "job".into(),
        serde_json::to_string(job).expect("job params serialise"),
    ));
    h
}

pub fn job_from_header(path: &std::path::Path, h: &Header) -> Result<JobParams> {
    let s = h
        .info("job")
        .with_context(|| format!("{}: header lacks the job parameters", path.display()))?;
    let job: JobParams = serde_json::from_str(s)
        .with_context(|| format!("{}: malformed job parameters", path.display()))?;
    job.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(job)
}

/// The gateway with its options checked: shares one image after another as new jobs.
pub struct Sharer<'a> {
    opts: &'a ShareOpts,
    facts: ModelFacts,
    to: super::keys::Outputs,
}

/// One image, shared: its job id and the files written.
pub struct Shared {
    pub job_id: [u8; 16],
    pub outputs: Vec<PathBuf>,
    pub upload_bytes: u64,
}

impl<'a> Sharer<'a> {
    pub fn new(opts: &'a ShareOpts) -> Result<Sharer<'a>> {
        let to = opts.seal.outputs(crate::formats::signing::Role::Gateway)?;
        if opts.stride == 0 {
            bail!("--stride must be at least 1");
        }
        if !(opts.sigma > 0.0 && opts.model_sigma > 0.0) {
            bail!("--sigma and --model-sigma must be positive");
        }
        let facts = match &opts.model {
            Some(m) => model_facts(m)?,
            None => ModelFacts {
                scale: opts.scale,
                sigma: opts.model_sigma,
                cnn: false,
                frame: Frame::PLAIN,
            },
        };
        if facts.frame.noise_map && opts.sigma > crate::plain::noise_map::MAX_SIGMA {
            bail!(
                "--sigma {}: a model with a noise map takes sigma up to {} (its fixed point was measured to there)",
                opts.sigma,
                crate::plain::noise_map::MAX_SIGMA
            );
        }
        Ok(Sharer { opts, facts, to })
    }

    /// The job `img` (named `name`) makes, its noise level and encoding: every check of an
    /// image, drawing no randomness.
    fn job(&self, img: &GrayImage, name: &str) -> Result<(JobParams, NoiseLevel, Preprocess)> {
        let (a, facts) = (self.opts, &self.facts);
        let (h, w) = img.pixels.dim();
        let noise = a
            .noise
            .level(a.sigma, &img.pixels, facts.frame.noise_map)
            .with_context(|| name.to_string())?;
        // With a per-pixel map the job records no noise level of the image's: --sigma might be
        // an estimate made from its pixels. The model's nominal sigma stands in (public).
        let job_sigma = match noise {
            NoiseLevel::PerPixel(_) => facts.sigma,
            NoiseLevel::Uniform(s) => s,
        };
        // A model with a noise map takes the image as it is: the map carries the level.
        let pre = if facts.frame.noise_map {
            Preprocess::identity()
        } else {
            Preprocess::new(a.sigma, facts.sigma, !a.no_scale_noise)
        };
        let job = JobParams {
            height: h,
            width: w,
            bit_depth: img.bit_depth,
            // A CNN runs on the whole image: no patches.
            stride: if facts.cnn { 1 } else { a.stride },
            scale: facts.scale,
            pre,
            sigma: job_sigma,
            model_sigma: facts.sigma,
        };
        job.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok((job, noise, pre))
    }

    /// Checks that `img` can be shared, drawing no randomness.
    pub fn check(&self, img: &GrayImage, name: &str) -> Result<()> {
        self.job(img, name).map(|_| ())
    }

    /// Shares `img` as a new job: writes `<out>.p0`, `<out>.p1` and `<out>.pub`.
    pub fn share(&self, img: &GrayImage, name: &str, out: &std::path::Path) -> Result<Shared> {
        let facts = &self.facts;
        let (job, noise, pre) = self.job(img, name)?;
        let (h, w) = img.pixels.dim();
        let map = if facts.frame.noise_map {
            noise.stack_map(&facts.frame, h, w)
        } else {
            Vec::new()
        };
        // The map's values follow the image's in the one shared vector: secret either way.
        let enc = if facts.cnn {
            crate::ring::cnn::encode_image(&img.pixels, &map, &pre, facts.scale)
        } else {
            encode_image(&img.pixels, &pre, facts.scale)
        };
        let job_header = |kind: Kind, party: u8, id: [u8; 16], job: &JobParams| {
            let mut h = job_header(kind, party, id, job);
            if facts.cnn {
                h.info.push((NETWORK.into(), CNN.into()));
            }
            if facts.frame.noise_map {
                // The same for both kinds of map: which kind the gateway used is not the
                // servers' business (a per-pixel one says the noise follows the signal).
                h.info.push((NOISE_MAP.into(), "shared".into()));
            }
            h
        };
        let seed = fresh_seed();
        let explicit = share_with_seed(&enc, &seed, Stream::ImageShare);
        let job_id = fresh_id();
        let mut outputs = Vec::new();
        // The three files appear together or not at all.
        let mut set = Staged::default();
        for (party, data) in [(0u8, Data::Explicit(explicit)), (1u8, Data::Seed(seed))] {
            let path = with_ext(out, party);
            let hdr = job_header(Kind::ImageShare, party, job_id, &job);
            let body = ImageShare {
                job: job.clone(),
                data,
            };
            container::stage(&mut set, &path, &hdr, &body, self.to.party(party))
                .with_context(|| format!("writing {}", path.display()))?;
            outputs.push(path);
        }
        // The dealer's copy: the public job header alone.
        let path = super::owner::public_file(out);
        container::stage(
            &mut set,
            &path,
            &job_header(Kind::PublicJob, 0, job_id, &job),
            &(),
            self.to.public(),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        outputs.push(path);
        set.commit()?;
        let upload_bytes =
            std::fs::metadata(&outputs[0])?.len() + std::fs::metadata(&outputs[1])?.len();
        Ok(Shared {
            job_id,
            outputs,
            upload_bytes,
        })
    }
}

pub fn share_image(a: ShareImageArgs) -> Result<Summary> {
    let t = Instant::now();
    let sharer = Sharer::new(&a.opts)?;
    let img = load_image(&a.image)?;
    let (h, w) = img.pixels.dim();
    let done = sharer.share(&img, &a.image, &a.out)?;
    let outs: Vec<String> = done
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![format!(
            "image {} ({h}x{w}) shared as {} and {}; job id {}; upload {} bytes in total",
            a.image,
            outs[0],
            outs[1],
            id_hex(&done.job_id),
            done.upload_bytes
        )],
        json: serde_json::json!({
            "ok": true, "command": "share-image", "job_id": id_hex(&done.job_id), "height": h, "width": w,
            "outputs": outs, "upload_bytes": done.upload_bytes, "seconds": secs,
        }),
    })
}

/// Add white Gaussian noise of a given sigma (seeded) and save the noisy image: an 8-bit PNG
/// or TIFF, or a DICOM like the input.
#[derive(Args)]
pub struct AddNoiseArgs {
    /// Clean image (PNG, TIFF or DICOM; a multi-frame DICOM whole) or builtin:phantom; or a
    /// folder (a DICOM series or images, in the series' order, slice i with seed + i), whose
    /// outputs go under their names into the new folder --out.
    #[arg(long)]
    pub image: String,
    #[arg(long, default_value_t = 25.0)]
    pub sigma: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output image, by extension: .tif/.tiff an 8-bit TIFF, .dcm a DICOM like the input (or
    /// --like) at its bit depth, anything else an 8-bit PNG. Values are rounded and clipped
    /// to what the file holds.
    #[arg(long)]
    pub out: PathBuf,
    /// DICOM whose attributes and pixel layout a .dcm output takes (default: the input, when
    /// it is a DICOM).
    #[arg(long)]
    pub like: Option<PathBuf>,
    #[command(flatten)]
    pub series: super::inputs::SeriesArgs,
    /// Signal-dependent noise instead of --sigma: `poisson-gaussian:A,B`, variance =
    /// A * clean pixel + B (0..255 scale).
    #[arg(long)]
    pub noise: Option<String>,
    /// Also write the true per-pixel sigma map as a 2-D f64 .npy (what `share-image
    /// --noise-map` reads).
    #[arg(long)]
    pub map_out: Option<PathBuf>,
}

/// `add-noise` over a folder (a DICOM series or images): slice `i` gets the noise of seed
/// `seed + i`; the outputs go under their inputs' names into the new folder `--out` (all or
/// none), a series into one new derived series.
fn add_noise_folder(a: &AddNoiseArgs, pg: Option<PoissonGaussian>) -> Result<Summary> {
    if a.map_out.is_some() || a.like.is_some() {
        bail!(
            "--image {}: a folder takes neither --map-out nor --like",
            a.image
        );
    }
    let noise = match &a.noise {
        Some(n) => format!("noise {n}"),
        None => format!("noise sigma {}", a.sigma),
    };
    let folder = super::folders::Folder::open(
        std::path::Path::new(&a.image),
        &a.series,
        &format!("{noise} added"),
        &format!(
            "{noise} added by ppdenoise add-noise (seed {} plus the slice's index)",
            a.seed
        ),
    )?;
    let written = folder.run(
        &a.out,
        |_| 8,
        |i, img| {
            let seed = a.seed.wrapping_add(i as u64);
            Ok(match pg {
                Some(pg) => pg.add_to(img, seed),
                None => awgn(img, a.sigma, seed),
            }
            .pixels)
        },
    )?;
    Ok(Summary {
        lines: vec![format!(
            "wrote {} slices of {} into {} ({noise}; slice i: seed {} + i)",
            written.files.len(),
            a.image,
            a.out.display(),
            a.seed
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out,
            "files": written.files, "series_uid": written.series_uid}),
    })
}

/// `add-noise` on a multi-frame image: frame `k` gets the noise of seed `seed + k`, and the
/// output is one DICOM of as many frames.
fn add_noise_frames(
    a: &AddNoiseArgs,
    frames: &[GrayImage],
    pg: Option<PoissonGaussian>,
    enc: &crate::plain::image::Encoding,
) -> Result<Summary> {
    if let Some(m) = &a.map_out {
        bail!(
            "--map-out {}: one map is for one image, and {} has {} frames",
            m.display(),
            a.image,
            frames.len()
        );
    }
    let mut psnrs = Vec::with_capacity(frames.len());
    let noisy: Vec<GrayImage> = (0u64..)
        .zip(frames)
        .map(|(k, img)| {
            let seed = a.seed.wrapping_add(k);
            let noisy = match pg {
                Some(pg) => pg.add_to(img, seed),
                None => awgn(img, a.sigma, seed),
            };
            let q = enc.quantize(&noisy.pixels);
            psnrs.push(crate::plain::metrics::psnr(&img.pixels, &q, 255.0));
            GrayImage {
                pixels: q,
                bit_depth: enc.bit_depth(),
            }
        })
        .collect();
    enc.save_frames(&noisy, &a.out)?;
    let psnr = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}, {} frames; seeds {} to {}): mean PSNR {psnr:.2} dB against the clean frames",
            a.out.display(),
            enc.describe(),
            frames.len(),
            a.seed,
            a.seed.wrapping_add(frames.len() as u64 - 1)
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": psnr,
            "frames": frames.len(), "psnr_frames": psnrs}),
    })
}

pub fn add_noise(a: AddNoiseArgs) -> Result<Summary> {
    if !(a.sigma.is_finite() && a.sigma >= 0.0) {
        bail!("--sigma {}: must be finite and at least 0", a.sigma);
    }
    let pg = a.noise.as_deref().map(PoissonGaussian::parse).transpose()?;
    if super::folders::is_folder(&a.image) {
        return add_noise_folder(&a, pg);
    }
    let enc = output_encoding(
        &a.out,
        8,
        a.like.as_deref(),
        Some(&a.image),
        match &a.noise {
            Some(n) => format!("Noise {n} added by ppdenoise add-noise (seed {})", a.seed),
            None => format!(
                "Gaussian noise added by ppdenoise add-noise (sigma {}, seed {})",
                a.sigma, a.seed
            ),
        },
        (
            &a.series,
            &match &a.noise {
                Some(n) => format!("noise {n} added"),
                None => format!("noise sigma {} added", a.sigma),
            },
        ),
    )?;
    let frames = super::inputs::load_frames_input(&a.image)?;
    enc.check_frames(frames.len(), &a.out)?;
    if frames.len() > 1 {
        return add_noise_frames(&a, &frames, pg, &enc);
    }
    let img = frames.into_iter().next().expect("one frame");
    let noisy = match pg {
        Some(pg) => pg.add_to(&img, a.seed),
        None => awgn(&img, a.sigma, a.seed),
    };
    if let Some(m) = &a.map_out {
        let map = match pg {
            Some(pg) => pg.map_of(&img.pixels),
            None => img.pixels.mapv(|_| a.sigma),
        };
        crate::formats::atomic::write_with(m, |f| {
            use ndarray_npy::WriteNpyExt;
            map.write_npy(f)?;
            Ok(())
        })
        .with_context(|| format!("writing {}", m.display()))?;
    }
    let q = GrayImage {
        pixels: enc.quantize(&noisy.pixels),
        bit_depth: enc.bit_depth(),
    };
    enc.save(&q, &a.out)?;
    let psnr = crate::plain::metrics::psnr(&img.pixels, &q.pixels, 255.0);
    let what = match &a.noise {
        Some(n) => n.clone(),
        None => format!("sigma {}", a.sigma),
    };
    Ok(Summary {
        lines: vec![format!(
            "wrote {} ({}; {what}, seed {}): PSNR {:.2} dB against the clean image",
            a.out.display(),
            enc.describe(),
            a.seed,
            psnr
        )],
        json: serde_json::json!({"ok": true, "command": "add-noise", "out": a.out, "psnr": psnr}),
    })
}
