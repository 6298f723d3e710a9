//! A study's input: a folder holding one DICOM series, or PNG and TIFF images, in order.
//!
//! DICOM slices are ordered as their series is: by InstanceNumber when every slice has a
//! distinct one, else by ImagePositionPatient along the slice normal, else by file name.
//! Images are ordered by file name, numbers compared as numbers (`im2` before `im10`).
//! Hidden files, sub-folders and a `DICOMDIR` index are not read; anything else that is not
//! a slice is refused by name, as is a folder mixing DICOM with other images or holding
//! more than one series (or slices without a SeriesInstanceUID), and a name that is not
//! UTF-8 (the outputs take the inputs' names).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::dicom::{DicomTemplate, SeriesFacts};
use super::Format;

/// What a study folder holds (`dicom-series` or `images` in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyKind {
    DicomSeries,
    Images,
    /// One multi-frame DICOM: every frame a slice, written back as one object.
    MultiFrame,
}

impl StudyKind {
    pub fn name(self) -> &'static str {
        match self {
            StudyKind::DicomSeries => "dicom-series",
            StudyKind::Images => "images",
            StudyKind::MultiFrame => "multi-frame",
        }
    }
}

/// A study folder's slices, in the study's order, with their formats.
#[derive(Debug, Clone)]
pub struct StudyInput {
    pub kind: StudyKind,
    pub slices: Vec<(PathBuf, Format)>,
}

/// A multi-frame DICOM file as a study: its frames, in order (`frames` of them, at most
/// `max`). Its header is read, not its pixel data.
pub fn scan_frames(file: &Path, max: usize) -> Result<(StudyInput, usize)> {
    if Format::of_file(file) != Some(Format::Dicom) {
        bail!(
            "{}: a file given as a study must be a multi-frame DICOM (a folder holds a series \
             or images)",
            file.display()
        );
    }
    let frames = DicomTemplate::read(file)?.frames();
    if frames > max {
        bail!(
            "{}: {frames} frames; a study has at most {max} slices",
            file.display()
        );
    }
    let input = StudyInput {
        kind: StudyKind::MultiFrame,
        slices: vec![(file.to_path_buf(), Format::Dicom)],
    };
    Ok((input, frames))
}

/// Lists and orders the slices of the study folder `dir` (at most `max` of them), reading
/// DICOM headers but no pixel data.
pub fn scan(dir: &Path, max: usize) -> Result<StudyInput> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let path = e.path();
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            bail!(
                "{}: the name is not UTF-8; rename it (a study's outputs take its inputs' names)",
                path.display()
            );
        };
        if name.starts_with('.') || name == "DICOMDIR" {
            continue;
        }
        if path.is_dir() {
            continue;
        }
        if files.len() == max {
            bail!(
                "{}: more than {max} files; a study has at most {max} slices",
                dir.display()
            );
        }
        let format = Format::of_file(&path).with_context(|| {
            format!(
                "{}: neither DICOM, PNG nor TIFF (a study folder holds only its slices)",
                path.display()
            )
        })?;
        files.push((path, format));
    }
    if files.is_empty() {
        bail!("{}: no slices (no DICOM, PNG or TIFF file)", dir.display());
    }
    files.sort_by(|a, b| natural(&a.0, &b.0));
    let dicom = files.iter().filter(|f| f.1 == Format::Dicom).count();
    if dicom == 0 {
        return Ok(StudyInput {
            kind: StudyKind::Images,
            slices: files,
        });
    }
    if dicom < files.len() {
        let d = files.iter().find(|f| f.1 == Format::Dicom).unwrap();
        let o = files.iter().find(|f| f.1 != Format::Dicom).unwrap();
        bail!(
            "{}: mixes DICOM ({}) with {} ({}); a study is one DICOM series or a folder of images",
            dir.display(),
            d.0.display(),
            o.1,
            o.0.display()
        );
    }
    let mut facts = Vec::with_capacity(files.len());
    for (p, _) in &files {
        facts.push((p.clone(), DicomTemplate::read(p)?.series_facts()));
    }
    check_one_series(&facts)?;
    order_series(&mut facts);
    Ok(StudyInput {
        kind: StudyKind::DicomSeries,
        slices: facts.into_iter().map(|(p, _)| (p, Format::Dicom)).collect(),
    })
}

fn check_one_series(facts: &[(PathBuf, SeriesFacts)]) -> Result<()> {
    let (p0, f0) = &facts[0];
    if facts.len() > 1 {
        if let Some((p, _)) = facts.iter().find(|f| f.1.series_uid.is_none()) {
            bail!(
                "{}: has no SeriesInstanceUID, so it cannot be told to be of one series with the others",
                p.display()
            );
        }
    }
    for (p, f) in &facts[1..] {
        if f.series_uid != f0.series_uid {
            let uid = |u: &Option<String>| u.clone().unwrap_or_else(|| "none".into());
            bail!(
                "{} (series {}) and {} (series {}) are of different series; a study folder holds one series",
                p0.display(),
                uid(&f0.series_uid),
                p.display(),
                uid(&f.series_uid)
            );
        }
    }
    Ok(())
}

/// Sorts by instance number, else by position, else keeps the (name) order.
fn order_series(facts: &mut [(PathBuf, SeriesFacts)]) {
    let distinct = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.windows(2).all(|w| w[0] != w[1])
    };
    let instances: Option<Vec<f64>> = facts
        .iter()
        .map(|f| f.1.instance.map(|x| x as f64))
        .collect();
    if instances.is_some_and(distinct) {
        facts.sort_by_key(|f| f.1.instance);
        return;
    }
    let positions: Option<Vec<f64>> = facts.iter().map(|f| f.1.position).collect();
    if positions.is_some_and(distinct) {
        facts.sort_by(|a, b| a.1.position.unwrap().total_cmp(&b.1.position.unwrap()));
    }
}

/// File names compared with runs of digits as numbers.
fn natural(a: &Path, b: &Path) -> Ordering {
    let key = |p: &Path| -> Vec<(u8, String)> {
        let s = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut out: Vec<(u8, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if (*d == 0) == digit => run.push(c),
                _ => out.push((if digit { 0 } else { 1 }, c.to_string())),
            }
        }
        out
    };
    let (ka, kb) = (key(a), key(b));
    for (x, y) in ka.iter().zip(&kb) {
        let o = match (x.0, y.0) {
            (0, 0) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ka.len().cmp(&kb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_ordered_with_numbers_as_numbers() {
        let mut v: Vec<PathBuf> = ["im10.png", "im2.png", "im1.png", "a.png", "im02.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        v.sort_by(|a, b| natural(a, b));
        let names: Vec<_> = v.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            ["a.png", "im1.png", "im02.png", "im2.png", "im10.png"]
        );
    }

    fn f(instance: Option<i64>, position: Option<f64>) -> (PathBuf, SeriesFacts) {
        let name = format!("{instance:?}{position:?}");
        (
            PathBuf::from(name),
            SeriesFacts {
                series_uid: None,
                instance,
                position,
            },
        )
    }

    #[test]
    fn series_order_by_instance_then_position_then_name() {
        let mut v = vec![
            f(Some(3), Some(0.0)),
            f(Some(1), Some(9.0)),
            f(Some(2), Some(5.0)),
        ];
        order_series(&mut v);
        assert_eq!(
            v.iter().map(|x| x.1.instance).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        // A repeated instance number: by position.
        let mut v = vec![
            f(Some(1), Some(2.5)),
            f(Some(1), Some(-1.0)),
            f(None, Some(0.0)),
        ];
        order_series(&mut v);
        assert_eq!(
            v.iter().map(|x| x.1.position).collect::<Vec<_>>(),
            [Some(-1.0), Some(0.0), Some(2.5)]
        );
        // Neither: kept as given (by name).
        let mut v = vec![f(None, Some(1.0)), f(None, None)];
        let before: Vec<_> = v.iter().map(|x| x.0.clone()).collect();
        order_series(&mut v);
        assert_eq!(v.iter().map(|x| x.0.clone()).collect::<Vec<_>>(), before);
    }
}
