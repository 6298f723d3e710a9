//! `share-study`: every slice of a series or folder checked, then shared as its own job, and
//! the study's files written (the public slice list, the receiver's sources and the
//! binding the gateway signs).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::formats::container::{fresh_id, id_hex};
use crate::formats::study::{
    default_binding, default_sources, slice_dir, Source, Sources, MANIFEST, MAX_SLICES,
};
use crate::image::series::{is_dicomdir, scan_frames, scan_series};
use crate::image::window::{Sigma, ValueScale, WindowChoice};
use crate::image::{self, Format};
use crate::job::gateway::{intensity_line, Sharer};
use crate::job::Summary;

/// A study to share, its arguments parsed (the gateway's options are its [`Sharer`]'s).
pub struct ShareStudy {
    /// The study: a folder of one series or of images, a DICOMDIR, or a multi-frame file.
    pub input: PathBuf,
    /// Which series of an export (its UID or number).
    pub series: Option<String>,
    /// The study folder to write.
    pub out: PathBuf,
    /// The receiver's sources file (default: <out>.sources.json).
    pub sources: Option<PathBuf>,
    /// No line per slice.
    pub quiet: bool,
}

/// Whether `a` and `b` are one folder (false when either does not exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Shares the study `a` asks for with the gateway `sharer`.
pub fn share_study(a: &ShareStudy, sharer: &Sharer) -> Result<Summary> {
    let t = Instant::now();
    let sources_path = a.sources.clone().unwrap_or_else(|| default_sources(&a.out));
    let binding_path = default_binding(&sources_path);
    for p in [
        a.out.join(MANIFEST),
        sources_path.clone(),
        binding_path.clone(),
    ] {
        if p.exists() {
            bail!(
                "{}: already exists: a study is shared into a new --out (and --sources)",
                p.display()
            );
        }
    }
    if same_dir(&a.input, &a.out) {
        bail!(
            "--out {}: is the input folder; write the study folder elsewhere",
            a.out.display()
        );
    }
    // A file is a multi-frame object (every frame a slice, decoded once and held: a frame
    // is not read alone); a folder is a series or images (every slice read twice, checked
    // then shared, so that a study is never all in memory; besides, the scan reads its
    // format, and a DICOM's header facts, to order the slices).
    let (input, frames) = if a.input.is_file() && !is_dicomdir(&a.input) {
        if a.series.is_some() {
            bail!(
                "--series: {} is one multi-frame object (one series); --series picks one series \
                 of a folder or a DICOMDIR",
                a.input.display()
            );
        }
        let (input, n) = scan_frames(&a.input, MAX_SLICES)?;
        // Read once: the frames shared are decoded from the bytes whose hash the binding
        // holds.
        let bytes = image::read_file(&a.input)?;
        let frames = decode_slice(&bytes, &a.input, sharer, true)?;
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        drop(bytes);
        if frames.frames.len() != n {
            bail!(
                "{}: {} frames decoded, {n} declared",
                a.input.display(),
                frames.frames.len()
            );
        }
        (input, Some((frames, blake3)))
    } else {
        (
            scan_series(&a.input, MAX_SLICES, a.series.as_deref())?,
            None,
        )
    };
    if !a.quiet {
        for l in &input.skipped {
            eprintln!("{l}");
        }
    }
    let slices_in: Vec<(&Path, Format, Option<usize>)> = match &frames {
        Some((f, _)) => (0..f.frames.len())
            .map(|k| (input.slices[0].0.as_path(), Format::Dicom, Some(k)))
            .collect(),
        None => input
            .slices
            .iter()
            .map(|(p, f)| (p.as_path(), *f, None))
            .collect(),
    };
    // Every slice on its window (a multi-frame object's one window for all its frames), and
    // the hash of the very bytes it was decoded from: a file is read once each time, so that
    // the hash the binding holds is of what was shared (a file swapped between a hash and a
    // second open would otherwise be bound as the slice's source unchecked).
    type Loaded = (image::GrayImage, ValueScale, String, usize);
    let load = |path: &Path, frame: Option<usize>| -> Result<Loaded> {
        match (frame, &frames) {
            (Some(k), Some((f, blake3))) => {
                Ok((f.frames[k].clone(), f.scale, blake3.clone(), f.colours))
            }
            _ => {
                let bytes = image::read_file(path)?;
                let mut w = decode_slice(&bytes, path, sharer, false)?;
                let blake3 = blake3::hash(&bytes).to_hex().to_string();
                Ok((w.frames.remove(0), w.scale, blake3, w.colours))
            }
        }
    };
    let name = |path: &Path, frame: Option<usize>| match frame {
        Some(k) => format!("{} frame {k}", path.display()),
        None => path.display().to_string(),
    };
    // Every slice is checked before any randomness is drawn or any file written; its hash
    // is kept, so that the share pass shares the bytes that were checked.
    let mut checked = Vec::with_capacity(slices_in.len());
    let mut colours = None;
    for &(path, _, frame) in &slices_in {
        let (img, scale, blake3, c) = load(path, frame)?;
        // One study, one kind of slice: the model takes one or the other.
        match colours {
            Some(first) if first != c => bail!(
                "{}: a {} image, and {} is {}: a study's slices are all colour or all gray",
                name(path, frame),
                planes_name(c),
                name(slices_in[0].0, slices_in[0].2),
                planes_name(first)
            ),
            _ => colours = Some(c),
        }
        sharer.check_planes(&img, c, &scale, &name(path, frame))?;
        checked.push(blake3);
    }
    let colours = colours.expect("a study has a slice");
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let mut slices: Vec<Source> = Vec::with_capacity(slices_in.len());
    let mut upload = 0;
    let quiet_slices = a.quiet;
    let (mut clipped, mut pixels, mut sigmas) = (0usize, 0usize, (f64::INFINITY, 0.0f64));
    let mut units = image::window::Units::Grey;
    for (i, &(path, format, frame)) in slices_in.iter().enumerate() {
        // Read anew since the first pass (a study is never all in memory): the same bytes,
        // or the study stops (`share` checks the image again, but the study's other slices
        // were checked with these).
        let (img, scale, blake3, _) = load(path, frame)?;
        if blake3 != checked[i] {
            bail!(
                "{}: changed while the study was shared (its bytes differ from those checked \
                 before sharing began); share the study again into a new --out",
                name(path, frame)
            );
        }
        let dir = slice_dir(&a.out, i);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let shared = sharer.share_planes(
            &img,
            colours,
            &scale,
            &name(path, frame),
            &dir.join("image"),
        )?;
        upload += shared.upload_bytes;
        if !quiet_slices {
            eprintln!(
                "slice {}/{}: {}",
                i + 1,
                slices_in.len(),
                intensity_line(
                    &name(path, frame),
                    &scale,
                    shared.sigma,
                    sharer.options().sigma
                )
            );
        }
        // A multi-frame object's one window counts its clipped pixels once.
        if frame.is_none_or(|k| k == 0) {
            clipped += scale.clipped;
            pixels += scale.pixels;
        }
        let in_units = scale.in_units(shared.sigma);
        sigmas = (sigmas.0.min(in_units), sigmas.1.max(in_units));
        units = scale.units;
        slices.push(Source {
            file: path
                .file_name()
                .expect("a listed file has a name")
                .to_string_lossy()
                .into_owned(),
            format,
            bit_depth: img.bit_depth,
            height: img.height() / colours,
            width: img.width(),
            colours: (colours != 1).then_some(colours),
            job_id: id_hex(&shared.job_id),
            blake3,
            frame,
            // The receiver writes the slice back on it (and what it clipped from the file);
            // a colour DICOM is on its full range.
            window: (format == Format::Dicom && colours == 1).then_some(scale.window),
            noise_scale: shared.private.then_some(shared.pre.noise_scale),
            sigma: shared.private.then_some(shared.sigma),
        });
    }
    // The slices' folder (one, by the scan): the receiver reads its templates there. A
    // multi-frame file's is its folder; an export's, its series' folder.
    let folder = match input.slices[0].0.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let input_dir = folder
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", folder.display()))?;
    let sources = Sources::new(id_hex(&fresh_id()), input_dir, input.kind, slices);
    // The public manifest last: a study folder without it is an unfinished share-study.
    sources.write(&sources_path)?;
    // The receiver's check that no one swapped the slices or their sources since.
    sources.write_binding(&binding_path, sharer.signer())?;
    sources.manifest().write(&a.out)?;
    let n = sources.slices.len();
    let model_checked = sharer
        .options()
        .model
        .is_some()
        .then(|| sharer.model_note().is_none());
    let mut lines = vec![
        format!(
            "study {} ({}{}, {n} slices from {}) shared into {}; upload {upload} bytes in total",
            sources.study_id,
            input.kind.name(),
            if colours == 1 { "" } else { ", colour" },
            a.input.display(),
            a.out.display()
        ),
        format!(
            "noise {:.3} to {:.3} {}{}; {clipped} of {pixels} pixels outside their window \
             (clipped for the model, written back unchanged by the receiver)",
            sigmas.0,
            sigmas.1,
            units.name(),
            if sharer.options().sigma == Some(Sigma::Auto) { " (estimated per slice)" } else { "" },
        ),
        format!(
            "give each server study.json and its own slice<I>/image.p<P>, the dealer study.json and slice<I>/image.pub; {} and {} (the study binding{}) are the receiver's alone, with the study id {} (reconstruct --study-id)",
            sources_path.display(),
            binding_path.display(),
            if sharer.signer().is_some() { ", signed" } else { ", unsigned: a receiver that pins keys refuses it" },
            sources.study_id
        ),
    ];
    // Said first: what the gateway took on trust.
    if let Some(note) = sharer.model_note() {
        lines.insert(0, note.to_string());
    }
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "share-study", "study_id": sources.study_id,
            "model_owner_checked": model_checked,
            "kind": input.kind.name(), "slices": n, "colours": colours, "skipped": input.skipped, "out": a.out, "sources": sources_path, "binding": binding_path, "upload_bytes": upload,
            "units": units, "sigma_in_units": [sigmas.0, sigmas.1], "clipped": clipped,
            "seconds": t.elapsed().as_secs_f64()}),
    })
}

/// A slice's file decoded: its frames (each its planes stacked: gray one, colour three),
/// the scale they are on and how many planes.
struct Slice {
    frames: Vec<image::GrayImage>,
    scale: ValueScale,
    colours: usize,
}

/// "gray" or "colour".
fn planes_name(colours: usize) -> &'static str {
    if colours == 1 {
        "gray"
    } else {
        "colour"
    }
}

/// The slice file's `bytes` (read from `path`) decoded: a gray image on the gateway's
/// window (`multi`: every frame), or a colour one's RGB planes on their full range (a
/// colour DICOM's every frame); an RGBA image is refused, since a study keeps no alpha.
fn decode_slice(bytes: &[u8], path: &Path, sharer: &Sharer, multi: bool) -> Result<Slice> {
    if crate::image::colour::as_gray() || !image::rgb::is_colour_bytes(bytes, path) {
        let w = image::windowed_from_bytes(bytes, path, sharer.window(), multi)?;
        return Ok(Slice {
            frames: w.frames,
            scale: w.scale,
            colours: 1,
        });
    }
    if !matches!(sharer.window(), WindowChoice::Default | WindowChoice::Full) {
        bail!(
            "{}: a colour image takes its full range: no --window",
            path.display()
        );
    }
    let colour = image::rgb::colour_frames_from_bytes(bytes, path)?;
    // A series' slice is one image, as the gray reader insists: a multi-frame object is a
    // study of its own (share-study --in file.dcm).
    if !multi && colour.len() != 1 {
        bail!(
            "{}: a multi-frame object of {} frames in a series; share it as a study of its own \
             (share-study --in {})",
            path.display(),
            colour.len(),
            path.display()
        );
    }
    if colour.iter().any(|c| c.alpha.is_some()) {
        bail!(
            "{}: an RGBA image: a study's slices are shared without an alpha, which would be \
             lost; share it with share-image, which keeps the alpha for the receiver",
            path.display()
        );
    }
    // The range its values are stored on (a 12-bit colour DICOM's 0..4095), for a level
    // in stored values; pixels, as a gray image's scale counts them (three samples each).
    let mut scale = colour[0].value_scale();
    scale.pixels = colour.iter().map(|c| c.height() * c.width()).sum();
    Ok(Slice {
        frames: colour
            .into_iter()
            .map(|c| image::GrayImage::new(c.planes, c.bit_depth))
            .collect(),
        scale,
        colours: 3,
    })
}
