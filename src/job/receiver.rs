//! The receiver's job-level step: a pair (or every tile's pairs) of output shares checked
//! and added into the denoised image, with the facts of the run they verify; and the look
//! at a result before it is written. `reconstruct` (src/cli/receiver.rs) and a study's
//! derived series (src/study/series.rs) call it.

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::formats::bodies::{is_whole_image, valid_model_name, JobParams, OutputShare};
use crate::formats::container::{id_hex, Header, Id, Kind, Opened};
use crate::formats::facts::{OutputFacts, PATCHES, ROWS};
use crate::formats::signing::Trust;
use crate::image::{DicomTemplate, GrayImage};
use crate::model::geometry::Geometry;
use crate::model::preprocess::Preprocess;
use crate::ring::oracle::decode_canvas;
use crate::ring::share::add;
use crate::ring::tiles::{check_cover, Tile};

/// What a DICOM output of a secure run says was done to it (Derivation Description).
pub const SECURE_DERIVATION: &str =
    "Denoised by ppdenoise: a neural network run by two non-colluding servers on secret shares";

/// The scaling to decode `job` with: its own, or for a job whose scaling is private, the one
/// the receiver was given.
fn job_pre(
    job: &crate::formats::bodies::JobParams,
    given: Option<Preprocess>,
    share: &Path,
) -> Result<Preprocess> {
    match (job.private_pre, given) {
        (_, Some(p)) if p.noise_scale.is_finite() && p.noise_scale > 0.0 => Ok(p),
        (_, Some(p)) => bail!("noise scaling {}: must be positive", p.noise_scale),
        (false, None) => Ok(job.pre),
        (true, None) => bail!(
            "{}: its job's noise level was derived from the image's pixels, so the gateway \
             kept its scaling from the servers: give --job-facts <out>.rx.json (share-image \
             wrote it beside the shares)",
            share.display()
        ),
    }
}

/// What the receiver knows of a run once its pair of output shares was read and checked:
/// both verified headers and the job, as they were read (never read again, so a file
/// swapped after the check cannot change the description or the sigma the result is
/// judged by).
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub h0: Header,
    pub h1: Header,
    /// What each header says of the run, read once.
    pub f0: OutputFacts,
    pub f1: OutputFacts,
    pub job: JobParams,
}

impl RunFacts {
    /// The noise level the run's job records (0..255 scale).
    pub fn sigma(&self) -> f64 {
        self.job.sigma
    }
}

/// The receiver's look at a result written like `template` (the noisy image it holds): an
/// error saying why it looks ruined and what to do, unless `accept` (then a warning line).
pub fn check_result(
    img: &GrayImage,
    (template, frame): (&DicomTemplate, usize),
    sigma: f64,
    accept: bool,
    what: &str,
) -> Result<Option<String>> {
    let Some(noisy) = template.windowed_frames() else {
        return Ok(None);
    };
    let Some(noisy) = noisy.get(frame).filter(|n| n.dim() == img.pixels.dim()) else {
        return Ok(None);
    };
    let look = crate::metrics::suspect::Look::of(&img.pixels, noisy, sigma);
    let Some(why) = look.ruined() else {
        return Ok(None);
    };
    let msg = format!(
        "{what}: the result looks ruined: {why}. Likely cause: a noise level (--sigma) or \
         window (--window) at share-image or share-study that does not fit the image or the \
         model"
    );
    if accept {
        Ok(Some(format!(
            "warning: {msg}; written as --accept-suspect asks"
        )))
    } else {
        bail!("{msg}; nothing written (--accept-suspect writes it anyway)")
    }
}

/// What a run did, for a derived DICOM series' description and its Derivation Description:
/// `denoised, ffdnet-clip, sigma 25`. The sigma is the job's (checked, from the output
/// share's body); the model's name is what both servers copied into their output shares'
/// headers, taken only when the two agree and it is a valid name (a server could write
/// anything there), else the model's id.
pub fn run_description(
    run: &RunFacts,
    template: Option<&DicomTemplate>,
    level: Option<f64>,
) -> (String, String) {
    let name = match (&run.f0.name, &run.h0.model_id) {
        (Some(n), _) if run.f1.name.as_ref() == Some(n) && valid_model_name(n) => n.to_string(),
        (_, Some(id)) => format!("model {}", &id_hex(id)[..8]),
        (_, None) => "model unknown".into(),
    };
    // In the image's units where the receiver knows its window, else the model's scale.
    // A private job's level is the receiver's (`level`), not the stand-in the job holds.
    let level = level.unwrap_or(run.job.sigma);
    let sigma = template
        .and_then(|t| t.sigma_words(level))
        .unwrap_or_else(|| ((level * 1000.0).round() / 1000.0).to_string());
    let facts = format!("{name}, sigma {sigma}");
    // The model's id (what its owner's share-model printed) names it beyond doubt.
    let id = run
        .h0
        .model_id
        .as_ref()
        .map(|id| format!(", model id {}", id_hex(id)))
        .unwrap_or_default();
    (
        format!("denoised, {facts}"),
        format!("{SECURE_DERIVATION} ({name}{id}, sigma {sigma})"),
    )
}

/// What the receiver expects of every pair of output shares: signed by the servers' pinned
/// keys (`trust`), and of `job` when it names one.
pub struct Expect<'a> {
    pub trust: &'a Trust,
    pub job: Option<Id>,
}

impl Expect<'static> {
    /// Any signer, any job: for shares a receiver step already checked, and the fuzzer.
    pub fn unchecked() -> Expect<'static> {
        static ANY: Trust = Trust::InsecureUnsigned;
        Expect {
            trust: &ANY,
            job: None,
        }
    }
}

/// Adds the two shares and decodes the image. The shares must be the two outputs of one
/// run: same job, model and triplet id (the run's id), one from each server. Given in the
/// other order (S1's as `share0`), they are swapped; anything else is refused, since adding
/// shares of different runs gives a silently wrong image.
///
/// `pre`: the scaling the gateway gave the receiver privately, for a job whose public one is
/// a stand-in ([`JobParams::private_pre`](crate::formats::bodies::JobParams)); such a job
/// is refused without it.
pub fn combine(
    share0: &Path,
    share1: &Path,
    pre: Option<Preprocess>,
    expect: &Expect,
) -> Result<(GrayImage, OutputShare)> {
    combine_run(share0, share1, pre, expect).map(|(img, o0, _)| (img, o0))
}

/// [`combine`], with the run's facts from the headers it verified.
pub fn combine_run(
    share0: &Path,
    share1: &Path,
    pre: Option<Preprocess>,
    expect: &Expect,
) -> Result<(GrayImage, OutputShare, RunFacts)> {
    combine_opened(Opened::open(share0)?, Opened::open(share1)?, pre, expect)
}

/// [`combine_run`] of two shares already opened (each file opened once).
pub fn combine_opened(
    share0: Opened,
    share1: Opened,
    pre: Option<Preprocess>,
    expect: &Expect,
) -> Result<(GrayImage, OutputShare, RunFacts)> {
    let (run, o0, sums, p0) = add_pair(share0, share1, expect)?;
    let p0 = p0.as_path();
    let pre = job_pre(&o0.job, pre, p0)?;
    if let Some(t) = &run.f0.tile {
        bail!(
            "{}: is the output of tile {t}; give every tile's shares (--share0 and --share1 \
             take several files)",
            p0.display()
        );
    }
    // The geometry must be the one the job implies (it sizes everything the receiver does):
    // a colour CNN (or CNN graph) job's output is its planes stacked, (colours h) x w; an
    // MLP runs gray.
    let g = o0.geometry;
    if o0.job.colours != 1 && !is_whole_image(&run.h0) {
        bail!(
            "{}: an MLP's output of a colour job ({} planes): colour jobs run on CNNs",
            p0.display(),
            o0.job.colours
        );
    }
    let rows = o0.job.height * o0.job.colours;
    if !sane_output_patch(&g, &o0.job)
        || g != Geometry::new(rows, o0.job.width, g.patch, o0.job.stride)
    {
        bail!(
            "{}: its geometry does not match its job parameters",
            p0.display()
        );
    }
    let img = if is_whole_image(&run.h0) {
        // A CNN's (or a CNN graph's) output is the image itself (1x1 geometry), in its own normalisation.
        if g.patch.output != 1 || g.stride != 1 {
            bail!(
                "{}: a CNN output share must have a 1x1 geometry",
                p0.display()
            );
        }
        crate::ring::cnn::decode_output(&sums, g.height, g.width, &pre, o0.scale)
    } else {
        decode_canvas(&sums, &g, &pre, o0.scale)
    };
    Ok((
        GrayImage {
            pixels: img,
            bit_depth: o0.job.bit_depth,
        },
        o0,
        run,
    ))
}

/// Checks that two output shares are the two outputs of one run (one from each server, each
/// signed by its server's pinned key, same job, the expected one, same model and run id,
/// same shape) and adds them: both headers, S0's share, and the sums.
/// Also returns S0's share's path.
fn add_pair(
    share0: Opened,
    share1: Opened,
    expect: &Expect,
) -> Result<(RunFacts, OutputShare, Vec<u64>, PathBuf)> {
    let (mut s0, mut s1) = (share0, share1);
    s0.expect(Kind::OutputShare, None)?;
    s1.expect(Kind::OutputShare, None)?;
    let (ha, hb) = (s0.header(), s1.header());
    if ha.party == hb.party {
        bail!(
            "{} and {} are both S{}'s output share; give one from each server",
            s0.path().display(),
            s1.path().display(),
            ha.party
        );
    }
    if ha.party == 1 {
        std::mem::swap(&mut s0, &mut s1);
    }
    let (p0, p1) = (s0.path().to_path_buf(), s1.path().to_path_buf());
    let (p0, p1) = (p0.as_path(), p1.as_path());
    // Before the bodies are read, on the headers their signatures are verified under: each
    // share made by its server, not by whoever can write where shares are kept (the
    // receiver's recipient is public, so a seal proves nothing).
    expect.trust.check_output(p0, s0.header())?;
    expect.trust.check_output(p1, s1.header())?;
    let (h0, o0): (Header, OutputShare) = s0.read(Kind::OutputShare, Some(Party::S0))?;
    let (h1, o1): (Header, OutputShare) = s1.read(Kind::OutputShare, Some(Party::S1))?;
    let hex = |i: &Option<[u8; 16]>| i.as_ref().map(id_hex).unwrap_or_else(|| "none".into());
    if let Some(want) = expect.job.filter(|j| h0.job_id != Some(*j)) {
        bail!(
            "{}: an output of job {}, not of the job the receiver expects ({})",
            p0.display(),
            hex(&h0.job_id),
            id_hex(&want)
        );
    }
    if h0.job_id != h1.job_id || h0.job_id.is_none() {
        bail!(
            "{} (job {}) and {} (job {}) are shares of different jobs",
            p0.display(),
            hex(&h0.job_id),
            p1.display(),
            hex(&h1.job_id)
        );
    }
    for (h, p) in [(&h0, p0), (&h1, p1)] {
        if h.triplet_id.is_none() {
            bail!(
                "{}: the output share does not name its run (written before output shares \
                 carried their triplet id); it cannot be checked against its partner: rerun the job",
                p.display()
            );
        }
    }
    if h0.triplet_id != h1.triplet_id || h0.model_id != h1.model_id {
        bail!(
            "{} and {} are outputs of different runs of job {} (run {} and run {}): adding them \
             would give a wrong image; use the two output shares of one run",
            p0.display(),
            p1.display(),
            hex(&h0.job_id),
            hex(&h0.triplet_id),
            hex(&h1.triplet_id)
        );
    }
    if o0.geometry != o1.geometry || o0.canvas.len() != o1.canvas.len() || o0.scale != o1.scale {
        bail!("{}: shape differs from {}", p1.display(), p0.display());
    }
    let (f0, f1) = (OutputFacts::of(&h0), OutputFacts::of(&h1));
    if (&f0.tile, &f0.rows, &f0.patches) != (&f1.tile, &f1.rows, &f1.patches) {
        bail!("{}: a different tile than {}", p1.display(), p0.display());
    }
    o0.job
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", p0.display()))?;
    let g = o0.geometry;
    // Both factors come from the file: a product that overflows is no canvas.
    let want = g.canvas_h.checked_mul(g.canvas_w);
    if o1.job != o0.job || Some(o0.canvas.len()) != want {
        bail!(
            "{}: canvas has {} values, expected {}",
            p0.display(),
            o0.canvas.len(),
            want.map_or("an impossible count".into(), |n| n.to_string())
        );
    }
    if f0.network != f1.network {
        bail!(
            "{} and {} come from different networks",
            p0.display(),
            p1.display()
        );
    }
    let sums = add(&o0.canvas, &o1.canvas);
    let run = RunFacts {
        h0,
        h1,
        f0,
        f1,
        job: o0.job.clone(),
    };
    Ok((run, o0, sums, p0.to_path_buf()))
}

/// Combines the output shares of a job split into tiles (CNN bands of rows, MLP runs of
/// patches): every tile's
/// pair checked as in [`combine`], all of one job and one model, every tile exactly once,
/// the bands covering the image's rows in order. A missing, repeated or foreign tile is
/// named.
pub fn combine_tiles(
    shares: &[PathBuf],
    pre: Option<Preprocess>,
    expect: &Expect,
) -> Result<(GrayImage, RunFacts)> {
    let opened = shares
        .iter()
        .map(|p| Opened::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    combine_tiles_opened(opened, pre, expect)
}

/// [`combine_tiles`] of shares already opened (each file opened once).
pub fn combine_tiles_opened(
    shares: Vec<Opened>,
    pre: Option<Preprocess>,
    expect: &Expect,
) -> Result<(GrayImage, RunFacts)> {
    struct Part {
        path: PathBuf,
        party: Party,
        tile: Tile,
        job: Option<Id>,
        model: Option<Id>,
    }
    let mut parts = Vec::new();
    for o in &shares {
        let path = o.path();
        o.expect(Kind::OutputShare, None)?;
        let h = o.header();
        let Ok(party) = Party::try_from(h.party) else {
            bail!(
                "{}: party {} (an output share is S0's or S1's)",
                path.display(),
                h.party
            );
        };
        let tile = OutputFacts::of(h)
            .parsed_tile()
            .with_context(|| {
                format!(
                    "{}: the output of a job in one piece, given with tiles; give either one \
                     pair or every tile's shares",
                    path.display()
                )
            })?
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        parts.push(Part {
            path: path.to_path_buf(),
            party,
            tile,
            job: h.job_id,
            model: h.model_id,
        });
    }
    let first = &parts[0];
    let hex = |i: &Option<Id>| i.as_ref().map(id_hex).unwrap_or_else(|| "none".into());
    for p in &parts {
        if p.job != first.job || p.job.is_none() || p.model != first.model {
            bail!(
                "{}: a tile of job {} (model {}), but {} is of job {} (model {}): every tile \
                 must be of one job",
                p.path.display(),
                hex(&p.job),
                hex(&p.model),
                first.path.display(),
                hex(&first.job),
                hex(&first.model)
            );
        }
        if p.tile.count != first.tile.count {
            bail!(
                "{}: tile {} but {} is tile {}: the job was split differently",
                p.path.display(),
                p.tile.label(),
                first.path.display(),
                first.tile.label()
            );
        }
    }
    let k = first.tile.count;
    // [tile][party]: each exactly once.
    let mut slots: Vec<[Option<usize>; 2]> = vec![[None, None]; k];
    for (n, p) in parts.iter().enumerate() {
        let slot = &mut slots[p.tile.index][p.party.index()];
        if let Some(other) = slot {
            bail!(
                "tile {} of {k}: S{}'s share given twice ({} and {})",
                p.tile.index,
                p.party,
                parts[*other].path.display(),
                p.path.display()
            );
        }
        *slot = Some(n);
    }
    let mut pairs = Vec::with_capacity(k);
    for (i, s) in slots.iter().enumerate() {
        match s {
            [Some(a), Some(b)] => pairs.push((*a, *b)),
            _ => {
                let who = if s[0].is_none() { 0 } else { 1 };
                bail!("tile {i} of {k}: no output share of S{who} given");
            }
        }
    }
    // CNN tiles hold bands of rows of the image; MLP tiles partial canvases of runs of the
    // patch grid, which add up.
    let mut ranges = Vec::with_capacity(k);
    let mut sums: Vec<u64> = Vec::new();
    // The first tile's family, job, scale and geometry (not its canvas): the others must agree.
    let mut first: Option<(bool, JobParams, u32, Geometry)> = None;
    // The first tile's verified headers describe the run (every tile is of one job and
    // model, checked above and below).
    let mut facts: Option<RunFacts> = None;
    let first_path = parts[0].path.clone();
    let mut pending: Vec<Option<Opened>> = shares.into_iter().map(Some).collect();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let (sa, sb) = (pending[a].take(), pending[b].take());
        let (sa, sb) = sa.zip(sb).expect("each share in one slot");
        let (run, o0, part, a) = add_pair(sa, sb, expect)?;
        let h0 = &run.h0;
        // The headers the tiles were sorted on are the verified ones (each file is opened
        // once): each is the tile of its slot and of the first tile's job and model.
        let tile = run.f0.parsed_tile();
        if !matches!(tile, Some(Ok(t)) if t.index == i && t.count == k) {
            bail!(
                "{}: is not tile {i} of {k}, as its header first read said",
                a.display()
            );
        }
        if let Some(f) = facts
            .as_ref()
            .filter(|f| (f.h0.job_id, f.h0.model_id) != (h0.job_id, h0.model_id))
        {
            bail!(
                "{}: not of the job and model of tile 0 ({}): every tile must be of one job",
                a.display(),
                f.h0.job_id.as_ref().map(id_hex).unwrap_or_default()
            );
        }
        let cnn = is_whole_image(h0);
        let range = run.f0.tile_range(cnn);
        // No server tiles a colour job: tiles of one would be put together as gray rows.
        if o0.job.colours != 1 {
            bail!(
                "{}: a tile of a colour job ({} planes); colour jobs run whole",
                a.display(),
                o0.job.colours
            );
        }
        let named = if cnn { ROWS } else { PATCHES };
        let range =
            range.with_context(|| format!("{}: the tile's {named} are not named", a.display()))?;
        if facts.is_none() {
            facts = Some(run);
        }
        let g = o0.geometry;
        let job = &o0.job;
        if cnn {
            let one = crate::model::mlp::PatchShape {
                input: 1,
                output: 1,
                window_milli: 0,
            };
            // The whole geometry, as `serve` makes it for the band: its canvas is what is
            // put in place.
            let fits = range.start < range.end && range.end <= job.height;
            if !fits
                || g != Geometry::new(range.len(), job.width, one, 1)
                || o0.canvas.len() != range.len() * job.width
            {
                bail!(
                    "{}: its geometry ({} x {}) does not match its rows {}..{} of a {} x {} image",
                    a.display(),
                    g.height,
                    g.width,
                    range.start,
                    range.end,
                    job.height,
                    job.width
                );
            }
            sums.extend(part);
        } else {
            // A partial canvas of the whole job's geometry.
            let fits = range.start < range.end && range.end <= g.num_patches();
            if !sane_output_patch(&g, job)
                || g != Geometry::new(job.height, job.width, g.patch, job.stride)
                || !fits
            {
                bail!(
                    "{}: its geometry or its patches {}..{} do not match its job",
                    a.display(),
                    range.start,
                    range.end
                );
            }
            if sums.is_empty() {
                sums = part;
            } else {
                sums.iter_mut()
                    .zip(&part)
                    .for_each(|(x, y)| *x = x.wrapping_add(*y));
            }
        }
        match &first {
            None => first = Some((cnn, o0.job.clone(), o0.scale, g)),
            Some((c, job, scale, geo)) => {
                if *c != cnn || *job != o0.job || *scale != o0.scale || geo.patch != g.patch {
                    bail!(
                        "{}: other job parameters than the first tile's",
                        a.display()
                    );
                }
            }
        }
        ranges.push(range);
    }
    let (cnn, job, scale, g) = first.context("no tile given")?;
    let img = if cnn {
        check_cover(&ranges, job.height).map_err(|e| anyhow::anyhow!("the tiles' rows: {e}"))?;
        if sums.len() != job.height * job.width {
            bail!(
                "the tiles hold {} values for a {} x {} image",
                sums.len(),
                job.height,
                job.width
            );
        }
        let pre = job_pre(&job, pre, &first_path)?;
        crate::ring::cnn::decode_output(&sums, job.height, job.width, &pre, scale)
    } else {
        let pre = job_pre(&job, pre, &first_path)?;
        check_cover(&ranges, g.num_patches())
            .map_err(|e| anyhow::anyhow!("the tiles' patches: {e}"))?;
        decode_canvas(&sums, &g, &pre, scale)
    };
    Ok((
        GrayImage {
            pixels: img,
            bit_depth: job.bit_depth,
        },
        facts.context("no tile given")?,
    ))
}

/// The output geometry's patch must be one a model can have, with the job's stride
/// (bounds the receiver's work: patches x output pixels).
fn sane_output_patch(g: &Geometry, job: &crate::formats::bodies::JobParams) -> bool {
    g.patch.output <= 512 && crate::formats::bodies::check_geometry(job, g.patch).is_ok()
}
