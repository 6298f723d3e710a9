//! `reconstruct --study`: every slice's pair of output shares checked against the job the
//! gateway signed for its place and added ([`crate::job::receiver`]), and the slices written
//! back under their input's names and in its format; a DICOM series as one derived series,
//! all slices or none.

use crate::ring::Party;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::records::run_records;
use super::ServerDirs;
use crate::formats::container::{id_hex, Opened};
use crate::formats::inputs::{open_signed_file, Maker};
use crate::formats::signing::Trust;
use crate::formats::study::{
    default_binding, default_sources, parse_id, slice_file, slices_spec, Done, Manifest, Source,
    Sources, MANIFEST,
};
use crate::image::dicom::DicomTemplate;
use crate::image::series::StudyKind;
use crate::image::window::WindowChoice;
use crate::image::{self, DerivedSeries, Encoding, Format};
use crate::job::receiver::{check_result, combine_opened, run_description, Expect, RunFacts};
use crate::job::Summary;
use crate::model::preprocess::Preprocess;

/// A study to write back, the receiver's arguments parsed.
pub struct StudyOut {
    /// The new (or empty) folder the slices are written to.
    pub out: PathBuf,
    /// The receiver's sources file (default: <study>.sources.json).
    pub sources: Option<PathBuf>,
    /// The study binding (default: <sources>.sig).
    pub binding: Option<PathBuf>,
    /// PNG and TIFF slices' bit depth (default: their input's).
    pub bit_depth: Option<u8>,
    /// Write a slice that looks ruined instead of refusing the study.
    pub accept_suspect: bool,
    /// Where each server's output shares are, when not in the study folder.
    pub dirs: ServerDirs,
}

/// What the receiver's keys and choices give: whose signatures the binding, the shares and
/// the records must carry and which study is expected (loaded before any file is read), and
/// what is loaded when the study's reading comes to it.
pub struct ReceiverKeys<'a> {
    pub trust: Trust,
    /// The study id expected (32 hex digits); None only with unsigned files.
    pub want_id: Option<String>,
    /// Registers the receiver's identity, once the study's files are found to be of one study.
    pub identity: &'a dyn Fn() -> Result<()>,
    /// The derived series the slices are written in, once slice 0 is put together.
    pub series: &'a dyn Fn() -> Result<DerivedSeries>,
}

/// The DICOM template of the slice `s` from its source file's `bytes` (read from `src`,
/// once): they must hash to what was shared, and the template (header and pixels) is made
/// from those very bytes, so that a file swapped between a hash and a second open is never
/// used unchecked.
fn slice_template(bytes: &[u8], src: &Path, s: &Source) -> Result<DicomTemplate> {
    if blake3::hash(bytes).to_hex().as_str() != s.blake3 {
        bail!(
            "{}: is not the file that was shared as this slice (it changed since, or the input \
             folder moved: give --sources a corrected copy)",
            src.display()
        );
    }
    // The slice's window as the gateway recorded it; a study shared before windows existed
    // was on the container's full range.
    let window = s.window.map_or(WindowChoice::Full, WindowChoice::Range);
    Ok(DicomTemplate::from_bytes_windowed(bytes, src, &window)?.0)
}

/// `reconstruct --study`: every slice, in its input's name and format; a DICOM series as one
/// new derived series. Written into a new folder, all slices or none.
pub fn reconstruct_study(a: &StudyOut, dir: &Path, keys: &ReceiverKeys) -> Result<Summary> {
    let t = Instant::now();
    let (trust, want_id) = (&keys.trust, keys.want_id.clone());
    let sources_path = a.sources.clone().unwrap_or_else(|| default_sources(dir));
    let sources = Sources::read(&sources_path)?;
    // The slices in the order the gateway signed: what the sources file says (the slices'
    // files, facts and job ids) must be it, and each slice's shares are then checked
    // against its signed job id. Unsigned sources alone would let whoever can write them
    // and the study folder swap slices.
    let binding_path = a
        .binding
        .clone()
        .unwrap_or_else(|| default_binding(&sources_path));
    let bound = sources.check_binding(&sources_path, &binding_path, trust)?;
    // The binding proves the study is whole as the gateway shared it, not that it is the
    // one the receiver waits for: another genuine study of the same gateway (its folder,
    // sources and binding together) put in its place passes it. The id says which.
    let signed_id = bound.as_ref().map_or(&sources.study_id, |b| &b.study_id);
    if let Some(want) = want_id.filter(|w| w != signed_id) {
        bail!(
            "--study-id {want}: {} is study {signed_id} (as {} says), not the study expected: \
             another study put in its place; nothing written",
            dir.display(),
            if bound.is_some() {
                "the gateway's signed study binding"
            } else {
                "its sources file"
            }
        );
    }
    let jobs: Vec<String> = match &bound {
        Some(b) => b.slices.iter().map(|s| s.job_id.clone()).collect(),
        None => sources.slices.iter().map(|s| s.job_id.clone()).collect(),
    };
    let m = Manifest::read(dir)?;
    if m != sources.manifest() || m.slices != jobs {
        bail!(
            "{} and {} are not of one study",
            dir.join(MANIFEST).display(),
            sources_path.display()
        );
    }
    let dicom = sources.kind != StudyKind::Images;
    let multi = sources.kind == StudyKind::MultiFrame;
    if dicom && a.bit_depth.is_some() {
        bail!("--bit-depth: a DICOM series is written at the bit depth of its slices");
    }
    // A new folder (or an empty one): nothing, the inputs least of all, is replaced.
    if a.out.exists() {
        let empty = std::fs::read_dir(&a.out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            bail!(
                "--out {}: exists and is not an empty folder; a study is written into a new one",
                a.out.display()
            );
        }
    }
    (keys.identity)()?;
    let dirs = a.dirs.of(dir)?;
    // The servers' records first (none of the shares read yet): every slice finished, by
    // both, in one run each.
    let records = run_records(&m, &dirs, trust)?;
    let left: Vec<usize> = (0..m.len()).filter(|&i| records[i].is_none()).collect();
    if !left.is_empty() {
        bail!(
            "study {}: slice(s) {} not finished on both servers (see study-status); nothing written",
            m.study_id,
            slices_spec(&left)
        );
    }
    let records: Vec<[Done; 2]> = records.into_iter().flatten().collect();
    // Slice `i`'s share of server `p`, opened once: the raw file checked against the
    // server's record (the output it wrote), then, on the same open, refused when sealed
    // under --insecure-unsigned, its signer checked on the header its body is read from.
    let open_share = |i: usize, p: Party| -> Result<Opened> {
        let path = slice_file(&dirs[p.index()], i, "out", p);
        let rec = &records[i][p.index()];
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let intact = rec
            .intact_open(&mut f)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let o = open_signed_file(&path, f, trust, Maker::Server)?;
        if !intact || !rec.names_run(o.header()) {
            bail!(
                "{}: is not the output share S{p}'s completion record names (written again or \
                 changed since): slice {i} is not finished; nothing written",
                path.display()
            );
        }
        Ok(o)
    };
    // Slice `i`'s pair, read and checked once: signed by the pinned servers' keys and of
    // the job the gateway signed for that place.
    let combine_slice = |i: usize| -> Result<(image::GrayImage, RunFacts)> {
        let pre = sources.slices[i]
            .noise_scale
            .map(|noise_scale| Preprocess { noise_scale });
        let expect = Expect {
            trust,
            job: parse_id(&jobs[i]),
        };
        let (img, _, run) = open_share(i, Party::S0)
            .and_then(|o0| Ok((o0, open_share(i, Party::S1)?)))
            .and_then(|(o0, o1)| combine_opened(o0, o1, pre, &expect))
            .with_context(|| format!("slice {i}"))?;
        Ok((img, run))
    };
    // Slice 0 first: its verified headers describe the run in every slice's template.
    let (img0, run0) = combine_slice(0)?;
    let mut first = Some(img0);
    // Every encoding (a DICOM slice's template, the very file that was shared) is made
    // before anything is written.
    let mut series = (keys.series)()?;
    // The study's series the gateway saw (those of the folder it shared: an export may hold
    // several, an earlier run's derived series among them): the new series takes a number
    // and a description none of them has. Best effort: an unreadable folder leaves the
    // run's own offset and tag to tell the series apart.
    if dicom {
        series.known =
            image::series::known_series(&sources.input_dir, crate::formats::study::MAX_SLICES);
    }
    // One description for the series, from its first slice: every slice is one job of
    // one model and sigma.
    let mut described: Option<(String, String)> = None;
    let mut encodings = Vec::with_capacity(m.len());
    // A multi-frame object's frames share one template (the file's): made once.
    for s in sources.slices.iter().take(if multi { 1 } else { m.len() }) {
        let enc = match s.format {
            Format::Dicom => {
                let src = sources.input_dir.join(&s.file);
                let tpl = slice_template(&image::read_file(&src)?, &src, s)?;
                if described.is_none() {
                    described = Some(run_description(&run0, Some(&tpl), s.sigma));
                }
                let (what, derivation) = described.clone().unwrap_or_default();
                let tpl = tpl.with_derivation(derivation).in_series(&series, &what);
                let frames = if multi { m.len() } else { 1 };
                if tpl.frames() != frames {
                    bail!(
                        "{}: has {} frame(s), the study {frames} slice(s) of it",
                        src.display(),
                        tpl.frames()
                    );
                }
                Encoding::Dicom(Box::new(tpl))
            }
            Format::Tiff => Encoding::Tiff(a.bit_depth.unwrap_or(s.bit_depth)),
            Format::Png => Encoding::Png(a.bit_depth.unwrap_or(s.bit_depth)),
        };
        encodings.push(enc);
    }
    // All slices or none: the finished folder is moved into place.
    let mut warnings = Vec::new();
    crate::fileio::atomic::new_folder(&a.out, |staging| {
        let mut frames = Vec::new();
        for (i, s) in sources.slices.iter().enumerate() {
            let (img, run) = match first.take() {
                Some(img) => (img, run0.clone()),
                None => combine_slice(i)?,
            };
            // One series, one model: its description (slice 0's) holds for every slice only
            // if every slice was denoised by the model slice 0 was (a study shared without
            // --model binds no model to its jobs).
            if run.h0.model_id != run0.h0.model_id {
                bail!(
                    "slice {i} ({}): denoised by model {}, but slice 0 by model {}: a study's \
                     slices must be of one model; nothing written",
                    s.file,
                    run.h0.model_id.as_ref().map(id_hex).unwrap_or_default(),
                    run0.h0.model_id.as_ref().map(id_hex).unwrap_or_default()
                );
            }
            // The planes the gateway signed for this place, and the job's (a colour slice
            // is its planes stacked).
            let colours = s.colours.unwrap_or(1);
            if run.job.colours != colours {
                bail!(
                    "slice {i} ({}): the shares are of a job of {} plane(s), the study's slice \
                     of {colours}; nothing written",
                    s.file,
                    run.job.colours
                );
            }
            if img.pixels.dim() != (s.height * colours, s.width) {
                bail!(
                    "slice {i}: the output is {} x {}, the input {} was {} x {}{}",
                    img.height() / colours,
                    img.width(),
                    s.file,
                    s.height,
                    s.width,
                    if colours == 1 { "" } else { " (colour)" }
                );
            }
            let enc = &encodings[if multi { 0 } else { i }];
            if let Encoding::Dicom(t) = enc {
                let what = format!("slice {i} ({})", s.file);
                warnings.extend(check_result(
                    &img,
                    (t, if multi { i } else { 0 }),
                    s.sigma.unwrap_or(run.sigma()),
                    a.accept_suspect,
                    &what,
                )?);
            }
            if multi {
                frames.push(img);
            } else {
                encodings[i].save_planes(
                    std::slice::from_ref(&img),
                    colours,
                    staging.join(&s.file),
                )?;
            }
        }
        if multi {
            let s = &sources.slices[0];
            encodings[0].save_planes(&frames, s.colours.unwrap_or(1), staging.join(&s.file))?;
        }
        Ok(())
    })?;
    let mut written: Vec<PathBuf> = sources.slices.iter().map(|s| a.out.join(&s.file)).collect();
    written.dedup();
    let what = if multi {
        format!(
            "one multi-frame DICOM of {} frames, in series {}",
            m.len(),
            series.uid
        )
    } else if dicom {
        format!("one derived DICOM series, {}", series.uid)
    } else {
        "images in their input's formats".into()
    };
    let mut lines = warnings;
    lines.push(format!(
        "study {}: wrote {} slices to {} ({what})",
        m.study_id,
        m.len(),
        a.out.display()
    ));
    Ok(Summary {
        lines,
        json: serde_json::json!({"ok": true, "command": "reconstruct", "study_id": m.study_id,
            "out": a.out, "files": written, "series_uid": dicom.then_some(&series.uid),
            "seconds": t.elapsed().as_secs_f64()}),
    })
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    use super::*;
    use crate::image::window::Window;

    /// A `size x size` 12-bit CT slice's file bytes, its values from `seed`.
    fn ct(size: usize, seed: u16) -> Vec<u8> {
        let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        let values: Vec<u16> = (0..size * size)
            .map(|i| (i as u16 * 37 + seed * 101) % 4096)
            .collect();
        let obj = InMemDicomObject::from_element_iter([
            s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            s(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.8.498.3",
            ),
            s(tags::MODALITY, VR::CS, "CT"),
            us(tags::SAMPLES_PER_PIXEL, 1),
            s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            us(tags::ROWS, size as u16),
            us(tags::COLUMNS, size as u16),
            us(tags::BITS_ALLOCATED, 16),
            us(tags::BITS_STORED, 12),
            us(tags::HIGH_BIT, 11),
            us(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into())),
        ]);
        let mut b = Vec::new();
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_all(&mut b)
            .unwrap();
        b
    }

    /// Issue 45 (review of the study binding, item 1): a slice's template is made from the
    /// bytes that were hashed, never from its file opened again: with another file (of
    /// another size) at the source's path, or none, the template is still the hashed one's;
    /// bytes that do not hash to what was shared are refused naming the file.
    #[test]
    fn a_slice_template_is_made_from_the_bytes_hashed_not_the_file_opened_again() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.dcm");
        let (shared, other) = (ct(6, 1), ct(8, 2));
        let s = Source {
            file: "a.dcm".into(),
            format: Format::Dicom,
            bit_depth: 16,
            height: 6,
            width: 6,
            job_id: "0123456789abcdef0123456789abcdef".into(),
            blake3: blake3::hash(&shared).to_hex().to_string(),
            frame: None,
            colours: None,
            window: Some(Window::new(-500.0, 3000.0).unwrap()),
            noise_scale: None,
            sigma: None,
        };
        // The file swapped after it was read and hashed.
        std::fs::write(&src, &other).unwrap();
        let t = slice_template(&shared, &src, &s).unwrap();
        assert_eq!(t.dim(), (6, 6));
        let frames = t.windowed_frames().expect("on the slice's window");
        assert_eq!(frames[0].dim(), (6, 6));
        std::fs::remove_file(&src).unwrap();
        assert_eq!(slice_template(&shared, &src, &s).unwrap().dim(), (6, 6));
        let e = format!("{:#}", slice_template(&other, &src, &s).unwrap_err());
        assert!(
            e.contains("a.dcm") && e.contains("is not the file that was shared"),
            "{e}"
        );
    }
}
