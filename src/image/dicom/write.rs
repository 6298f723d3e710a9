//! The writer: a [`DicomTemplate`] (the `--like` file, read up to its pixel data and checked
//! like an input) and the derived DICOM written like it, gray or colour. Apart because it is
//! the one job that makes a data set rather than reads one.

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ndarray::Array2;

use super::attributes::{layout_of, new_uid, str_attr, Layout};
use super::compress;
use super::intensity::{intensity, Intensity};
use super::parse::parse;
use super::pixels::decode_all;
use super::{corrupt, unsupported};
use crate::image::derived::{self, DerivedSeries, OutputSyntax};
use crate::image::window::{Units, Window, WindowChoice};
use crate::image::{ColourImage, Format, GrayImage, ImageError};

/// A DICOM whose attributes and pixel layout an output takes (`--like`): read once, up to
/// its pixel data, and checked like an input.
#[derive(Debug, Clone)]
pub struct DicomTemplate {
    path: PathBuf,
    obj: InMemDicomObject,
    layout: Layout,
    derivation: String,
    /// A derived series the output goes in, and what was done (for its description),
    /// instead of the template's own series.
    series: Option<(DerivedSeries, String)>,
    intensity: Intensity,
    /// The window the pixels to write are on, with the template's own stored values (every
    /// frame's, in order): what the window clipped is written back from them. `None`: the
    /// container's full range.
    window: Option<(Window, Vec<i32>)>,
}

/// Where a slice sits in its series: what orders a folder of slices.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesFacts {
    pub series_uid: Option<String>,
    pub instance: Option<i64>,
    /// ImagePositionPatient along the slice normal (from ImageOrientationPatient).
    pub position: Option<f64>,
}

impl DicomTemplate {
    /// Reads and checks the template at `path`: a grayscale DICOM as [`crate::image::load`] (or,
    /// of several frames, [`crate::image::load_frames`]) takes; its pixel data is neither read nor
    /// needed.
    pub fn read(path: impl AsRef<Path>) -> Result<DicomTemplate, ImageError> {
        let path = path.as_ref();
        DicomTemplate::from_bytes(&crate::image::read_file(path)?, path)
    }

    /// [`Self::read`] of a file's bytes, already read (`path` names them in errors, and is
    /// where [`Self::with_window`] would read them again).
    fn from_bytes(bytes: &[u8], path: &Path) -> Result<DicomTemplate, ImageError> {
        if Format::sniff(bytes) != Some(Format::Dicom) {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                format: Format::Dicom,
                detail: "not a DICOM file (no DICM at byte 128); a DICOM output is written \
                         like a DICOM input"
                    .into(),
            });
        }
        let obj = parse(bytes, path, false)?;
        // A colour template is written by [`Self::encode_colour`] only.
        let layout = layout_of(&obj, path, true)?;
        let intensity = intensity(&obj, &layout, path)?;
        Ok(DicomTemplate {
            path: path.to_path_buf(),
            obj: obj.into_inner(),
            layout,
            derivation: "Processed by ppdenoise".into(),
            series: None,
            intensity,
            window: None,
        })
    }

    /// The template's own pixels on the window [`Self::with_window`] set, frame by frame
    /// (`None` without one): the noisy image the receiver holds, to check a result against.
    pub fn windowed_frames(&self) -> Option<Vec<Array2<f64>>> {
        let (w, stored) = self.window.as_ref()?;
        let l = &self.layout;
        Some(
            stored
                .chunks_exact(l.rows * l.cols)
                .map(|f| {
                    let v = f.iter().map(|&t| self.intensity.to_scale(t, w)).collect();
                    Array2::from_shape_vec((l.rows, l.cols), v).expect("sized from the layout")
                })
                .collect(),
        )
    }

    /// A noise level of `level` on the 0..255 scale of the window [`Self::with_window`]
    /// set, in the image's units as `--sigma` takes them (`20 HU`, `40 SV`); `None` without
    /// a window.
    pub fn sigma_words(&self, level: f64) -> Option<String> {
        let (w, _) = self.window.as_ref()?;
        let v = level * w.per_level();
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Some(match self.intensity.units() {
            Units::Hu => format!("{} HU", round(v)),
            _ => format!("{} SV", round(v / self.intensity.slope)),
        })
    }

    /// The template's rescale and modality.
    pub fn intensity(&self) -> &Intensity {
        &self.intensity
    }

    /// What is written is on the window `choice` resolves to for the template's own pixels
    /// (the image the gateway shared, so the same window), and the pixels that window
    /// clipped are written back from the template unchanged. Reads the template's pixels
    /// (once, here); the window it resolved to comes back with the template.
    pub fn with_window(
        mut self,
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        if *choice == WindowChoice::Full {
            self.window = None;
            return Ok((self, None));
        }
        let bytes = crate::image::read_file(&self.path)?;
        self.window_of(&bytes, choice)
    }

    /// The template of a file's `bytes`, already read (e.g. hashed, to compare with what was
    /// shared), on the window `choice` resolves to ([`Self::with_window`]): the header and
    /// the pixels both come from these bytes, never from the file opened again, so what was
    /// checked is what is used. `path` names the file in errors.
    pub fn from_bytes_windowed(
        bytes: &[u8],
        path: &Path,
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        let t = DicomTemplate::from_bytes(bytes, path)?;
        if *choice == WindowChoice::Full {
            return Ok((t, None));
        }
        t.window_of(bytes, choice)
    }

    /// [`Self::with_window`] with the file's bytes given.
    fn window_of(
        mut self,
        bytes: &[u8],
        choice: &WindowChoice,
    ) -> Result<(DicomTemplate, Option<Window>), ImageError> {
        let (frames, intensity) = decode_all(bytes, &self.path, true)?;
        let same = frames.len() == self.layout.frames
            && frames
                .iter()
                .all(|f| f.pixels.dim() == (self.layout.rows, self.layout.cols));
        if intensity != self.intensity || !same {
            return Err(corrupt(&self.path, "the file changed while it was read"));
        }
        let stored = intensity.stored_of_frames(&frames);
        let window = intensity
            .resolve(choice, &stored)
            .map_err(|e| unsupported(&self.path, e))?;
        self.window = window.map(|w| (w, stored));
        Ok((self, window))
    }

    /// Puts what is written in the derived series `series` (one per run, shared by a study's
    /// slices) instead of the template's series, described by what was done (`what`, e.g.
    /// `denoised, ffdnet-clip, sigma 25`) unless the series has its own description.
    pub fn in_series(mut self, series: &DerivedSeries, what: &str) -> DicomTemplate {
        self.series = Some((series.clone(), what.to_string()));
        self
    }

    /// The slice's series, instance number and position along the slice normal.
    pub fn series_facts(&self) -> SeriesFacts {
        let floats = |tag| {
            self.obj
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_float64().ok())
                .filter(|v| v.iter().all(|x| x.is_finite()))
        };
        let position = match (
            floats(tags::IMAGE_POSITION_PATIENT),
            floats(tags::IMAGE_ORIENTATION_PATIENT),
        ) {
            (Some(p), Some(o)) if p.len() == 3 && o.len() == 6 => {
                let n = [
                    o[1] * o[5] - o[2] * o[4],
                    o[2] * o[3] - o[0] * o[5],
                    o[0] * o[4] - o[1] * o[3],
                ];
                Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
            }
            _ => None,
        };
        SeriesFacts {
            series_uid: str_attr(&self.obj, tags::SERIES_INSTANCE_UID).filter(|s| !s.is_empty()),
            instance: str_attr(&self.obj, tags::INSTANCE_NUMBER).and_then(|s| s.parse().ok()),
            position,
        }
    }

    /// Sets the Derivation Description of what is written (up to 1024 characters kept).
    pub fn with_derivation(mut self, text: impl Into<String>) -> DicomTemplate {
        self.derivation = text.into().chars().take(1024).collect();
        self
    }

    /// Whether the template is a colour image (written by [`Self::encode_colour`]).
    pub fn is_colour(&self) -> bool {
        self.layout.colour.is_some()
    }

    /// The template's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// BitsStored of the template (and of what is written).
    pub fn bits_stored(&self) -> u16 {
        self.layout.bits_stored
    }

    /// Rows and columns.
    pub fn dim(&self) -> (usize, usize) {
        (self.layout.rows, self.layout.cols)
    }

    /// What a file written like this template holds for `pixels`, on the 0..255 scale.
    pub fn quantize(&self, pixels: &Array2<f64>) -> Array2<f64> {
        let l = &self.layout;
        match &self.window {
            None => pixels.mapv(|x| l.scale_of(l.stored_of(x))),
            // One frame's worth: the first frame's template values.
            Some((w, stored)) if stored.len() >= pixels.len() => {
                let i = &self.intensity;
                let mut out = pixels.clone();
                for (x, &t) in out.iter_mut().zip(stored) {
                    *x = i.to_scale(i.stored_for(*x, w, t), w);
                }
                out
            }
            Some(_) => pixels.mapv(|x| l.scale_of(l.stored_of(x))),
        }
    }

    /// How many frames the template has (and an output like it must have).
    pub fn frames(&self) -> usize {
        self.layout.frames
    }

    /// Encodes `frames` (checked by the caller: no NaN), one per frame of the template, as a
    /// derived DICOM of this template.
    pub(in crate::image) fn encode(
        &self,
        frames: &[GrayImage],
        path: &Path,
    ) -> Result<Vec<u8>, ImageError> {
        let l = &self.layout;
        let fail = |detail: String| ImageError::Encode {
            path: path.to_path_buf(),
            format: Format::Dicom,
            detail,
        };
        if l.colour.is_some() {
            return Err(fail(format!(
                "the template {} is a colour image; the image written is gray",
                self.path.display()
            )));
        }
        if frames.len() != l.frames {
            return Err(fail(format!(
                "{} image(s) for the {} frame(s) of the template {}",
                frames.len(),
                l.frames,
                self.path.display()
            )));
        }
        if let Some(img) = frames.iter().find(|f| f.pixels.dim() != (l.rows, l.cols)) {
            return Err(fail(format!(
                "the image is {} x {} pixels but the template {} is {} x {}",
                img.height(),
                img.width(),
                self.path.display(),
                l.rows,
                l.cols
            )));
        }
        let (mut obj, sop_class, sop_instance) = self.derived_object();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(us(tags::BITS_ALLOCATED, l.bits_allocated));
        obj.put(us(tags::BITS_STORED, l.bits_stored));
        obj.put(us(tags::HIGH_BIT, l.bits_stored - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, u16::from(l.signed)));
        let stored: Vec<i32> = match &self.window {
            None => frames
                .iter()
                .flat_map(|f| f.pixels.iter())
                .map(|&x| l.stored_of(x))
                .collect(),
            Some((w, template)) => frames
                .iter()
                .flat_map(|f| f.pixels.iter())
                .zip(template)
                .map(|(&x, &t)| self.intensity.stored_for(x, w, t))
                .collect(),
        };
        let syntax = self
            .series
            .as_ref()
            .map_or(OutputSyntax::ExplicitLe, |(s, _)| s.syntax);
        let samples = compress::Samples {
            rows: l.rows,
            cols: l.cols,
            frames: l.frames,
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            signed: l.signed,
            stored: &stored,
        };
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.unwrap_or_default())
            .media_storage_sop_instance_uid(sop_instance);
        compress::write(obj, &samples, syntax, meta).map_err(fail)
    }

    /// Encodes colour images (one per frame of the template, checked by the caller: no NaN)
    /// as a derived DICOM of this colour template: the derived attributes of
    /// [`Self::encode`], and the pixels as RGB, PlanarConfiguration 0, at the template's bits
    /// allocated and stored (8 for every YBR form), explicit VR little endian: a form any
    /// colour viewer reads, whatever the source's (a lossy JPEG is not encoded again; its
    /// Lossy Image Compression flag is kept). A multi-frame template takes all its frames.
    pub(in crate::image) fn encode_colour(
        &self,
        frames: &[ColourImage],
        path: &Path,
    ) -> Result<Vec<u8>, ImageError> {
        let l = &self.layout;
        let fail = |detail: String| ImageError::Encode {
            path: path.to_path_buf(),
            format: Format::Dicom,
            detail,
        };
        if l.colour.is_none() {
            return Err(fail(format!(
                "the template {} is a gray image; the image written is colour",
                self.path.display()
            )));
        }
        if l.frames != frames.len() {
            return Err(fail(format!(
                "{} colour image(s) for the {} frame(s) of the template {}",
                frames.len(),
                l.frames,
                self.path.display()
            )));
        }
        if let Some(img) = frames
            .iter()
            .find(|img| (img.height(), img.width()) != (l.rows, l.cols))
        {
            return Err(fail(format!(
                "the image is {} x {} pixels but the template {} is {} x {}",
                img.height(),
                img.width(),
                self.path.display(),
                l.rows,
                l.cols
            )));
        }
        let syntax = self
            .series
            .as_ref()
            .map_or(OutputSyntax::ExplicitLe, |(s, _)| s.syntax);
        if syntax != OutputSyntax::ExplicitLe {
            return Err(fail(
                "a colour DICOM is written uncompressed (explicit VR little endian); leave \
                 --transfer-syntax out"
                    .into(),
            ));
        }
        let (mut obj, sop_class, sop_instance) = self.derived_object();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 3));
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
        obj.put(us(tags::PLANAR_CONFIGURATION, 0));
        obj.put(us(tags::BITS_ALLOCATED, l.bits_allocated));
        obj.put(us(tags::BITS_STORED, l.bits_stored));
        obj.put(us(tags::HIGH_BIT, l.bits_stored - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        let (h, w) = (l.rows, l.cols);
        // Frame after frame, R G B pixel by pixel, as rows of 3w samples.
        let stored: Vec<i32> = frames
            .iter()
            .flat_map(|img| {
                (0..h * w * 3).map(move |k| {
                    let (i, c) = (k / 3, k % 3);
                    l.stored_of(img.planes[[c * h + i / w, i % w]])
                })
            })
            .collect();
        let samples = compress::Samples {
            rows: h,
            cols: w * 3,
            frames: frames.len(),
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            signed: false,
            stored: &stored,
        };
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class.unwrap_or_default())
            .media_storage_sop_instance_uid(sop_instance);
        compress::write(obj, &samples, OutputSyntax::ExplicitLe, meta).map_err(fail)
    }

    /// The template's data set as a derived image's (new SOP instance, DERIVED\SECONDARY,
    /// Source Image Sequence, the derived series, stale attributes dropped), pixel
    /// attributes and data still the template's; with its SOP class and new SOP instance.
    fn derived_object(&self) -> (InMemDicomObject, Option<String>, String) {
        let mut obj = self.obj.clone();
        let sop_instance = new_uid();
        let sop_class = str_attr(&obj, tags::SOP_CLASS_UID);
        let source_instance = str_attr(&obj, tags::SOP_INSTANCE_UID);
        if let (Some(class), Some(instance)) = (&sop_class, &source_instance) {
            let item = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(class.as_str()),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(instance.as_str()),
                ),
            ]);
            obj.put(DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        }
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance.as_str()),
        ));
        let mut image_type = vec!["DERIVED".to_string(), "SECONDARY".to_string()];
        if let Some(e) = obj.element_opt(tags::IMAGE_TYPE).ok().flatten() {
            if let Ok(old) = e.to_multi_str() {
                image_type.extend(old.iter().skip(2).map(|s| s.trim().to_string()));
            }
        }
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(image_type.into_iter().collect()),
        ));
        let how = self.derivation.as_str();
        match &self.series {
            Some((series, what)) => derived::stamp(&mut obj, series, (what, how), true),
            None => derived::stamp(&mut obj, &DerivedSeries::new(""), ("", how), false),
        }
        // No longer true of the new pixels, or of the new encoding; group lengths (retired)
        // would be stale.
        let stale: Vec<Tag> = obj
            .iter()
            .map(|e| e.header().tag)
            .filter(|t| {
                t.1 == 0x0000
                    || [
                        tags::SMALLEST_IMAGE_PIXEL_VALUE,
                        tags::LARGEST_IMAGE_PIXEL_VALUE,
                        tags::EXTENDED_OFFSET_TABLE,
                        tags::EXTENDED_OFFSET_TABLE_LENGTHS,
                    ]
                    .contains(t)
            })
            .collect();
        for t in stale {
            obj.remove_element(t);
        }
        (obj, sop_class, sop_instance)
    }
}
