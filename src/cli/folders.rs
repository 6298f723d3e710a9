//! `add-noise` and `denoise` over a folder: a DICOM series or images, in the series' order
//! (as a study reads them: `image::series`), each output under its input's name and
//! in its input's format in a new folder, written all or none; a DICOM series goes into one
//! new derived series.

use std::path::{Path, PathBuf};

use anyhow::Result;
use ndarray::Array2;

use super::inputs::SeriesArgs;
use crate::formats::study::MAX_SLICES;
use crate::image::series::scan;
use crate::image::window::{ValueScale, WindowChoice};
use crate::image::{self, DicomTemplate, Encoding, Format, GrayImage};

/// Whether an `--image` names a folder.
pub fn is_folder(spec: &str) -> bool {
    !spec.starts_with(image::BUILTIN_PREFIX) && Path::new(spec).is_dir()
}

/// A folder's slices, in order, with each DICOM slice's template, read and checked before
/// any work.
pub struct Folder {
    slices: Vec<(PathBuf, Format, Option<DicomTemplate>)>,
    series_uid: Option<String>,
    window: WindowChoice,
}

/// What [`Folder::run`] wrote.
pub struct Written {
    pub files: Vec<PathBuf>,
    /// The derived series of a DICOM series.
    pub series_uid: Option<String>,
}

impl Folder {
    /// Lists `dir`'s slices (a DICOM series or images); a DICOM output goes in the series
    /// `series` names (one for all), described by `what`, with `derivation`.
    /// Every slice is loaded on the window `window` resolves to for it, and written back
    /// on it.
    pub fn open(
        dir: &Path,
        series: &SeriesArgs,
        what: &str,
        derivation: &str,
        window: &WindowChoice,
    ) -> Result<Folder> {
        let input = scan(dir, MAX_SLICES)?;
        // What is not an image is not this command's: said, not refused.
        for l in &input.skipped {
            eprintln!("{l}");
        }
        let derived = series.derived()?;
        let mut slices = Vec::with_capacity(input.slices.len());
        let mut dicom = false;
        for (path, format) in input.slices {
            let template = match format {
                Format::Dicom => {
                    dicom = true;
                    Some(
                        DicomTemplate::read(&path)?
                            .with_derivation(derivation)
                            .in_series(&derived, what),
                    )
                }
                _ => None,
            };
            slices.push((path, format, template));
        }
        Ok(Folder {
            slices,
            series_uid: dicom.then_some(derived.uid),
            window: window.clone(),
        })
    }

    /// Loads every slice in turn, gives it (with its index) to `each` and writes what comes
    /// back under the slice's name into the new folder `out`: a DICOM like its slice, a PNG
    /// or TIFF at `depth` of the slice.
    pub fn run(
        &self,
        out: &Path,
        depth: impl Fn(&GrayImage) -> u8,
        mut each: impl FnMut(usize, &GrayImage, &ValueScale) -> Result<Array2<f64>>,
    ) -> Result<Written> {
        let mut files = Vec::with_capacity(self.slices.len());
        crate::fileio::atomic::new_folder(out, |staging| {
            for (i, (path, format, template)) in self.slices.iter().enumerate() {
                let mut loaded = image::load_windowed(path, &self.window, false)?;
                let img = loaded.frames.remove(0);
                let enc = match (format, template) {
                    (_, Some(t)) => {
                        Encoding::Dicom(Box::new(t.clone().with_window(&self.window)?.0))
                    }
                    (Format::Tiff, None) => Encoding::Tiff(depth(&img)),
                    _ => Encoding::Png(depth(&img)),
                };
                let pixels = each(i, &img, &loaded.scale)?;
                let name = path.file_name().expect("a listed file has a name");
                enc.save(
                    &GrayImage {
                        pixels,
                        bit_depth: enc.bit_depth(),
                    },
                    staging.join(name),
                )?;
                files.push(out.join(name));
            }
            Ok(())
        })?;
        Ok(Written {
            files,
            series_uid: self.series_uid.clone(),
        })
    }
}
