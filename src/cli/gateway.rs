//! The gateway's steps: `share-image` (and the `add-noise` tool for experiments).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inputs::{load_image_windowed, output_encoding};
use super::owner::with_ext;
use super::Summary;
use crate::fileio::atomic::Staged;
use crate::formats::bodies::{is_cnn, Data, ImageShare, JobParams, CNN, NAME, NETWORK, NOISE_MAP};
use crate::formats::container::{self, fresh_id, id_hex, Header, Kind};
use crate::formats::receiver_facts::{facts_file, ReceiverFacts};
use crate::formats::signing::{signer_of, Role, Trust};
use crate::image::window::{DeclaredWindow, Sigma, Units, ValueScale, WindowChoice, MODEL_WINDOW};
use crate::image::{add_noise as awgn, GrayImage};
use crate::model::frame::Frame;
use crate::model::noise_map::{NoiseLevel, PoissonGaussian};
use crate::model::preprocess::Preprocess;
use crate::ring::oracle::encode_image;
use crate::ring::share::{fresh_seed, share_with_seed, Stream};
use crate::ring::sweep::{parse_ranges, range_for, span, Ranges, SIGMA_RANGE};

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
    /// Noise level of the image (required): a number on the model's 0..255 scale (the
    /// window's range spread over 0..255), `20HU` in Hounsfield units (CT), `20SV` in stored
    /// values, or `auto`: estimated from each image (docs/dicom.md).
    /// Not needed with a per-pixel map (--noise-map, --noise), which carries the level.
    #[arg(long, value_parser = super::inputs::parse_sigma,
          required_unless_present_any = ["noise", "noise_map"])]
    pub sigma: Option<Sigma>,
    #[command(flatten)]
    pub window: super::inputs::WindowArgs,
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
    pub owner: super::keys::OwnerPinArgs,
    /// Map the images with --window even though the model declares another window it was
    /// trained on (its header's `window`); without it such a --window is refused.
    #[arg(long)]
    pub override_model_window: bool,
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
    /// The noise levels its owner's sweep found its fixed point holds for (0..255 scale), per span of
    /// values, when recorded.
    sigma_range: Option<Ranges>,
    /// The window of image values it was trained on, where its owner declared one.
    window: Option<DeclaredWindow>,
    name: String,
    /// Its id: the jobs shared for it name it, and run with no other model.
    model_id: Option<crate::formats::container::Id>,
}

/// The facts of the public model header at `path`, signed by the owner key `owner` pins
/// when given (its signature verified with the whole file), before any of them is used.
fn model_facts(path: &std::path::Path, owner: Option<&Trust>) -> Result<ModelFacts> {
    let h = container::verify(path)?;
    container::expect(path, &h, Kind::PublicModel, None)?;
    if h.model_id.is_none() {
        bail!(
            "{}: names no model id (share-model writes one): a job shared for it would be \
             bound to no model",
            path.display()
        );
    }
    if let Some(trust) = owner {
        if matches!(signer_of(&h), Ok(None)) {
            bail!(
                "{}: not signed; the model owner's key is pinned ({}): a model.pub is taken \
                 only signed with it (share-model --sign-key); nothing shared",
                path.display(),
                trust
                    .key_of(Role::Owner)
                    .map(|k| k.to_string())
                    .unwrap_or_default()
            );
        }
        trust
            .check(path, &h)
            .context("the model owner's key is pinned; nothing shared")?;
    }
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
    let sigma_range = match h.info(SIGMA_RANGE) {
        Some(r) => Some(
            parse_ranges(r)
                .with_context(|| format!("{}: malformed {SIGMA_RANGE} {r:?}", path.display()))?,
        ),
        None => None,
    };
    let window = h
        .info(MODEL_WINDOW)
        .map(|v| {
            v.parse::<DeclaredWindow>()
                .map_err(|e| anyhow::anyhow!("{}: header's {MODEL_WINDOW} {e}", path.display()))
        })
        .transpose()?;
    Ok(ModelFacts {
        scale: h.scale,
        sigma,
        cnn: is_cnn(&h),
        frame,
        sigma_range,
        window,
        name: h.info(NAME).unwrap_or("the model").to_string(),
        model_id: h.model_id,
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
    /// --window resolved against the model's declared window.
    window: WindowChoice,
    to: super::keys::Outputs,
    /// Said when --model was taken with no owner key pinned.
    model_note: Option<String>,
}

/// One image, shared: its job id and the files written.
pub struct Shared {
    pub job_id: [u8; 16],
    pub outputs: Vec<PathBuf>,
    pub upload_bytes: u64,
    /// The image's noise level (0..255 scale).
    pub sigma: f64,
    /// The scaling the image was encoded with.
    pub pre: Preprocess,
    /// Whether the level and scaling are the receiver's to know alone (the job holds
    /// stand-ins): [`JobParams::private_pre`].
    pub private: bool,
}

impl<'a> Sharer<'a> {
    /// The gateway's signing key, when it signs (`--sign-key`).
    pub fn signer(&self) -> Option<&crate::formats::signing::Signer> {
        self.to.by.as_ref()
    }

    /// The note that --model's maker was not checked (no owner key pinned), if so.
    pub fn model_note(&self) -> Option<&str> {
        self.model_note.as_deref()
    }

    pub fn new(opts: &'a ShareOpts) -> Result<Sharer<'a>> {
        let to = opts.seal.outputs(crate::formats::signing::Role::Gateway)?;
        if opts.stride == 0 {
            bail!("--stride must be at least 1");
        }
        if !(opts.model_sigma.is_finite() && opts.model_sigma > 0.0) {
            bail!("--model-sigma {}: must be positive", opts.model_sigma);
        }
        // Whose model.pub to believe, before it is read.
        let owner = opts.owner.load()?;
        // A signing gateway vouches for what it shares: the model's facts it encodes the
        // image with (window, noise range, sigma*, id) are taken only as the owner signed them.
        if let (Some(m), None, Some(_)) = (&opts.model, &owner, &to.by) {
            bail!(
                "--model {}: the gateway signs its files (--sign-key) but pins no model owner: \
                 give --owner-key or --trust with an `owner` line, so that the model's window, \
                 noise range and id are taken only as its owner signed them",
                m.display()
            );
        }
        let facts = match &opts.model {
            Some(m) => model_facts(m, owner.as_ref())?,
            None => ModelFacts {
                scale: opts.scale,
                sigma: opts.model_sigma,
                cnn: false,
                frame: Frame::PLAIN,
                sigma_range: None,
                window: None,
                name: "the model".into(),
                model_id: None,
            },
        };
        if opts.override_model_window && facts.window.is_none() {
            bail!(
                "--override-model-window: {} declares no window (it applies to a model whose \
                 header has one)",
                facts.name
            );
        }
        let window = DeclaredWindow::resolve(
            facts.window.as_ref(),
            &opts.window.window,
            opts.override_model_window,
            &facts.name,
        )
        .map_err(anyhow::Error::msg)?;
        let model_note = match (&opts.model, &owner) {
            (Some(m), None) => Some(format!(
                "note: {}'s maker was not checked (no --owner-key, or --trust with an `owner` \
                 line): whoever can write it chooses the window, noise-level range and network \
                 the images are encoded for",
                m.display()
            )),
            _ => None,
        };
        let sharer = Sharer {
            opts,
            facts,
            window,
            to,
            model_note,
        };
        if let Some(Sigma::Scale(v)) = opts.sigma {
            sharer.check_level(v).context("--sigma")?;
        }
        Ok(sharer)
    }

    /// Whether the model takes noise level `level` (0..255 scale), for a model with a noise
    /// map; checked before any image is read.
    fn check_level(&self, level: f64) -> Result<()> {
        if self.facts.frame.noise_map && level > crate::model::noise_map::MAX_SIGMA {
            bail!(
                "noise level {level:.3} on the 0..255 scale: a model with a noise map takes up \
                 to {} (its fixed point was measured to there)",
                crate::model::noise_map::MAX_SIGMA
            );
        }
        Ok(())
    }

    /// Whether the model's fixed point holds at noise level `level` on an image of values
    /// spanning `span` levels (its owner's sweep, in its public header).
    fn check_range(&self, level: f64, span: f64) -> Result<()> {
        let Some(r) = &self.facts.sigma_range else {
            return Ok(());
        };
        let Some((lo, hi)) = range_for(r, span) else {
            bail!(
                "noise level {level:.3} on the model's 0..255 scale, on values spanning \
                 {span:.0} levels: {}'s fixed point holds at no noise level there \
                 (share-model's sweep, in its public header); use a model with a noise map \
                 (FFDNet)",
                self.facts.name
            );
        };
        if (lo..=hi).contains(&level) {
            return Ok(());
        }
        bail!(
            "noise level {level:.3} on the model's 0..255 scale, on values spanning {span:.0} \
             levels: {}'s fixed point holds for {lo:.3} to {} there (share-model's sweep, in \
             its public header){}",
            self.facts.name,
            if hi.is_finite() {
                format!("{hi:.3}")
            } else {
                "any above".into()
            },
            if level < lo {
                "; a narrower --window raises the level (e.g. a CT's soft tissue, --window \
                 -160:240, is 10 times narrower than the default), or use a model with a \
                 noise map (FFDNet), which takes any level"
            } else {
                "; a model with a noise map (FFDNet) takes up to 150"
            }
        )
    }

    /// The noise level of `img` on the 0..255 scale, from --sigma in its units.
    /// Without --sigma (a per-pixel map gives the levels), the model's nominal sigma.
    pub fn level(&self, img: &GrayImage, scale: &ValueScale, name: &str) -> Result<f64> {
        let Some(sigma) = self.opts.sigma else {
            return Ok(self.facts.sigma);
        };
        let level = scale
            .level_of(sigma, &img.pixels)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        self.check_level(level)
            .and_then(|()| self.check_range(level, span(&img.pixels)))
            .with_context(|| format!("{name}: --sigma {sigma}"))?;
        Ok(level)
    }

    /// The window images are mapped with: --window, or the model's declared one.
    pub fn window(&self) -> &WindowChoice {
        &self.window
    }

    /// The job `img` (named `name`) makes, its noise level and encoding: every check of an
    /// image, drawing no randomness.
    fn job(
        &self,
        img: &GrayImage,
        scale: &ValueScale,
        name: &str,
    ) -> Result<(JobParams, NoiseLevel, Preprocess, f64)> {
        let (a, facts) = (self.opts, &self.facts);
        let (h, w) = img.pixels.dim();
        let sigma = self.level(img, scale, name)?;
        // A noise-map model takes the level in its shared map: nothing to keep private.
        let derived = a.sigma.is_some_and(|s| scale.private_level(s));
        let private = derived && !facts.frame.noise_map;
        let noise = a
            .noise
            .level(sigma, &img.pixels, facts.frame.noise_map)
            .with_context(|| name.to_string())?;
        // With a per-pixel map the job records no noise level of the image's: --sigma might be
        // an estimate made from its pixels. The model's nominal sigma stands in (public).
        let job_sigma = match noise {
            NoiseLevel::PerPixel(_) => facts.sigma,
            NoiseLevel::Uniform(_) if derived => facts.sigma,
            NoiseLevel::Uniform(s) => s,
        };
        // A model with a noise map takes the image as it is: the map carries the level.
        let pre = if facts.frame.noise_map {
            Preprocess::identity()
        } else {
            Preprocess::new(sigma, facts.sigma, !a.no_scale_noise)
        };
        let job = JobParams {
            height: h,
            width: w,
            bit_depth: img.bit_depth,
            // A CNN runs on the whole image: no patches.
            stride: if facts.cnn { 1 } else { a.stride },
            scale: facts.scale,
            // A pixel-derived scaling stays with the gateway and the receiver.
            pre: if private { Preprocess::identity() } else { pre },
            sigma: job_sigma,
            model_sigma: facts.sigma,
            private_pre: private,
        };
        job.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok((job, noise, pre, sigma))
    }

    /// Checks that `img` can be shared, drawing no randomness.
    pub fn check(&self, img: &GrayImage, scale: &ValueScale, name: &str) -> Result<()> {
        self.job(img, scale, name).map(|_| ())
    }

    /// Shares `img` (on `scale`) as a new job: writes `<out>.p0`, `<out>.p1` and `<out>.pub`.
    pub fn share(
        &self,
        img: &GrayImage,
        scale: &ValueScale,
        name: &str,
        out: &std::path::Path,
    ) -> Result<Shared> {
        let facts = &self.facts;
        let (job, noise, pre, sigma) = self.job(img, scale, name)?;
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
            // The job runs with this model only (the dealer and the servers check).
            h.model_id = facts.model_id;
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
            sigma,
            pre,
            private: job.private_pre,
        })
    }
}

/// What the gateway says of an image's window and noise level, in the image's units.
pub fn intensity_line(name: &str, scale: &ValueScale, sigma: f64, given: Option<Sigma>) -> String {
    let units = scale.units.name();
    let mut line = format!(
        "{name}: window {} {units} onto the model's 0..255 ({:.4} {units} per level); noise \
         {:.3} on that scale = {:.3} {units}{}",
        scale.window,
        scale.window.per_level(),
        sigma,
        scale.in_units(sigma),
        if given == Some(Sigma::Auto) {
            " (estimated)"
        } else {
            ""
        }
    );
    if scale.clipped > 0 {
        line.push_str(&format!(
            "; {} of {} pixels ({:.2}%) outside the window, clipped for the model and written \
             back unchanged by the receiver",
            scale.clipped,
            scale.pixels,
            100.0 * scale.clipped as f64 / scale.pixels.max(1) as f64
        ));
    }
    line
}

pub fn share_image(a: ShareImageArgs) -> Result<Summary> {
    let t = Instant::now();
    let sharer = Sharer::new(&a.opts)?;
    let (img, scale) = load_image_windowed(&a.image, sharer.window())?;
    let (h, w) = img.pixels.dim();
    let done = sharer.share(&img, &scale, &a.image, &a.out)?;
    let outs: Vec<String> = done
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut notes: Vec<String> = sharer.model_note().map(String::from).into_iter().collect();
    let mut facts = None;
    // A DICOM's window (and a private level's scaling) for the receiver alone: without it
    // the receiver would have to be told the same --window again.
    if done.private || scale.units != Units::Grey {
        let rx = facts_file(&a.out);
        ReceiverFacts::new(
            id_hex(&done.job_id),
            done.pre.noise_scale,
            done.sigma,
            scale.window,
            scale.units,
        )
        .write_signed(&rx, sharer.signer())?;
        notes.push(format!(
            "{}give {} to the receiver alone (reconstruct --job-facts): the window{}",
            if done.private {
                "the noise level came from the image's pixels, so the servers got stand-ins; "
            } else {
                ""
            },
            rx.display(),
            if done.private {
                ", the level and the scaling"
            } else {
                " the image was shared on"
            }
        ));
        facts = Some(rx.display().to_string());
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![
            intensity_line(&a.image, &scale, done.sigma, a.opts.sigma),
            format!(
                "image {} ({h}x{w}) shared as {} and {}; job id {}; upload {} bytes in total",
                a.image,
                outs[0],
                outs[1],
                id_hex(&done.job_id),
                done.upload_bytes
            ),
        ]
        .into_iter()
        .chain(notes)
        .collect(),
        json: serde_json::json!({
            "ok": true, "command": "share-image", "job_id": id_hex(&done.job_id), "height": h, "width": w,
            "outputs": outs, "upload_bytes": done.upload_bytes, "seconds": secs,
            "window": scale.window, "units": scale.units, "clipped": scale.clipped,
            "sigma": done.sigma, "sigma_in_units": scale.in_units(done.sigma),
            "receiver_facts": facts, "model_owner_checked": a.opts.model.is_some().then(|| sharer.model_note().is_none()),
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
    /// Noise level (required unless --noise): a number on the 0..255 scale of the image's
    /// full container range, `20HU` in Hounsfield units (CT), or `20SV` in stored values.
    /// The noise is added to the stored values, so nothing is clipped but the container.
    #[arg(long, value_parser = super::inputs::parse_sigma, required_unless_present = "noise")]
    pub sigma: Option<Sigma>,
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
    let noise = noise_words(a);
    let folder = super::folders::Folder::open(
        std::path::Path::new(&a.image),
        &a.series,
        &format!("{noise} added"),
        &format!(
            "{noise} added by ppdenoise add-noise (seed {} plus the slice's index)",
            a.seed
        ),
        &WindowChoice::Full,
    )?;
    let written = folder.run(
        &a.out,
        |_| 8,
        |i, img, scale| {
            let seed = a.seed.wrapping_add(i as u64);
            Ok(match pg {
                Some(pg) => pg.add_to(img, seed),
                None => awgn(img, noise_level(a, scale)?, seed),
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

/// `noise sigma 20HU` or `noise poisson-gaussian:A,B`: what add-noise adds, in words.
fn noise_words(a: &AddNoiseArgs) -> String {
    match (&a.noise, a.sigma) {
        (Some(n), _) => format!("noise {n}"),
        (None, Some(s)) => format!("noise sigma {s}"),
        (None, None) => unreachable!("clap requires --sigma or --noise"),
    }
}

/// add-noise's --sigma on the 0..255 scale of an image's full range.
fn noise_level(a: &AddNoiseArgs, scale: &ValueScale) -> Result<f64> {
    match a.sigma {
        Some(Sigma::Auto) => bail!("--sigma auto: add-noise adds a known level; give it"),
        Some(s) => scale
            .level_of(s, &ndarray::Array2::zeros((0, 0)))
            .map_err(anyhow::Error::msg),
        None => bail!(
            "--sigma: required (or --noise); {}",
            crate::image::window::SIGMA_FORMS
        ),
    }
}

/// `add-noise` on a multi-frame image: frame `k` gets the noise of seed `seed + k`, and the
/// output is one DICOM of as many frames.
fn add_noise_frames(
    a: &AddNoiseArgs,
    frames: &[GrayImage],
    pg: Option<PoissonGaussian>,
    enc: &crate::image::Encoding,
    level: f64,
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
                None => awgn(img, level, seed),
            };
            let q = enc.quantize(&noisy.pixels);
            psnrs.push(crate::metrics::psnr(&img.pixels, &q, 255.0));
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
    if a.sigma == Some(Sigma::Auto) {
        bail!("--sigma auto: add-noise adds a known level; give it");
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
                a.sigma.expect("clap requires --sigma or --noise"),
                a.seed
            ),
        },
        (&a.series, &format!("{} added", noise_words(&a))),
        &WindowChoice::Full,
    )?;
    let loaded = super::inputs::load_frames_windowed(&a.image, &WindowChoice::Full, true)?;
    let frames = loaded.frames;
    enc.check_frames(frames.len(), &a.out)?;
    let level = match pg {
        Some(_) => 0.0,
        None => noise_level(&a, &loaded.scale)?,
    };
    if frames.len() > 1 {
        return add_noise_frames(&a, &frames, pg, &enc, level);
    }
    let img = frames.into_iter().next().expect("one frame");
    let noisy = match pg {
        Some(pg) => pg.add_to(&img, a.seed),
        None => awgn(&img, level, a.seed),
    };
    if let Some(m) = &a.map_out {
        let map = match pg {
            Some(pg) => pg.map_of(&img.pixels),
            None => img.pixels.mapv(|_| level),
        };
        crate::fileio::atomic::write_with(m, |f| {
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
    let psnr = crate::metrics::psnr(&img.pixels, &q.pixels, 255.0);
    let what = match &a.noise {
        Some(n) => n.clone(),
        None => format!(
            "sigma {} = {level:.4} on the 0..255 scale",
            a.sigma.expect("clap requires --sigma or --noise")
        ),
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
