//! The receiver's command: `reconstruct` (parsed here; a pair or tiles combined by
//! [`crate::job::receiver`], a study by [`crate::study::series`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inputs::load_clean;
use super::Summary;
use crate::formats::container::{id_hex, Opened};
use crate::formats::inputs::{open_signed, Maker};
use crate::formats::receiver_facts::ReceiverFacts;
use crate::image::window::{Units, WindowChoice};
use crate::image::{DicomTemplate, Encoding, Format};
use crate::job::receiver::{
    check_result, combine_opened, combine_tiles_opened, run_description, Expect,
};
use crate::model::preprocess::Preprocess;
use crate::study::series::{ReceiverKeys, StudyOut};

/// Combine the two servers' output shares into the denoised image: PNG or TIFF (same bit
/// depth as the input unless --bit-depth is given), or DICOM like --like.
#[derive(Args)]
pub struct ReconstructArgs {
    /// S0's output share (S1's is accepted too: the pair is then put in order). For a job
    /// split into tiles: S0's shares of every tile (`--share0 out.t0.p0 out.t1.p0 ...`).
    #[arg(long, num_args = 1.., required_unless_present = "study")]
    pub share0: Vec<PathBuf>,
    /// S1's output share, of the same run; for tiles, S1's shares of every tile.
    #[arg(long, num_args = 1.., required_unless_present = "study")]
    pub share1: Vec<PathBuf>,
    /// Denoised image, by extension: .tif/.tiff TIFF, .dcm DICOM (needs --like), anything
    /// else PNG. With --study: the folder the derived study is written to.
    #[arg(long)]
    pub out: PathBuf,
    /// A study (the folder from `share-study`, with its study.sources.json): every slice is
    /// put together and written to --out under its input's name, in its input's format and
    /// bit depth; a DICOM series becomes one new derived series. Every slice must be
    /// finished (`study-status`); nothing is written otherwise.
    #[arg(long, conflicts_with_all = ["share0", "share1", "like", "clean"])]
    pub study: Option<PathBuf>,
    /// With --study: the receiver's sources file from `share-study` (default:
    /// <study>.sources.json).
    #[arg(long, value_name = "FILE", requires = "study")]
    pub sources: Option<PathBuf>,
    /// With --study: the study binding share-study wrote, signed by the gateway (default:
    /// <sources>.sig). Checked under the pinned gateway key (--gateway-key, or a `gateway`
    /// line in --trust): the slices, their order and their sources must be as it says.
    #[arg(long, value_name = "FILE", requires = "study")]
    pub binding: Option<PathBuf>,
    /// With --study: the id of the study the receiver expects (share-study printed it, and
    /// its --json summary's `study_id`). Required when signatures are checked: the binding
    /// proves a study is whole as the gateway shared it, this says which study it is (else
    /// another genuine study of the same gateway, folder, sources and binding, could be put
    /// in its place).
    #[arg(long, value_name = "ID", requires = "study")]
    pub study_id: Option<String>,
    /// With --study: once the derived series is written to --out, file it into this archive
    /// (dicomweb:URL, STOW-RS; or dimse:AET@HOST:PORT, C-STORE as --our-aet): it lands in its
    /// source study as a new series. A filing that fails part way is finished with
    /// `file-series --in OUT --to ARCHIVE` (the same instances: nothing is held twice).
    #[arg(
        long,
        value_name = "dicomweb:URL|dimse:AET@HOST:PORT",
        requires = "study"
    )]
    pub to: Option<String>,
    #[command(flatten)]
    pub archive: super::pacs::ArchiveArgs,
    /// The id of the job the receiver expects (share-image printed it, and its --json
    /// summary's `job_id`): the output shares must be of it. Required when signatures are
    /// checked: they prove the servers made the shares, not that the shares are of this job
    /// (another genuine job of the same gateway, with its shares, header and facts, could be
    /// put in its place).
    #[arg(long, value_name = "ID", conflicts_with = "study")]
    pub job_id: Option<String>,
    #[command(flatten)]
    pub dirs: super::study::PartyDirs,
    /// 8 or 16 (PNG and TIFF); default: like the input image.
    #[arg(long)]
    pub bit_depth: Option<u8>,
    /// The DICOM the noisy image came from: a .dcm output keeps its patient, study and series
    /// attributes and its bit depth, with a new SOP Instance UID, marked DERIVED.
    #[arg(long)]
    pub like: Option<PathBuf>,
    /// With --like: the value window the gateway shared the image on (`share-image
    /// --window`); the default is the one the gateway's default gives for the --like file
    /// (a CT's -1024:3071 HU, another DICOM's own range). Pixels of the --like file outside
    /// the window are written back unchanged.
    #[command(flatten)]
    pub window: super::inputs::WindowArgs,
    #[command(flatten)]
    pub series: super::inputs::SeriesArgs,
    /// The receiver's facts of the job (`<out>.rx.json` from share-image), needed when its
    /// noise level was derived from the image's pixels (`--sigma auto`, or an `auto` window):
    /// the servers were given stand-ins. The window in it is the one the image was shared on.
    #[arg(long, value_name = "FILE", conflicts_with = "study")]
    pub job_facts: Option<PathBuf>,
    /// The alpha of an RGBA image (`<out>.alpha` from share-image, the receiver's alone): the
    /// colour output is then RGBA with these samples untouched. It must be of this job and
    /// of the image's size, and signed by the pinned gateway key when keys are pinned.
    /// Without it a colour job is written as RGB.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["study", "like"])]
    pub alpha: Option<PathBuf>,
    /// Write a result that looks ruined (most pixels pinned at the window's limits, or far
    /// from the noisy input for its noise level) instead of refusing it.
    #[arg(long)]
    pub accept_suspect: bool,
    /// Clean reference image: print the PSNR/SSIM of the result.
    #[arg(long)]
    pub clean: Option<String>,
    // The receiver's identity, for output shares sealed to it (`serve --out-to`).
    #[command(flatten)]
    pub identity: super::keys::IdentityArgs,
    // Whose signatures the output shares must carry, and which job they must be of.
    #[command(flatten)]
    pub signers: super::keys::OutputTrustArgs,
}

pub fn reconstruct(a: ReconstructArgs) -> Result<Summary> {
    let t = Instant::now();
    if let Some(d) = a.bit_depth.filter(|d| *d != 8 && *d != 16) {
        bail!("--bit-depth {d}: must be 8 or 16");
    }
    if let Some(dir) = &a.study {
        return reconstruct_study(&a, dir);
    }
    // The output's form is checked before the shares are read.
    let dicom_out = Format::of_extension(&a.out) == Format::Dicom;
    match (&a.like, dicom_out) {
        (None, true) => bail!(
            "{}: a DICOM output needs --like <input.dcm>, the DICOM whose attributes and bit \
             depth it takes",
            a.out.display()
        ),
        (Some(l), false) => bail!(
            "--like {}: applies to a DICOM output only (name --out .dcm)",
            l.display()
        ),
        _ => {}
    }
    if dicom_out && a.bit_depth.is_some() {
        bail!("--bit-depth: a DICOM output is written at the bit depth of its --like file");
    }
    let series = a.series.derived()?;
    let template = a.like.as_ref().map(DicomTemplate::read).transpose()?;
    if let Some(t) = template.as_ref().filter(|t| t.frames() != 1) {
        bail!(
            "--like {}: {} frames; a job's output is one image (a multi-frame object is shared \
             frame by frame with share-study, and reconstruct --study writes it back whole)",
            t.path().display(),
            t.frames()
        );
    }
    a.identity.load()?;
    // Whose signatures to accept, before any share is read.
    let trust = a.signers.load()?;
    let shares: Vec<&Path> = a
        .share0
        .iter()
        .chain(&a.share1)
        .map(|p| p.as_path())
        .collect();
    // Each share opened once: refused when sealed under --insecure-unsigned, its kind and its
    // signer checked against the servers' pinned keys before its body is read.
    let opened = shares
        .iter()
        .map(|p| open_signed(p, &trust, Maker::Server))
        .collect::<Result<Vec<_>>>()?;
    let want = super::keys::expected_id(
        a.job_id.as_deref(),
        &trust,
        "--job-id",
        "job",
        "share-image",
    )?;
    let mut job = a.signers.job(&trust, want)?.or(want);
    // Tiles by the count of files or by the headers (a job of one tile is tiled too).
    let mut tiled = a.share0.len() + a.share1.len() > 2;
    tiled |= opened.iter().any(|o| {
        crate::formats::facts::OutputFacts::of(o.header())
            .tile
            .is_some()
    });
    // The receiver's private facts of a job whose noise level came from its pixels, as the
    // gateway signed them, before any field is used.
    let facts = a
        .job_facts
        .as_deref()
        .map(|p| ReceiverFacts::read_checked(p, &trust))
        .transpose()?;
    if let (Some(f), Some(p)) = (&facts, &a.job_facts) {
        let named = opened[0].header().job_id.map(|id| id_hex(&id));
        if named.as_deref() != Some(f.job_id.as_str()) {
            bail!(
                "--job-facts {}: are the facts of job {}, not of {}'s",
                p.display(),
                f.job_id,
                a.share0[0].display()
            );
        }
        // The gateway's facts name the job too: the shares are checked against it.
        let id = crate::formats::study::parse_id(&f.job_id)
            .with_context(|| format!("--job-facts {}: malformed job id", p.display()))?;
        if job.is_some_and(|j| j != id) {
            bail!(
                "--job-facts {}: are the facts of job {}, not of the job expected (--job-id, --job)",
                p.display(),
                f.job_id
            );
        }
        job = Some(id);
    }
    // The job the shares are of, which an alpha must be of too.
    let shares_job = opened[0].header().job_id;
    let expect = Expect { trust: &trust, job };
    let pre = facts.as_ref().map(|f| Preprocess {
        noise_scale: f.noise_scale,
    });
    let (img, run) = if tiled {
        combine_tiles_opened(opened, pre, &expect)?
    } else {
        let [s0, s1]: [Opened; 2] = opened.try_into().map_err(|_| anyhow::anyhow!("one pair"))?;
        let (img, _, run) = combine_opened(s0, s1, pre, &expect)?;
        (img, run)
    };
    if run.job.colours != 1 {
        // --like: a derived colour DICOM in the run's derived series.
        let template = template.map(|tpl| {
            let (what, derivation) = run_description(&run, Some(&tpl), None);
            tpl.with_derivation(derivation).in_series(&series, &what)
        });
        let alpha = (&trust, shares_job);
        return write_colour(a, img, run.job.colours, template, alpha, t);
    }
    if let Some(p) = &a.alpha {
        bail!(
            "--alpha {}: the job is a gray image; an alpha goes with a colour (RGBA) job",
            p.display()
        );
    }
    if template.as_ref().is_some_and(|t| t.is_colour()) {
        bail!(
            "--like {}: a colour DICOM, but the job is a gray image (shared for a gray model)",
            a.like
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        );
    }
    if let Some(t) = &template {
        if t.dim() != img.pixels.dim() {
            bail!(
                "--like {}: {} x {} pixels, but the denoised image is {} x {}",
                t.path().display(),
                t.dim().0,
                t.dim().1,
                img.pixels.nrows(),
                img.pixels.ncols()
            );
        }
    }
    let template = match template {
        Some(t) => {
            // The window the image was shared on, where the gateway said which.
            let window = match &facts {
                Some(f) if f.units != Units::Grey => WindowChoice::Range(f.window),
                _ => a.window.window.clone(),
            };
            let t = t.with_window(&window)?.0;
            let level = facts.as_ref().map(|f| f.sigma);
            let (what, derivation) = run_description(&run, Some(&t), level);
            Some(t.with_derivation(derivation).in_series(&series, &what))
        }
        None => None,
    };
    let warning = match &template {
        Some(t) => check_result(
            &img,
            (t, 0),
            match &facts {
                Some(f) => f.sigma,
                None => run.sigma(),
            },
            a.accept_suspect,
            &a.out.display().to_string(),
        )?,
        None => None,
    };
    let enc = Encoding::for_path(&a.out, a.bit_depth.unwrap_or(img.bit_depth), template)?;
    // The reference is checked before anything is written.
    let clean = a
        .clean
        .as_deref()
        .map(|c| load_clean(c, img.pixels.dim(), "the denoised image").map(|clean| (c, clean)))
        .transpose()?;
    enc.save(&img, &a.out)?;
    let secs = t.elapsed().as_secs_f64();
    let mut download = 0;
    for p in a.share0.iter().chain(&a.share1) {
        download += std::fs::metadata(p)
            .with_context(|| format!("{}: cannot read", p.display()))?
            .len();
    }
    let mut lines = vec![format!("wrote {} ({})", a.out.display(), enc.describe())];
    lines.extend(warning);
    let mut json = serde_json::json!({"ok": true, "command": "reconstruct", "out": a.out,
        "download_bytes": download, "seconds": secs});
    if let Some((c, clean)) = clean {
        let q = crate::image::quantize_u8(&img.pixels);
        let psnr = crate::metrics::psnr(&clean.pixels, &q, 255.0);
        let ssim = crate::metrics::ssim(&clean.pixels, &q);
        lines.push(format!("PSNR {psnr:.2} dB, SSIM {ssim:.4} against {c}"));
        json["psnr"] = psnr.into();
        json["ssim"] = ssim.into();
    }
    Ok(Summary { lines, json })
}

/// `reconstruct` of a colour job (issue 48): the planes (stacked in `img`) written as an RGB
/// PNG or TIFF at --bit-depth or the source's depth, or (`template`, from --like) as a
/// derived RGB DICOM of a colour DICOM; a gray template is refused before anything is
/// written.
fn write_colour(
    a: ReconstructArgs,
    img: crate::image::GrayImage,
    colours: usize,
    template: Option<DicomTemplate>,
    (trust, job): (
        &crate::formats::signing::Trust,
        Option<crate::formats::container::Id>,
    ),
    t: Instant,
) -> Result<Summary> {
    if let Some(tpl) = &template {
        if !tpl.is_colour() {
            bail!(
                "--like {}: a gray DICOM, but the job is a colour image ({colours} planes): \
                 give the colour DICOM that was shared",
                tpl.path().display()
            );
        }
        if tpl.dim() != (img.pixels.nrows() / colours, img.pixels.ncols()) {
            bail!(
                "--like {}: {} x {} pixels, but the denoised image is {} x {}",
                tpl.path().display(),
                tpl.dim().0,
                tpl.dim().1,
                img.pixels.nrows() / colours,
                img.pixels.ncols()
            );
        }
    }
    let bit_depth = a.bit_depth.unwrap_or(img.bit_depth);
    let dim = (img.pixels.nrows() / colours, img.pixels.ncols());
    // The receiver's alpha, checked (its job, size and signer) before anything is written;
    // at another output depth it is scaled as the colour is (x 257, or / 257 rounded).
    let alpha = match &a.alpha {
        Some(p) => {
            let job = job.with_context(|| {
                format!(
                    "--alpha {}: the output shares name no job to check it against",
                    p.display()
                )
            })?;
            let (al, depth) = crate::formats::receiver_alpha::read_checked(p, trust, &job, dim)?;
            Some(match (depth, bit_depth) {
                (8, 16) => al.mapv(|v| v * 257),
                (16, 8) => al.mapv(|v| (f64::from(v) / 257.0).round() as u16),
                _ => al,
            })
        }
        // Said in the summary (below): the job cannot say whether its image had an alpha.
        None => None,
    };
    let out = crate::image::ColourImage {
        planes: img.pixels,
        bit_depth,
        alpha,
        stored_max: None,
    };
    // The reference is checked before anything is written.
    let clean = match a.clean.as_deref() {
        Some(c) => match crate::image::load_picture(c)? {
            crate::image::Picture::Colour(cl) if cl.planes.dim() == out.planes.dim() => {
                Some((c, cl))
            }
            crate::image::Picture::Colour(cl) => bail!(
                "--clean {c}: {}x{} pixels, but the denoised image is {}x{}",
                cl.height(),
                cl.width(),
                out.height(),
                out.width()
            ),
            crate::image::Picture::Gray(_) => {
                bail!("--clean {c}: a gray image, and the denoised image is colour")
            }
        },
        None => None,
    };
    match &template {
        Some(tpl) => out.save_like(tpl, &a.out)?,
        None => out.save(&a.out)?,
    }
    let secs = t.elapsed().as_secs_f64();
    let mut download = 0;
    for p in a.share0.iter().chain(&a.share1) {
        download += std::fs::metadata(p)
            .with_context(|| format!("{}: cannot read", p.display()))?
            .len();
    }
    let kind = match &template {
        Some(_) => "a derived RGB DICOM, explicit VR little endian".to_string(),
        None => out.kind(),
    };
    let mut lines = vec![format!("wrote {} ({kind})", a.out.display())];
    if out.alpha.is_none() && template.is_none() {
        lines.push(
            "written as RGB (no --alpha: an RGBA image's alpha is share-image's <out>.alpha, \
             the receiver's alone)"
                .into(),
        );
    }
    let mut json = serde_json::json!({"ok": true, "command": "reconstruct", "out": a.out,
        "download_bytes": download, "seconds": secs, "colours": colours,
        "alpha": out.alpha.is_some()});
    if let Some((c, clean)) = clean {
        let q = crate::image::quantize_u8(&out.planes);
        let psnr = crate::metrics::psnr(&clean.planes, &q, 255.0);
        lines.push(format!("PSNR {psnr:.2} dB against {c} (over R, G and B)"));
        json["psnr"] = psnr.into();
    }
    Ok(Summary { lines, json })
}

/// `reconstruct --study`: every slice, as one derived series ([`crate::study::series`]).
fn reconstruct_study(a: &ReconstructArgs, dir: &Path) -> Result<Summary> {
    // Whose signatures the binding, the shares and the records must carry, and which study
    // is expected, before any file is read.
    let trust = a.signers.load()?;
    let want_id = super::keys::expected_id(
        a.study_id.as_deref(),
        &trust,
        "--study-id",
        "study",
        "share-study",
    )?
    .map(|id| id_hex(&id));
    let out = StudyOut {
        out: a.out.clone(),
        sources: a.sources.clone(),
        binding: a.binding.clone(),
        bit_depth: a.bit_depth,
        accept_suspect: a.accept_suspect,
        dirs: a.dirs.plain(),
    };
    let keys = ReceiverKeys {
        trust,
        want_id,
        identity: &|| a.identity.load().map(|_| ()),
        series: &|| a.series.derived(),
    };
    let Some(to) = &a.to else {
        return crate::study::series::reconstruct_study(&out, dir, &keys);
    };
    // The archive's options checked (and its credentials read) before the study is put
    // together.
    let client = a.archive.client(to, "--to")?;
    // A re-run after a filing cut short (the receiver killed while filing) must send the
    // series already written, not make a second one with new UIDs beside it in the archive.
    if std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "--out {}: already holds a derived series; to finish filing it, run `file-series \
             --in {} --to {to}{}` (the same instances: the archive holds them once); a new \
             reconstruct would file a second series with new UIDs",
            a.out.display(),
            a.out.display(),
            a.archive.repeated()
        );
    }
    let mut s = crate::study::series::reconstruct_study(&out, dir, &keys)?;
    if s.json["series_uid"].is_null() {
        bail!(
            "--to {to}: the study is not a DICOM series; its images are written to {}, nothing filed",
            a.out.display()
        );
    }
    // The very files it wrote (their sources' names, with or without an extension).
    let files: Vec<PathBuf> = s.json["files"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f.as_str())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let (line, filed) = client
        .file_into(&files, false)
        .with_context(|| format!("the derived series is written to {}", a.out.display()))?;
    s.lines.push(line);
    if let Some(m) = s.json.as_object_mut() {
        m.insert("filed".into(), filed);
    }
    Ok(s)
}
