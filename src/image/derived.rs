//! What a derived series says of itself, so that an archive files it beside its source and a
//! reader can tell what made it (issue 44, item 5; docs/dicom.md "The derived series").
//!
//! Every instance written for one run carries:
//! - a new Series Instance UID, a Series Number (`--series-number`; default the source's
//!   plus [`SERIES_NUMBER_OFFSET`] plus the run's own offset, 0 to 999, drawn from the new
//!   UID, moved past any number the study's known series use) and a description
//!   (`--series-description`, or the source's followed by what was done and the run's tag,
//!   `#` and 6 hex digits of the UID): a second run of the same source files a series a
//!   viewer tells apart from the first's (issue 71, item 13);
//! - Series, Content and Instance Creation Date and Time of the run (one instant for every
//!   slice of a run, in the machine's local time, as DICOM dates are);
//! - a Contributing Equipment Sequence naming ppdenoise and its version (DCM 109102,
//!   Processing Equipment) and a Derivation Code Sequence (DCM 113087, Smoothing);
//! - private attributes dropped unless kept (`--private-tags keep`): they describe the
//!   source's acquisition in ways no one can check still hold, and may hold identifiers;
//! - overlays (groups 60xx) kept when they carry their own Overlay Data (they annotate the
//!   geometry, which is unchanged), dropped with `--overlays drop`; an overlay stored in the
//!   pixel data's unused bits (retired) is dropped always, since the pixels are rewritten.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

/// A derived series' default number is its source's plus this (or this alone without one).
pub const SERIES_NUMBER_OFFSET: i64 = 1000;

/// The encoding of what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputSyntax {
    /// Explicit VR little endian, uncompressed.
    #[default]
    ExplicitLe,
    /// JPEG-LS lossless (1.2.840.10008.1.2.4.80), through CharLS.
    JpegLsLossless,
    /// JPEG 2000 lossless only (1.2.840.10008.1.2.4.90), through openjp2.
    J2kLossless,
}

impl OutputSyntax {
    /// The names `--transfer-syntax` takes.
    pub const NAMES: &'static str = "explicit-le, jpeg-ls-lossless, j2k-lossless";

    pub fn parse(s: &str) -> Result<OutputSyntax, String> {
        match s {
            "explicit-le" | "explicit" => Ok(OutputSyntax::ExplicitLe),
            "jpeg-ls-lossless" | "jpeg-ls" => Ok(OutputSyntax::JpegLsLossless),
            "j2k-lossless" | "jpeg-2000-lossless" => Ok(OutputSyntax::J2kLossless),
            _ => Err(format!(
                "{s:?} is not a transfer syntax ppdenoise writes (one of {})",
                Self::NAMES
            )),
        }
    }

    pub fn uid(self) -> &'static str {
        match self {
            OutputSyntax::ExplicitLe => uids::EXPLICIT_VR_LITTLE_ENDIAN,
            OutputSyntax::JpegLsLossless => uids::JPEGLS_LOSSLESS,
            OutputSyntax::J2kLossless => uids::JPEG2000_LOSSLESS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputSyntax::ExplicitLe => "explicit VR little endian",
            OutputSyntax::JpegLsLossless => "JPEG-LS lossless",
            OutputSyntax::J2kLossless => "JPEG 2000 lossless",
        }
    }
}

/// Whether a group of attributes is kept in what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    #[default]
    Keep,
    Drop,
}

impl Keep {
    pub fn parse(s: &str) -> Result<Keep, String> {
        match s {
            "keep" => Ok(Keep::Keep),
            "drop" => Ok(Keep::Drop),
            _ => Err(format!("{s:?}: keep or drop")),
        }
    }
}

/// The run's instant as DICOM writes it: DA `YYYYMMDD`, TM `HHMMSS.FFFFFF`, DT both and the
/// offset from UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTime {
    pub date: String,
    pub time: String,
    pub offset: String,
}

impl RunTime {
    pub fn now() -> RunTime {
        let t = chrono::Local::now();
        RunTime {
            date: t.format("%Y%m%d").to_string(),
            time: t.format("%H%M%S%.6f").to_string(),
            offset: t.format("%z").to_string(),
        }
    }

    fn datetime(&self) -> String {
        format!("{}{}{}", self.date, self.time, self.offset)
    }
}

/// One run's derived series: every instance written by the run goes in it.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedSeries {
    pub uid: String,
    /// Series Number; `None`: the source's plus [`SERIES_NUMBER_OFFSET`].
    pub number: Option<i64>,
    /// Series Description; `None`: the source's followed by what was done.
    pub description: Option<String>,
    pub when: RunTime,
    pub private_tags: Keep,
    pub overlays: Keep,
    pub syntax: OutputSyntax,
    /// The source study's series this run knows of (Series Number, Series Description):
    /// the derived series takes a number and a description none of them has.
    pub known: Vec<(Option<i64>, String)>,
}

impl DerivedSeries {
    /// A series of UID `uid` with every other choice at its default, made now.
    pub fn new(uid: impl Into<String>) -> DerivedSeries {
        DerivedSeries {
            uid: uid.into(),
            number: None,
            description: None,
            when: RunTime::now(),
            private_tags: Keep::Drop,
            overlays: Keep::Keep,
            syntax: OutputSyntax::ExplicitLe,
            known: Vec::new(),
        }
    }

    /// The run's own: a hash of its series' UID (new per run; the same for the slices of
    /// one series given `--series-uid`).
    fn run_hash(&self) -> [u8; 32] {
        *blake3::hash(self.uid.as_bytes()).as_bytes()
    }

    /// The run's tag in the description: 6 hex digits of [`Self::run_hash`].
    pub fn tag(&self) -> String {
        self.run_hash()[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The description of the series from the source's own `old` and what was done (`what`,
    /// e.g. `denoised, ffdnet-clip, sigma 20 HU`): the one given, or `old (what)` with `old`
    /// shortened to fit Series Description's 64 characters (`what` kept whole, cut only if
    /// it alone is longer).
    pub fn description_for(&self, old: &str, what: &str) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        // The run's tag, with a count when a known series has the description already.
        let mut n = 1;
        loop {
            let tag = if n == 1 {
                format!(" #{}", self.tag())
            } else {
                format!(" #{}-{n}", self.tag())
            };
            let what: String = what.chars().take(62 - tag.len()).collect();
            let room = 64 - what.chars().count() - 2 - tag.len();
            let old: String = old.chars().take(room.saturating_sub(1)).collect();
            let old = old.trim_end();
            let d = if old.is_empty() {
                format!("{what}{tag}")
            } else {
                format!("{old} ({what}){tag}")
            };
            if !self.known.iter().any(|k| k.1 == d) {
                return d;
            }
            n += 1;
        }
    }

    /// The Series Number for a source numbered `source`: the source's plus
    /// [`SERIES_NUMBER_OFFSET`] plus the run's offset (0 to 999), then the next number no
    /// known series of the study has.
    pub fn number_for(&self, source: Option<i64>) -> i64 {
        if let Some(n) = self.number {
            return n;
        }
        let h = self.run_hash();
        let offset = i64::from(u16::from_le_bytes([h[3], h[4]]) % 1000);
        // IS is a 32-bit signed integer.
        let fit = |n: i64| n.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        let mut n = fit(source
            .map_or(SERIES_NUMBER_OFFSET, |n| {
                n.saturating_add(SERIES_NUMBER_OFFSET)
            })
            .saturating_add(offset));
        let taken = |n: i64| self.known.iter().any(|k| k.0 == Some(n)) || source == Some(n);
        // Upwards; downwards from the top of IS's range.
        let (mut tries, mut step) = (0, 1);
        while taken(n) && tries < 2 * self.known.len() + 4 {
            if n == i64::from(i32::MAX) {
                step = -1;
            }
            n += step;
            tries += 1;
        }
        n
    }
}

/// The checks a `--series-description` and `--series-number` must pass (LO: 64 characters,
/// no backslash or control characters; IS: a 32-bit integer).
pub fn check_description(d: &str) -> Result<(), String> {
    if d.is_empty() || d.chars().count() > 64 {
        return Err(format!(
            "{d:?}: a Series Description has 1 to 64 characters"
        ));
    }
    if d.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(format!(
            "{d:?}: a Series Description holds no backslash or control characters"
        ));
    }
    Ok(())
}

fn str_el(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// A code sequence item: value, scheme and meaning.
fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        str_el(tags::CODE_VALUE, VR::SH, value),
        str_el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        str_el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// Marks `obj` (a copy of the source's data set) as an instance of `series` made by
/// ppdenoise: `what` is what was done (for the description), `how` what ppdenoise did (the
/// Derivation Description, and our equipment's Contribution Description). `new_series`:
/// whether the instance goes in `series` (else the source's series is kept, and only dates,
/// equipment and codes change).
pub fn stamp(
    obj: &mut InMemDicomObject,
    series: &DerivedSeries,
    (what, how): (&str, &str),
    new_series: bool,
) {
    let text = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    if new_series {
        let old = text(tags::SERIES_DESCRIPTION).unwrap_or_default();
        let number = series.number_for(text(tags::SERIES_NUMBER).and_then(|s| s.parse().ok()));
        let desc = series.description_for(&old, what);
        obj.put(str_el(tags::SERIES_INSTANCE_UID, VR::UI, &series.uid));
        obj.put(str_el(tags::SERIES_DESCRIPTION, VR::LO, &desc));
        obj.put(str_el(tags::SERIES_NUMBER, VR::IS, &number.to_string()));
        obj.put(str_el(tags::SERIES_DATE, VR::DA, &series.when.date));
        obj.put(str_el(tags::SERIES_TIME, VR::TM, &series.when.time));
    }
    let w = &series.when;
    for (d, t) in [
        (tags::CONTENT_DATE, tags::CONTENT_TIME),
        (tags::INSTANCE_CREATION_DATE, tags::INSTANCE_CREATION_TIME),
    ] {
        obj.put(str_el(d, VR::DA, &w.date));
        obj.put(str_el(t, VR::TM, &w.time));
    }
    // Ours is appended to whatever equipment contributed before (an earlier processing
    // step keeps its entry).
    let mut equipment: Vec<InMemDicomObject> = obj
        .element_opt(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items().map(|i| i.to_vec()))
        .unwrap_or_default();
    let purpose = code("109102", "DCM", "Processing Equipment");
    equipment.push(InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![purpose]),
        ),
        str_el(tags::MANUFACTURER, VR::LO, "ppdenoise"),
        str_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "ppdenoise"),
        str_el(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        str_el(tags::CONTRIBUTION_DATE_TIME, VR::DT, &w.datetime()),
        str_el(tags::CONTRIBUTION_DESCRIPTION, VR::ST, how),
    ]));
    obj.put(DataElement::new(
        tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(equipment),
    ));
    obj.put(str_el(tags::DERIVATION_DESCRIPTION, VR::ST, how));
    obj.put(DataElement::new(
        tags::DERIVATION_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![code("113087", "DCM", "Smoothing")]),
    ));
    let dropped: Vec<Tag> = obj
        .iter()
        .map(|e| e.header().tag)
        .filter(|t| {
            let private = t.0 % 2 == 1 && series.private_tags == Keep::Drop;
            let overlay = (0x6000..=0x601E).contains(&t.0)
                && t.0 % 2 == 0
                && (series.overlays == Keep::Drop
                    || obj.element_opt(Tag(t.0, 0x3000)).ok().flatten().is_none());
            private || overlay
        })
        .collect();
    for t in dropped {
        obj.remove_element(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_number_follows_the_source_and_stays_an_is() {
        let s = DerivedSeries::new("2.25.1");
        let n = s.number_for(Some(3));
        assert!((1003..2003).contains(&n), "{n}");
        assert_eq!(s.number_for(None), n - 3);
        // Never the source's own number, at the top of IS's range too.
        assert_eq!(
            s.number_for(Some(i64::from(i32::MAX))),
            i64::from(i32::MAX) - 1
        );
        let s = DerivedSeries {
            number: Some(42),
            ..s
        };
        assert_eq!(s.number_for(Some(3)), 42);
    }

    /// Issue 71, item 13: two runs of one source get series a viewer tells apart, and a
    /// run takes no number or description a known series of the study has.
    #[test]
    fn a_run_takes_a_number_and_description_no_known_series_has() {
        let (a, b) = (DerivedSeries::new("2.25.7"), DerivedSeries::new("2.25.8"));
        assert_ne!(
            a.description_for("T1", "denoised"),
            b.description_for("T1", "denoised")
        );
        assert_ne!(a.number_for(Some(5)), b.number_for(Some(5)));
        // The first run's series known to the second, whose own choice it was: moved past.
        let first = (
            Some(a.number_for(Some(5))),
            a.description_for("T1", "denoised"),
        );
        let again = DerivedSeries {
            known: vec![
                (Some(5), "T1".into()),
                first.clone(),
                (first.0.map(|n| n + 1), "x".into()),
            ],
            ..a.clone()
        };
        assert_eq!(again.number_for(Some(5)), first.0.unwrap() + 2);
        let d = again.description_for("T1", "denoised");
        assert!(
            d != first.1 && d.ends_with("-2") && d.chars().count() <= 64,
            "{d}"
        );
        let long = again.description_for(&"y".repeat(80), &"w".repeat(80));
        assert!(long.chars().count() <= 64, "{long}");
    }

    #[test]
    fn a_description_keeps_what_was_done_whole() {
        let s = DerivedSeries::new("2.25.1");
        let tag = format!(" #{}", s.tag());
        assert_eq!(s.description_for("", "denoised"), format!("denoised{tag}"));
        assert_eq!(
            s.description_for("Abdomen", "denoised"),
            format!("Abdomen (denoised){tag}")
        );
        let d = s.description_for(&"x".repeat(80), "denoised, m, sigma 20 HU");
        assert!(
            d.chars().count() <= 64 && d.ends_with(&format!("(denoised, m, sigma 20 HU){tag}")),
            "{d}"
        );
        let given = DerivedSeries {
            description: Some("Mine".into()),
            ..s
        };
        assert_eq!(given.description_for("Abdomen", "denoised"), "Mine");
        assert!(check_description(&"y".repeat(65)).is_err());
        assert!(check_description("a\\b").is_err());
        assert!(check_description("Low dose, denoised").is_ok());
    }

    #[test]
    fn private_and_pixel_overlays_are_dropped_and_separate_overlays_kept() {
        let mut obj = InMemDicomObject::from_element_iter([
            str_el(Tag(0x0009, 0x0010), VR::LO, "VENDOR"),
            str_el(Tag(0x0009, 0x1001), VR::LO, "secret"),
            DataElement::new(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(4u16)),
            DataElement::new(
                Tag(0x6000, 0x3000),
                VR::OW,
                PrimitiveValue::U16(vec![0u16].into()),
            ),
            // An overlay in the pixel data's high bits: no Overlay Data of its own.
            DataElement::new(Tag(0x6002, 0x0010), VR::US, PrimitiveValue::from(4u16)),
            str_el(tags::SERIES_NUMBER, VR::IS, "7"),
        ]);
        let s = DerivedSeries::new("2.25.5");
        stamp(&mut obj, &s, ("denoised", "Denoised by ppdenoise"), true);
        let has = |o: &InMemDicomObject, t| o.element_opt(t).ok().flatten().is_some();
        assert!(!has(&obj, Tag(0x0009, 0x1001)) && !has(&obj, Tag(0x0009, 0x0010)));
        assert!(has(&obj, Tag(0x6000, 0x3000)) && has(&obj, Tag(0x6000, 0x0010)));
        assert!(!has(&obj, Tag(0x6002, 0x0010)));
        assert_eq!(
            obj.element(tags::SERIES_NUMBER).unwrap().to_str().unwrap(),
            s.number_for(Some(7)).to_string()
        );
        let item = &obj
            .element(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            item.element(tags::MANUFACTURER).unwrap().to_str().unwrap(),
            "ppdenoise"
        );
    }
}
