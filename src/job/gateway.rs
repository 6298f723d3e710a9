//! The gateway's job-level step: an image checked against the model it is shared for,
//! encoded, split into the two servers' shares and written as a new job (`share-image`, and
//! every slice of `share-study`).

use crate::ring::Party;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ndarray::Array2;

use super::{with_ext, Outputs};
use crate::fileio::atomic::Staged;
use crate::formats::bodies::{is_graph, Data, ImageShare, JobParams, GRAPH, NETWORK, NOISE_MAP};
use crate::formats::container::{self, fresh_id, Header, Kind};
use crate::formats::signing::{signer_of, Role, Trust};
use crate::image::window::{DeclaredWindow, Sigma, Units, ValueScale, WindowChoice};
use crate::image::GrayImage;
use crate::model::frame::Frame;
use crate::model::noise_map::{check_max_sigma, load_maps, NoiseLevel, PoissonGaussian};
use crate::model::preprocess::Preprocess;
use crate::ring::oracle::encode_image;
use crate::ring::share::{fresh_seed, share_with_seed, Stream};
use crate::ring::sweep::{range_for, span, Ranges};

/// How images are encoded and shared, the gateway's arguments parsed (the keys apart: they
/// are given to [`Sharer::new`] loaded).
pub struct ShareOptions {
    /// The images' noise level; None with a per-pixel map.
    pub sigma: Option<Sigma>,
    /// The value window asked for (the model's declared one may stand instead).
    pub window: WindowChoice,
    /// Noise level the model was trained for (sigma*), without a model header.
    pub model_sigma: f64,
    /// No sigma*/sigma scaling.
    pub no_scale_noise: bool,
    /// Patch stride.
    pub stride: usize,
    /// Fixed-point fractional bits, without a model header.
    pub scale: u32,
    /// The model's public header.
    pub model: Option<PathBuf>,
    /// Map with `window` although the model declares another.
    pub override_model_window: bool,
    /// A per-pixel noise map or signal-dependent noise.
    pub noise: Noise,
    /// Take a stated noise level far above the image's own estimate
    /// ([`crate::metrics::suspect::implausible_level`]).
    pub force: bool,
}

impl ShareOptions {
    /// The numbers checked, before any key or file is read.
    pub fn check(&self) -> Result<()> {
        if self.stride == 0 {
            bail!("--stride must be at least 1");
        }
        if !(self.model_sigma.is_finite() && self.model_sigma > 0.0) {
            bail!("--model-sigma {}: must be positive", self.model_sigma);
        }
        Ok(())
    }
}

/// Per-pixel or per-colour noise levels, for a model that takes a noise map: a map file
/// (`noise_map`), signal-dependent noise computed from the noisy image (`noise`), or a sigma
/// per colour plane (`per_colour`, 0..255 scale).
#[derive(Clone, Default)]
pub struct Noise {
    pub noise_map: Option<PathBuf>,
    pub noise: Option<String>,
    pub per_colour: Option<Vec<f64>>,
}

impl Noise {
    /// True when a per-pixel map is asked for.
    pub fn per_pixel(&self) -> bool {
        self.noise_map.is_some() || self.noise.is_some()
    }

    /// Refuses a map or levels per colour for a model of no map channels (`maps` 0),
    /// rather than ignoring them.
    pub fn check_maps(&self, maps: usize) -> Result<()> {
        if (self.per_pixel() || self.per_colour.is_some()) && maps == 0 {
            bail!(
                "--noise-map, --noise and --sigma-per-colour apply to models with a noise-map \
                 channel (FFDNet); this model has none"
            );
        }
        Ok(())
    }

    /// The noise level of `noisy` (`colours` planes of h x w stacked, (colours*h) x w) for a
    /// model taking `maps` noise-map channels: a per-pixel map or a sigma per colour when
    /// asked for, else `sigma`. Asked of a model without a map, refused rather than ignored;
    /// a level per plane for a model with one map channel for its planes, refused by name.
    pub fn level(
        &self,
        sigma: f64,
        noisy: &Array2<f64>,
        (colours, maps): (usize, usize),
    ) -> Result<NoiseLevel> {
        self.check_maps(maps)?;
        let (rows, w) = noisy.dim();
        let h = rows / colours;
        let per_plane = colours > 1 && maps == colours;
        let level = if let Some(levels) = &self.per_colour {
            if colours == 1 {
                bail!("--sigma-per-colour: a gray image takes one level: give --sigma");
            }
            for &s in levels {
                check_max_sigma(s).context("--sigma-per-colour")?;
            }
            NoiseLevel::PerColour(levels.clone())
        } else if let Some(p) = &self.noise_map {
            NoiseLevel::PerPixel(load_maps(p, (colours, h, w), per_plane)?)
        } else if let Some(spec) = &self.noise {
            if colours > 1 && !per_plane {
                bail!(
                    "--noise: signal-dependent noise gives each colour plane its own map, and \
                     this model takes one map for its planes: give --sigma or one --noise-map"
                );
            }
            // Each pixel's sigma from its own value: a colour image's planes get a map each.
            NoiseLevel::PerPixel(PoissonGaussian::parse(spec)?.map_of(noisy))
        } else {
            NoiseLevel::Uniform(sigma)
        };
        level
            .fits(colours, maps, h)
            .map_err(|e| anyhow::anyhow!("--sigma-per-colour: {e}"))?;
        Ok(level)
    }
}

/// What the gateway takes from a model's public header.
struct ModelFacts {
    scale: u32,
    sigma: f64,
    /// The frame of a graph's noise map (its block); the identity for MLPs and graphs without one.
    frame: Frame,
    /// A CNN graph's public form (its shapes say which image sizes it runs on); none for an
    /// MLP, which runs on patches.
    graph: Option<crate::model::graph::Graph>,
    /// Colour planes of the images it takes (1 gray, 3 RGB): what its plan's shapes say.
    colours: usize,
    /// Noise-map channels it takes (0, 1, or one per colour): what its plan's shapes say.
    maps: usize,
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
    let facts = crate::formats::facts::ModelFacts::read(path, &h)?;
    let sigma = facts
        .sigma
        .with_context(|| format!("{}: header lacks the model's sigma", path.display()))?;
    let graph = if is_graph(&h) {
        Some(crate::formats::checks::graph_plan_from_header(path, &h)?.0)
    } else {
        None
    };
    let (frame, colours, maps) = if let Some(g) = &graph {
        // A graph's map is made as a CNN frame's at the same block: sigma/255 per block of
        // the image, a partial block at an odd side included (`MapInput::dims`).
        match g.noise_map() {
            Some(m) => {
                let frame = Frame {
                    unshuffle: m.block,
                    noise_map: true,
                };
                (frame, g.colours, m.channels)
            }
            None => (Frame::PLAIN, g.colours, 0),
        }
    } else {
        (Frame::PLAIN, 1, 0)
    };
    Ok(ModelFacts {
        scale: h.scale,
        sigma,
        frame,
        graph,
        colours,
        maps,
        sigma_range: facts.sigma_range,
        window: facts.window,
        name: facts.name.unwrap_or_else(|| "the model".into()),
        model_id: h.model_id,
    })
}

pub fn job_header(kind: Kind, party: Party, job_id: [u8; 16], job: &JobParams) -> Header {
    let mut h = Header::new(kind, party, job.scale);
    h.job_id = Some(job_id);
    h.shapes
        .push(("image".into(), vec![job.height as u64, job.width as u64]));
    h.info.push((
        crate::formats::facts::JOB.into(),
        serde_json::to_string(job).expect("job params serialise"),
    ));
    h
}

/// The gateway with its options checked: shares one image after another as new jobs.
pub struct Sharer {
    opts: ShareOptions,
    facts: ModelFacts,
    /// --window resolved against the model's declared window.
    window: WindowChoice,
    to: Outputs,
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

impl Sharer {
    /// The options it was made with.
    pub fn options(&self) -> &ShareOptions {
        &self.opts
    }

    /// The gateway's signing key, when it signs (`--sign-key`).
    pub fn signer(&self) -> Option<&crate::formats::signing::Signer> {
        self.to.by.as_ref()
    }

    /// The note that --model's maker was not checked (no owner key pinned), if so.
    pub fn model_note(&self) -> Option<&str> {
        self.model_note.as_deref()
    }

    /// The gateway of `opts`, writing as `to` says, believing the model.pub signed by the
    /// owner key `owner` pins (loaded before it is read; any maker's, with none).
    pub fn new(opts: ShareOptions, to: Outputs, owner: Option<Trust>) -> Result<Sharer> {
        opts.check()?;
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
                frame: Frame::PLAIN,
                graph: None,
                colours: 1,
                maps: 0,
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
            &opts.window,
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
        if let Some(Sigma::Scale(v)) = sharer.opts.sigma {
            sharer.check_level(v).context("--sigma")?;
        }
        Ok(sharer)
    }

    /// Whether the model takes noise level `level` (0..255 scale), for a model with a noise
    /// map; checked before any image is read.
    fn check_level(&self, level: f64) -> Result<()> {
        if self.facts.frame.noise_map {
            check_max_sigma(level)?;
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
        if sigma != Sigma::Auto && scale.units != Units::Grey && !self.opts.force {
            let estimate = crate::metrics::suspect::noise_in(&img.pixels);
            if let Some(why) = crate::metrics::suspect::implausible_level(level, estimate) {
                bail!(
                    "{name}: --sigma {sigma}: {why} ({:.1} against {:.1} {}); give the level the \
                     image holds, or --sigma auto, or --force to take it as stated",
                    scale.in_units(level),
                    scale.in_units(estimate.unwrap_or(0.0)),
                    scale.units.name()
                );
            }
        }
        self.check_level(level)
            .and_then(|()| self.check_range(level, span(&img.pixels)))
            .with_context(|| format!("{name}: --sigma {sigma}"))?;
        Ok(level)
    }

    /// The window images are mapped with: --window, or the model's declared one.
    pub fn window(&self) -> &WindowChoice {
        &self.window
    }

    /// Refuses an image of `colours` planes for a model of another count, by name.
    fn check_colours(&self, colours: usize, name: &str) -> Result<()> {
        let facts = &self.facts;
        match (colours, facts.colours) {
            (a, b) if a == b => Ok(()),
            (_, 1) if self.opts.model.is_none() => bail!(
                "{name}: a colour image; colour images are shared for a colour CNN (--model \
                 model.pub of a colour FFDNet), or give --as-gray to share its luma (BT.601)"
            ),
            (_, 1) => bail!(
                "{name}: a colour image; the model ({}) is gray: give --as-gray to share its \
                 luma (BT.601), or a colour model",
                facts.name
            ),
            _ => bail!(
                "{name}: a gray image; the model ({}) is colour ({} planes): give an RGB image, \
                 or a gray model",
                facts.name,
                facts.colours
            ),
        }
    }

    /// The noise level of an image of `colours` planes stacked in `pixels`: --sigma, a
    /// sigma per colour, or a per-pixel map, as the model's map channels take them.
    fn noise_of(&self, sigma: f64, pixels: &Array2<f64>, colours: usize) -> Result<NoiseLevel> {
        let facts = &self.facts;
        self.opts
            .noise
            .level(sigma, pixels, (colours, facts.maps))
            .with_context(|| format!("the model {}", facts.name))
    }

    /// The job `img` (named `name`, `colours` planes stacked) makes, its noise level and
    /// encoding: every check of an image, drawing no randomness.
    fn job(
        &self,
        img: &GrayImage,
        colours: usize,
        scale: &ValueScale,
        name: &str,
    ) -> Result<(JobParams, NoiseLevel, Preprocess, f64)> {
        let (a, facts) = (&self.opts, &self.facts);
        self.check_colours(colours, name)?;
        let (rows, w) = img.pixels.dim();
        let h = rows / colours;
        let sigma = self.level(img, scale, name)?;
        // A noise-map model takes the level in its shared map: nothing to keep private.
        let derived = a.sigma.is_some_and(|s| scale.private_level(s));
        let private = derived && !facts.frame.noise_map;
        let noise = self
            .noise_of(sigma, &img.pixels, colours)
            .with_context(|| name.to_string())?;
        // With a per-pixel map the job records no noise level of the image's: --sigma might be
        // an estimate made from its pixels. The model's nominal sigma stands in (public).
        let job_sigma = match noise {
            NoiseLevel::PerPixel(_) | NoiseLevel::PerColour(_) => facts.sigma,
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
            stride: if facts.graph.is_some() { 1 } else { a.stride },
            scale: facts.scale,
            // A pixel-derived scaling stays with the gateway and the receiver.
            pre: if private { Preprocess::identity() } else { pre },
            sigma: job_sigma,
            model_sigma: facts.sigma,
            private_pre: private,
            colours,
        };
        job.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if let Some(g) = &facts.graph {
            g.padded_size(h, w)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        Ok((job, noise, pre, sigma))
    }

    /// Checks that `img` can be shared, drawing no randomness.
    pub fn check(&self, img: &GrayImage, scale: &ValueScale, name: &str) -> Result<()> {
        self.check_planes(img, 1, scale, name)
    }

    /// [`Self::check`] of an image of `colours` planes stacked.
    pub fn check_planes(
        &self,
        img: &GrayImage,
        colours: usize,
        scale: &ValueScale,
        name: &str,
    ) -> Result<()> {
        self.job(img, colours, scale, name).map(|_| ())
    }

    /// Shares `img` (on `scale`) as a new job: writes `<out>.p0`, `<out>.p1` and `<out>.pub`.
    pub fn share(
        &self,
        img: &GrayImage,
        scale: &ValueScale,
        name: &str,
        out: &std::path::Path,
    ) -> Result<Shared> {
        self.share_planes(img, 1, scale, name, out)
    }

    /// [`Sharer::share`] of an image of `colours` planes, stacked in `img` ((colours h) x w,
    /// R over G over B): the shares hold the planes one after another, then the map.
    pub fn share_planes(
        &self,
        img: &GrayImage,
        colours: usize,
        scale: &ValueScale,
        name: &str,
        out: &std::path::Path,
    ) -> Result<Shared> {
        self.share_planes_with(img, colours, scale, name, out, |_, _| Ok(()))
    }

    /// [`Self::share_planes`], with `extra` staging files of the new job (given its id) in
    /// the same set: the receiver's files appear with the shares or not at all.
    pub fn share_planes_with(
        &self,
        img: &GrayImage,
        colours: usize,
        scale: &ValueScale,
        name: &str,
        out: &std::path::Path,
        extra: impl FnOnce(&mut Staged, &[u8; 16]) -> Result<()>,
    ) -> Result<Shared> {
        let facts = &self.facts;
        let (job, noise, pre, sigma) = self.job(img, colours, scale, name)?;
        let (h, w) = (job.height, job.width);
        let map = if facts.frame.noise_map {
            noise.stack_map(&facts.frame, facts.maps, h, w)
        } else {
            Vec::new()
        };
        // The map's values follow the image's in the one shared vector: secret either way.
        let enc = if facts.graph.is_some() {
            crate::ring::cnn::encode_image(&img.pixels, &map, &pre, facts.scale)
        } else {
            encode_image(&img.pixels, &pre, facts.scale)
        };
        let job_header = |kind: Kind, party: Party, id: [u8; 16], job: &JobParams| {
            let mut h = job_header(kind, party, id, job);
            // The job runs with this model only (the dealer and the servers check).
            h.model_id = facts.model_id;
            if facts.graph.is_some() {
                h.info.push((NETWORK.into(), GRAPH.into()));
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
        for (party, data) in [
            (Party::S0, Data::Explicit(explicit)),
            (Party::S1, Data::Seed(seed)),
        ] {
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
        let path = super::public_file(out);
        container::stage(
            &mut set,
            &path,
            &job_header(Kind::PublicJob, Party::S0, job_id, &job),
            &(),
            self.to.public(),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        outputs.push(path);
        extra(&mut set, &job_id)?;
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
