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

use dicom_dictionary_std::tags;

use super::dicom::{DicomTemplate, SeriesFacts};
use super::{Format, ImageError};

/// Why a study's input was refused, naming the folder or the files.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// A file or folder could not be listed or read.
    #[error("{}: cannot {doing}: {source}", .path.display())]
    Io {
        path: PathBuf,
        doing: &'static str,
        source: std::io::Error,
    },
    /// A DICOM object's header could not be parsed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The input (a folder, a DICOMDIR, a file in it) is not a study's, and why.
    #[error("{}: {why}", .path.display())]
    Input { path: PathBuf, why: String },
    /// Two files that cannot both be slices of one study.
    #[error("{} and {}: {why}", .first.display(), .second.display())]
    Pair {
        first: PathBuf,
        second: PathBuf,
        why: String,
    },
    /// `--series` names no series of the export, or several.
    #[error("--series {choice}: {why}")]
    Choice { choice: String, why: String },
}

type Result<T, E = SeriesError> = std::result::Result<T, E>;

/// A [`SeriesError::Input`] of `path`.
fn refused(path: &Path, why: String) -> SeriesError {
    SeriesError::Input {
        path: path.into(),
        why,
    }
}

/// A [`SeriesError::Io`] of `path`.
fn io<'a>(path: &'a Path, doing: &'static str) -> impl FnOnce(std::io::Error) -> SeriesError + 'a {
    move |source| SeriesError::Io {
        path: path.into(),
        doing,
        source,
    }
}

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
    /// One line per object of the input that is not an image (a structured report...).
    pub skipped: Vec<String>,
}

/// A multi-frame DICOM file as a study: its frames, in order (`frames` of them, at most
/// `max`). Its header is read, not its pixel data.
pub fn scan_frames(file: &Path, max: usize) -> Result<(StudyInput, usize)> {
    if Format::of_file(file) != Some(Format::Dicom) {
        return Err(refused(
            file,
            "a file given as a study must be a multi-frame DICOM (a folder holds a series or \
             images)"
                .into(),
        ));
    }
    let frames = DicomTemplate::read(file)?.frames();
    if frames > max {
        return Err(refused(
            file,
            format!("{frames} frames; a study has at most {max} slices"),
        ));
    }
    let input = StudyInput {
        kind: StudyKind::MultiFrame,
        slices: vec![(file.to_path_buf(), Format::Dicom)],
        skipped: Vec::new(),
    };
    Ok((input, frames))
}

/// Lists and orders the slices of the study folder `dir` (at most `max` of them), reading
/// DICOM headers but no pixel data: the folder's one DICOM series (or its images).
pub fn scan(dir: &Path, max: usize) -> Result<StudyInput> {
    scan_series(dir, max, None)
}

/// As [`scan`], for an export: `input` is a folder (its sub-folders walked) or a DICOMDIR,
/// and `choice` (a SeriesInstanceUID or a Series Number) picks one of its series; without
/// one, an export of several series is refused, listing them.
pub fn scan_series(input: &Path, max: usize, choice: Option<&str>) -> Result<StudyInput> {
    let found = survey(input, max)?;
    if !found.images.is_empty() {
        if let Some(choice) = choice {
            return Err(SeriesError::Choice {
                choice: choice.into(),
                why: format!("{} holds images, not DICOM series", input.display()),
            });
        }
        let mut files = found.images;
        files.sort_by(|a, b| natural(&a.0, &b.0));
        return Ok(StudyInput {
            kind: StudyKind::Images,
            slices: files,
            skipped: found.skipped,
        });
    }
    let series = pick(input, &found.series, choice)?;
    let mut facts = Vec::with_capacity(series.files.len());
    for f in &series.files {
        facts.push((f.path.clone(), DicomTemplate::read(&f.path)?.series_facts()));
    }
    check_one_series(&facts)?;
    check_unique_instances(&series.files)?;
    check_one_folder(&series.files)?;
    order_series(&mut facts);
    Ok(StudyInput {
        kind: StudyKind::DicomSeries,
        slices: facts.into_iter().map(|(p, _)| (p, Format::Dicom)).collect(),
        skipped: found.skipped,
    })
}

/// One DICOM image object of an export, as its header says.
#[derive(Debug, Clone)]
struct Object {
    path: PathBuf,
    sop_uid: Option<String>,
}

/// A series found in an export: its header facts and its image files (in name order).
#[derive(Debug, Clone)]
pub struct FoundSeries {
    pub uid: Option<String>,
    pub number: Option<i64>,
    pub description: Option<String>,
    pub modality: Option<String>,
    files: Vec<Object>,
}

impl FoundSeries {
    pub fn slices(&self) -> usize {
        self.files.len()
    }

    /// Its first file (by name), to point a person at it.
    pub fn first(&self) -> &Path {
        &self.files[0].path
    }

    /// `<uid>: number 3, "Abdomen", CT, 120 slices (e.g. <file>)`.
    pub fn line(&self) -> String {
        format!(
            "{}: number {}, {:?}, {}, {} slice(s) (e.g. {})",
            self.uid.as_deref().unwrap_or("no SeriesInstanceUID"),
            self.number.map_or("none".into(), |n| n.to_string()),
            self.description.as_deref().unwrap_or(""),
            self.modality.as_deref().unwrap_or("no modality"),
            self.files.len(),
            self.first().display()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"uid": self.uid, "number": self.number,
            "description": self.description, "modality": self.modality,
            "slices": self.files.len(), "first": self.first()})
    }
}

/// What an export holds: its DICOM series (in order of first file name), its PNG/TIFF
/// images (a folder of images: no series), and one line per object skipped (not an image).
#[derive(Debug, Default)]
pub struct Survey {
    pub series: Vec<FoundSeries>,
    pub images: Vec<(PathBuf, Format)>,
    pub skipped: Vec<String>,
}

/// The DICOM series of the folder `dir` (its sub-folders walked, at most `max` files), by
/// Series Number and Description: the study's series a run knows of, which its derived
/// series must not look like (issue 71, item 13). Best effort: a folder that cannot be
/// surveyed (unreadable, not only DICOM) gives none.
pub fn known_series(dir: &Path, max: usize) -> Vec<(Option<i64>, String)> {
    match survey(dir, max) {
        Ok(found) => found
            .series
            .iter()
            .map(|s| (s.number, s.description.clone().unwrap_or_default()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Deepest sub-folder of an export walked (a hospital's is a few levels: patient, study,
/// series).
const MAX_DEPTH: usize = 8;

/// Reads an export's headers (no pixel data): a folder, its sub-folders walked (hidden
/// files, a `DICOMDIR` index and links to folders not read), or a DICOMDIR, whose Directory
/// Record Sequence names the files. At most `max` files.
pub fn survey(input: &Path, max: usize) -> Result<Survey> {
    let (files, root) = if is_dicomdir(input) {
        (dicomdir_files(input, max)?, None)
    } else {
        let mut files = Vec::new();
        walk(input, 0, max, &mut files)?;
        (files, Some(input))
    };
    if files.is_empty() {
        return Err(refused(
            input,
            "no slices (no DICOM, PNG or TIFF file)".into(),
        ));
    }
    let mut out = Survey::default();
    let mut dicom: Option<&Path> = None;
    let mut other: Option<(&Path, Format)> = None;
    for path in &files {
        let format = Format::of_file(path).ok_or_else(|| {
            refused(
                path,
                "neither DICOM, PNG nor TIFF (a study folder holds only its slices)".into(),
            )
        })?;
        if format != Format::Dicom {
            // A folder of images is read flat: its sub-folders are not slices.
            if root.is_some_and(|r| path.parent() != Some(r)) {
                return Err(refused(
                    path,
                    "an image in a sub-folder; a folder of images is read flat (sub-folders \
                     are for DICOM series)"
                        .into(),
                ));
            }
            other.get_or_insert((path, format));
            out.images.push((path.clone(), format));
            continue;
        }
        dicom.get_or_insert(path);
        match read_object(path)? {
            Err(why) => out
                .skipped
                .push(format!("skipped {}: {why}", path.display())),
            Ok((obj, key)) => match out.series.iter_mut().find(|s| s.uid == key.uid) {
                Some(s) => s.files.push(obj),
                None => out.series.push(FoundSeries {
                    files: vec![obj],
                    ..key
                }),
            },
        }
    }
    if let (Some(d), Some((o, format))) = (dicom, other) {
        return Err(refused(
            input,
            format!(
                "mixes DICOM ({}) with {format} ({}); a study is one DICOM series or a folder \
                 of images",
                d.display(),
                o.display()
            ),
        ));
    }
    if out.images.is_empty() && out.series.is_empty() {
        return Err(refused(
            input,
            format!(
                "no image among its {} DICOM object(s) (every one skipped: {})",
                files.len(),
                out.skipped.join("; ")
            ),
        ));
    }
    for s in &mut out.series {
        s.files.sort_by(|a, b| natural(&a.path, &b.path));
    }
    out.series.sort_by(|a, b| natural(a.first(), b.first()));
    Ok(out)
}

/// A DICOMDIR is named so (PS3.10: the index of a file set is the file `DICOMDIR`).
pub fn is_dicomdir(path: &Path) -> bool {
    path.is_file()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

/// The files under `dir` (sub-folders to [`MAX_DEPTH`]), at most `max`.
fn walk(dir: &Path, depth: usize, max: usize, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io(dir, "list"))?;
    let mut subs = Vec::new();
    for e in entries {
        let e = e.map_err(io(dir, "list"))?;
        let path = e.path();
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(refused(
                &path,
                "the name is not UTF-8; rename it (a study's outputs take its inputs' names)"
                    .into(),
            ));
        };
        if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
            continue;
        }
        let kind = e.file_type().map_err(io(&path, "read"))?;
        if kind.is_dir() {
            subs.push(path);
            continue;
        }
        // A link to a folder could lead back up: not followed.
        if kind.is_symlink() && path.is_dir() {
            continue;
        }
        if files.len() == max {
            return Err(refused(
                dir,
                format!("more than {max} files; a study has at most {max} slices"),
            ));
        }
        files.push(path);
    }
    if !subs.is_empty() && depth == MAX_DEPTH {
        return Err(refused(
            &subs[0],
            format!(
                "sub-folders deeper than {MAX_DEPTH} levels; give --in a folder nearer the series"
            ),
        ));
    }
    subs.sort_by(|a, b| natural(a, b));
    for s in subs {
        walk(&s, depth + 1, max, files)?;
    }
    Ok(())
}

/// The files a DICOMDIR's records reference (Referenced File ID, relative to its folder),
/// each once, in the index's order. A reference that leaves the folder or names no file is
/// refused by name.
fn dicomdir_files(path: &Path, max: usize) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(path).map_err(io(path, "read"))?;
    let obj = super::dicom::parse(&bytes, path, false)?;
    let root = path.parent().unwrap_or(Path::new("."));
    let records = obj
        .element_opt(tags::DIRECTORY_RECORD_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| refused(path, "not a DICOMDIR (no Directory Record Sequence)".into()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for r in records {
        let Some(id) = r.element_opt(tags::REFERENCED_FILE_ID).ok().flatten() else {
            continue;
        };
        let parts: Vec<String> = id
            .to_multi_str()
            .map(|v| v.iter().map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let sound =
            |c: &String| !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\\', '\0']);
        if parts.is_empty() || !parts.iter().all(sound) {
            return Err(refused(
                path,
                format!(
                    "a record names the file {}, not a path inside its folder",
                    parts.join("\\")
                ),
            ));
        }
        let file = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if !file.is_file() {
            return Err(refused(
                path,
                format!(
                    "names {} (Referenced File ID {}), which is not a file",
                    file.display(),
                    parts.join("\\")
                ),
            ));
        }
        if files.contains(&file) {
            continue;
        }
        if files.len() == max {
            return Err(refused(
                path,
                format!("names more than {max} files; a study has at most {max} slices"),
            ));
        }
        files.push(file);
    }
    Ok(files)
}

/// A DICOM object's header (no pixel data): an image with the series it is of, or why it is
/// not one (a structured report, a presentation state: no Rows, Columns or Pixel Data).
fn read_object(path: &Path) -> Result<std::result::Result<(Object, FoundSeries), String>> {
    let bytes = std::fs::read(path).map_err(io(path, "read"))?;
    let obj = super::dicom::parse(&bytes, path, false)?;
    let text = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
    };
    let modality = text(tags::MODALITY);
    let image = [tags::ROWS, tags::COLUMNS]
        .iter()
        .all(|&t| obj.element_opt(t).ok().flatten().is_some());
    if !image {
        let class = text(tags::SOP_CLASS_UID).unwrap_or_else(|| "none".into());
        let name = sop_class_kind(&class)
            .map(|k| format!(", a {k}"))
            .unwrap_or_default();
        return Ok(Err(format!(
            "not an image (SOP class {class}{name}, modality {}): no pixel data",
            modality.as_deref().unwrap_or("none")
        )));
    }
    let key = FoundSeries {
        uid: text(tags::SERIES_INSTANCE_UID),
        number: text(tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
        description: text(tags::SERIES_DESCRIPTION),
        modality,
        files: Vec::new(),
    };
    let o = Object {
        path: path.to_path_buf(),
        sop_uid: text(tags::SOP_INSTANCE_UID),
    };
    Ok(Ok((o, key)))
}

/// What kind of non-image object a storage SOP class is, for the line that skips it.
fn sop_class_kind(uid: &str) -> Option<&'static str> {
    const STORAGE: &str = "1.2.840.10008.5.1.4.1.1.";
    let rest = uid.strip_prefix(STORAGE)?;
    let family = rest.split('.').next()?;
    Some(match family {
        "88" => "structured report or key object selection",
        "11" => "presentation state",
        "104" => "encapsulated document",
        "481" => "radiotherapy object",
        "9" => "waveform",
        _ => return None,
    })
}

/// The series `choice` names (a SeriesInstanceUID, else a Series Number), or the only one.
fn pick<'a>(
    input: &Path,
    series: &'a [FoundSeries],
    choice: Option<&str>,
) -> Result<&'a FoundSeries> {
    let list = |v: &[&FoundSeries]| {
        v.iter()
            .map(|s| format!("\n  {}", s.line()))
            .collect::<String>()
    };
    let all: Vec<&FoundSeries> = series.iter().collect();
    let Some(choice) = choice.map(str::trim) else {
        if let [one] = series {
            return Ok(one);
        }
        return Err(refused(
            input,
            format!(
                "holds {} different series; choose one with --series UID|NUMBER \
                 (`inspect --series` lists them):{}",
                series.len(),
                list(&all)
            ),
        ));
    };
    let by_uid: Vec<&FoundSeries> = series
        .iter()
        .filter(|s| s.uid.as_deref() == Some(choice))
        .collect();
    let hits = if by_uid.is_empty() {
        let n: Option<i64> = choice.parse().ok();
        series
            .iter()
            .filter(|s| n.is_some() && s.number == n)
            .collect()
    } else {
        by_uid
    };
    let why = match hits[..] {
        [one] => return Ok(one),
        [] => format!(
            "no series of {} has this SeriesInstanceUID or Series Number; it holds:{}",
            input.display(),
            list(&all)
        ),
        _ => format!(
            "{} series of {} have this Series Number; give the SeriesInstanceUID:{}",
            hits.len(),
            input.display(),
            list(&hits)
        ),
    };
    Err(SeriesError::Choice {
        choice: choice.into(),
        why,
    })
}

/// Two files of one SOP Instance UID are one slice twice (a copy): refused, naming both.
fn check_unique_instances(files: &[Object]) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for f in files {
        let Some(uid) = f.sop_uid.as_deref() else {
            continue;
        };
        if let Some(first) = seen.insert(uid, &f.path) {
            return Err(SeriesError::Pair {
                first: first.into(),
                second: f.path.clone(),
                why: format!("one SOP Instance UID ({uid}), so one slice twice; remove the copy"),
            });
        }
    }
    Ok(())
}

/// A study's slices are read from one folder (the receiver's templates are found there
/// by name, and the derived series is written under the same names into one folder).
fn check_one_folder(files: &[Object]) -> Result<()> {
    let dir = files[0].path.parent();
    if let Some(f) = files.iter().find(|f| f.path.parent() != dir) {
        return Err(SeriesError::Pair {
            first: files[0].path.clone(),
            second: f.path.clone(),
            why: "one series in two folders; a study's slices are read from one folder (move \
                  them into one)"
                .into(),
        });
    }
    Ok(())
}

fn check_one_series(facts: &[(PathBuf, SeriesFacts)]) -> Result<()> {
    let (p0, f0) = &facts[0];
    if facts.len() > 1 {
        if let Some((p, _)) = facts.iter().find(|f| f.1.series_uid.is_none()) {
            return Err(refused(
                p,
                "has no SeriesInstanceUID, so it cannot be told to be of one series with the \
                 others"
                    .into(),
            ));
        }
    }
    for (p, f) in &facts[1..] {
        if f.series_uid != f0.series_uid {
            let uid = |u: &Option<String>| u.clone().unwrap_or_else(|| "none".into());
            return Err(SeriesError::Pair {
                first: p0.clone(),
                second: p.clone(),
                why: format!(
                    "of different series ({} and {}); a study folder holds one series",
                    uid(&f0.series_uid),
                    uid(&f.series_uid)
                ),
            });
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
