//! Intensity windows: which of an image's values, in its own units, the model's 0..255 scale
//! spans, and the noise level in those units.
//!
//! A DICOM's stored values become modality values through RescaleSlope and RescaleIntercept
//! (Hounsfield units for CT). The container's bit range says nothing about where those values
//! lie: a CT's useful values span about 4096 HU inside a 16-bit container of 65536 codes, so
//! mapping the container onto 0..255 leaves the anatomy 16 levels of the model's scale and its
//! noise below one (issue 44 measured 76% of a CT's pixels ruined that way). A window `LO:HI`
//! in the image's units is mapped onto 0..255 instead. Values outside it are clipped at the
//! gateway, counted, and written back unchanged by the receiver from the DICOM it holds, so
//! air, bone and metal outside the window are never altered by the denoiser.

use std::fmt;
use std::str::FromStr;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// The units an image's values are stated in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Units {
    /// Hounsfield units: a CT (Modality CT, or a rescale of type HU).
    Hu,
    /// Modality values of a non-HU rescale (e.g. an MR's arbitrary units).
    Modality,
    /// Stored values: a DICOM without a rescale.
    Stored,
    /// Grey levels of a PNG or TIFF (0..255, or 0..65535 at 16 bits).
    Grey,
}

impl Units {
    pub fn name(self) -> &'static str {
        match self {
            Units::Hu => "HU",
            Units::Modality => "modality units",
            Units::Stored => "stored values",
            Units::Grey => "grey levels",
        }
    }
}

/// A range `lo..=hi` of values in an image's units (`lo < hi`, both finite).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub lo: f64,
    pub hi: f64,
}

/// The default window of a CT: air (-1024 HU) to dense bone and contrast (3071 HU), the
/// 4096 values a 12-bit CT stores.
pub const CT_WINDOW: Window = Window {
    lo: -1024.0,
    hi: 3071.0,
};

impl Window {
    pub fn new(lo: f64, hi: f64) -> Result<Window, String> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(format!(
                "window {lo}:{hi}: needs finite bounds with LO below HI"
            ));
        }
        Ok(Window { lo, hi })
    }

    /// Units per level of the model's 0..255 scale.
    pub fn per_level(&self) -> f64 {
        (self.hi - self.lo) / 255.0
    }

    pub fn contains(&self, v: f64) -> bool {
        (self.lo..=self.hi).contains(&v)
    }

    /// A value on the 0..255 scale, clipped to the window.
    pub fn to_scale(&self, v: f64) -> f64 {
        (v.clamp(self.lo, self.hi) - self.lo) / self.per_level()
    }

    /// The value a 0..255-scale `x` stands for (not clipped: a denoised value may overshoot
    /// the window's edge a little, and is written as it is).
    pub fn from_scale(&self, x: f64) -> f64 {
        self.lo + x * self.per_level()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.lo, self.hi)
    }
}

/// How the window of an image is chosen (`--window`).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum WindowChoice {
    /// CT: [`CT_WINDOW`]; other DICOM: [`WindowChoice::Auto`]; PNG and TIFF: their full range.
    #[default]
    Default,
    /// The container's whole bit range (what ppdenoise did before windows).
    Full,
    /// The image's own value range: robust percentiles with a margin ([`auto_window`]).
    Auto,
    /// A range given in the image's units.
    Range(Window),
    /// The window the model declares it was trained on ([`DeclaredWindow::resolve`]): a range
    /// for images in its units only.
    Declared(DeclaredWindow),
}

impl FromStr for WindowChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<WindowChoice, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "default" => return Ok(WindowChoice::Default),
            "full" => return Ok(WindowChoice::Full),
            "auto" => return Ok(WindowChoice::Auto),
            _ => {}
        }
        // The colon may follow a minus sign: split at the first colon after the first byte.
        let at = s
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ':')
            .map(|(i, _)| i)
            .ok_or_else(|| {
                format!(
                    "window {s:?}: expected LO:HI (in the image's units), auto, full or default"
                )
            })?;
        let num = |t: &str| {
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("window {s:?}: {t:?} is not a number"))
        };
        Window::new(num(&s[..at])?, num(&s[at + 1..])?).map(WindowChoice::Range)
    }
}

impl fmt::Display for WindowChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowChoice::Default => f.write_str("default"),
            WindowChoice::Full => f.write_str("full"),
            WindowChoice::Auto => f.write_str("auto"),
            WindowChoice::Range(w) => w.fmt(f),
            WindowChoice::Declared(d) => write!(f, "{} (the model's)", d.window),
        }
    }
}

/// Fraction of the values below the auto window's low percentile (and above its high one).
const AUTO_TAIL: f64 = 0.001;
/// Margin added on each side of the percentiles, as a fraction of their distance: room for
/// the noise and for what the slice's neighbours hold.
const AUTO_MARGIN: f64 = 0.1;

/// The auto window of `values` (an image's, in its units): the 0.1st and 99.9th percentiles
/// widened by 10% of their distance on each side, never past the values' own extremes. A
/// constant image gets a window of one unit around its value.
pub fn auto_window(values: &[f64]) -> Option<Window> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (p_lo, p_hi) = (at(AUTO_TAIL), at(1.0 - AUTO_TAIL));
    let margin = (p_hi - p_lo) * AUTO_MARGIN;
    let (lo, hi) = (
        (p_lo - margin).max(v[0]),
        (p_hi + margin).min(v[v.len() - 1]),
    );
    if lo < hi {
        Window::new(lo, hi).ok()
    } else {
        Window::new(lo - 0.5, lo + 0.5).ok()
    }
}

/// A noise level as given on the command line (`--sigma`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sigma {
    /// On the model's 0..255 scale (a plain number): a PNG's or TIFF's grey levels; refused
    /// for a DICOM, whose 0..255 scale is a fraction of a window, not a unit.
    Scale(f64),
    /// In Hounsfield units (`20HU`): CT only.
    Hu(f64),
    /// In stored values (`20SV`): the file's own codes.
    Stored(f64),
    /// Estimated by the gateway from each image ([`super::noise_estimate`]).
    Auto,
}

/// What `--sigma` takes, for errors that list the choices.
pub const SIGMA_FORMS: &str = "a number on the model's 0..255 scale (e.g. 25; PNG and TIFF \
     only), a level in Hounsfield units (e.g. 20HU, CT only), in stored values (e.g. 20SV), or \
     auto (estimated from each image)";

impl FromStr for Sigma {
    type Err = String;

    fn from_str(s: &str) -> Result<Sigma, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Sigma::Auto);
        }
        let upper = t.to_ascii_uppercase();
        let (num, make): (&str, fn(f64) -> Sigma) = if let Some(n) = upper.strip_suffix("HU") {
            (n, Sigma::Hu)
        } else if let Some(n) = upper.strip_suffix("SV") {
            (n, Sigma::Stored)
        } else {
            (upper.as_str(), Sigma::Scale)
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("--sigma {s:?}: expected {SIGMA_FORMS}"))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("--sigma {s:?}: must be a positive, finite level"));
        }
        Ok(make(v))
    }
}

impl fmt::Display for Sigma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sigma::Scale(v) => write!(f, "{v}"),
            Sigma::Hu(v) => write!(f, "{v}HU"),
            Sigma::Stored(v) => write!(f, "{v}SV"),
            Sigma::Auto => f.write_str("auto"),
        }
    }
}

/// The key of a model's declared window: in a `.safetensors` or ONNX file's metadata and in
/// the public model header (`"-160:240 HU"`); a `.npz` holds it as `window_hu`,
/// `window_modality` or `window_stored`, an array `[lo, hi]` ([`DeclaredWindow::NPZ_KEYS`]).
pub const MODEL_WINDOW: &str = "window";

/// The window, in an image's units, a model was trained on, declared by its owner in the
/// model file: the gateway maps images with it unless told otherwise
/// ([`DeclaredWindow::resolve`]). A model trained on a CT's soft tissue (-160:240 HU) given
/// the default -1024:3071 HU would see its noise ten times smaller than it learned it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeclaredWindow {
    pub window: Window,
    /// HU, modality values or stored values (a PNG's grey levels take no window).
    pub units: Units,
}

impl DeclaredWindow {
    /// The `.npz` entries that may hold a declared window, one per kind of units.
    pub const NPZ_KEYS: [(&'static str, Units); 3] = [
        ("window_hu", Units::Hu),
        ("window_modality", Units::Modality),
        ("window_stored", Units::Stored),
    ];

    /// The declaration from a `.npz` entry `[lo, hi]` in `units`.
    pub fn from_pair(values: &[f64], units: Units) -> Result<DeclaredWindow, String> {
        match values {
            [lo, hi] => Ok(DeclaredWindow {
                window: Window::new(*lo, *hi)?,
                units,
            }),
            _ => Err(format!(
                "holds {} values; expected two, [lo, hi] in {}",
                values.len(),
                units.name()
            )),
        }
    }

    /// The `.npz` entry name of this declaration.
    pub fn npz_key(&self) -> &'static str {
        Self::NPZ_KEYS
            .iter()
            .find(|(_, u)| *u == self.units)
            .map(|(k, _)| *k)
            .expect("a declared window's units have an npz key")
    }

    /// The window `--window` asks for (`choice`), given a model that declares `declared`
    /// (named `model`): the declaration when `--window` says nothing or repeats it; another
    /// one refused unless `overridden` (`--override-model-window`).
    pub fn resolve(
        declared: Option<&DeclaredWindow>,
        choice: &WindowChoice,
        overridden: bool,
        model: &str,
    ) -> Result<WindowChoice, String> {
        let Some(d) = declared else {
            return Ok(choice.clone());
        };
        match choice {
            _ if overridden => Ok(choice.clone()),
            WindowChoice::Default => Ok(WindowChoice::Declared(*d)),
            WindowChoice::Range(w) if *w == d.window => Ok(WindowChoice::Declared(*d)),
            other => Err(format!(
                "--window {other}: {model} declares the window it was trained on, {d}; its \
                 results hold for that window only (leave --window out to use it, or give \
                 --override-model-window to map the images another way)"
            )),
        }
    }

    /// Whether an image whose values are in `units` is in this declaration's units.
    pub fn check_units(&self, units: Units) -> Result<(), String> {
        if units == self.units {
            return Ok(());
        }
        Err(format!(
            "its values are {}, but the model was trained on a window of {} ({self}): it is \
             not a model for this image (--override-model-window with a --window in the \
             image's units maps it anyway)",
            units.name(),
            self.units.name()
        ))
    }
}

impl FromStr for DeclaredWindow {
    type Err = String;

    /// `LO:HI UNITS`: units `HU`, `modality` or `stored` (or `SV`).
    fn from_str(s: &str) -> Result<DeclaredWindow, String> {
        let expected = "expected \"LO:HI UNITS\" with UNITS HU, modality or stored (e.g. \
                        \"-160:240 HU\")";
        let (range, units) = s
            .trim()
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("is {s:?}; {expected}"))?;
        let units = match units.to_ascii_lowercase().as_str() {
            "hu" => Units::Hu,
            "modality" => Units::Modality,
            "stored" | "sv" => Units::Stored,
            _ => return Err(format!("is {s:?}: unknown units {units:?}; {expected}")),
        };
        match range.parse::<WindowChoice>() {
            Ok(WindowChoice::Range(window)) => Ok(DeclaredWindow { window, units }),
            Ok(_) => Err(format!(
                "is {s:?}: a declared window is a range; {expected}"
            )),
            Err(e) => Err(format!("is {s:?}: {e}")),
        }
    }
}

impl fmt::Display for DeclaredWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = match self.units {
            Units::Hu => "HU",
            Units::Modality => "modality",
            Units::Stored => "stored",
            Units::Grey => "grey",
        };
        write!(f, "{} {units}", self.window)
    }
}

/// How an image's 0..255 values relate to its own units: what a window choice resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueScale {
    pub units: Units,
    /// In `units`; the model's 0..255 spans it.
    pub window: Window,
    /// Units per stored value (RescaleSlope; 1 without a rescale).
    pub slope: f64,
    /// Pixels whose value lay outside the window (clipped for the model).
    pub clipped: usize,
    pub pixels: usize,
    /// The window was derived from the image's values (`auto`): then so is any level
    /// stated in the image's units on it, and neither may be public.
    #[serde(default)]
    pub derived: bool,
}

impl ValueScale {
    /// The full range of a PNG or TIFF of `bit_depth` bits, in its grey levels.
    pub fn grey(bit_depth: u8, pixels: usize) -> ValueScale {
        ValueScale::grey_to(if bit_depth > 8 { 65535.0 } else { 255.0 }, pixels)
    }

    /// [`ValueScale::grey`] of values stored from 0 to `top` (a 12-bit colour DICOM: 4095).
    pub fn grey_to(top: f64, pixels: usize) -> ValueScale {
        ValueScale {
            units: Units::Grey,
            window: Window { lo: 0.0, hi: top },
            slope: 1.0,
            clipped: 0,
            pixels,
            derived: false,
        }
    }

    /// Whether noise level `sigma` on this scale is derived from the image's pixels: an
    /// estimate, or a level in the image's units on a window derived from them.
    pub fn private_level(&self, sigma: Sigma) -> bool {
        match sigma {
            Sigma::Auto => true,
            Sigma::Scale(_) => false,
            Sigma::Hu(_) | Sigma::Stored(_) => self.derived,
        }
    }

    /// The noise the image `pixels` (on the 0..255 scale) holds, estimated on that scale;
    /// None where none can be (an image under 8 x 8, or none at all). Clipped pixels are flat
    /// at the window's limits: left out.
    pub fn estimate(&self, pixels: &Array2<f64>) -> Option<f64> {
        use crate::image::noise_estimate::{estimate_sigma, estimate_sigma_inside};
        if self.clipped > 0 {
            estimate_sigma_inside(pixels, 0.0, 255.0)
        } else {
            estimate_sigma(pixels)
        }
        .filter(|s| *s > 0.0)
    }

    /// Why a bare `--sigma v` is refused for an image with units of its own, with the fix.
    fn bare_level(&self, v: f64) -> String {
        let (units, own) = match self.units {
            Units::Hu => ("HU", format!("--sigma {v}HU if you meant {v} HU, ")),
            _ => (self.units.name(), String::new()),
        };
        format!(
            "--sigma {v}: a bare number is a level on the model's 0..255 scale, which on this \
             image's window ({} {units}) is {:.1} {units}; a DICOM image's noise level is given \
             in its own units: {own}--sigma {v}SV in stored values, or --sigma auto to estimate \
             it from each image",
            self.window,
            self.in_units(v)
        )
    }

    /// A 0..255-scale level in the image's units.
    pub fn in_units(&self, level: f64) -> f64 {
        level * self.window.per_level()
    }

    /// `sigma` on the 0..255 scale for the image `pixels` (on that scale already), or why it
    /// cannot be. `auto` runs the estimator on the pixels.
    pub fn level_of(&self, sigma: Sigma, pixels: &Array2<f64>) -> Result<f64, String> {
        let level = match sigma {
            Sigma::Scale(v) if self.units == Units::Grey => v,
            // A bare number on a DICOM's 0..255 scale is a window's fraction, not a noise
            // level anyone measures: a CT's `20` is 321 HU, which smooths the image flat.
            Sigma::Scale(v) => return Err(self.bare_level(v)),
            Sigma::Hu(v) if self.units == Units::Hu => v / self.window.per_level(),
            Sigma::Hu(v) => {
                return Err(format!(
                    "--sigma {v}HU: this image is not a CT (its values are {}); give the level \
                     in stored values (e.g. {v}SV), on the 0..255 scale, or auto",
                    self.units.name()
                ))
            }
            Sigma::Stored(v) => v * self.slope.abs() / self.window.per_level(),
            Sigma::Auto => self.estimate(pixels).ok_or_else(|| {
                if self.clipped > 0 {
                    "--sigma auto: no noise could be estimated inside the window; give the level"
                        .to_string()
                } else {
                    "--sigma auto: no noise could be estimated (an image under 8 x 8 pixels, or \
                     one without noise); give the level"
                        .to_string()
                }
            })?,
        };
        if !(level.is_finite() && level > 0.0) {
            return Err(format!(
                "--sigma {sigma}: gives level {level} on the 0..255 scale"
            ));
        }
        Ok(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_windows_parse_resolve_and_refuse_conflicts() {
        let d: DeclaredWindow = "-160:240 HU".parse().unwrap();
        assert_eq!(d.window, Window::new(-160.0, 240.0).unwrap());
        assert_eq!(d.units, Units::Hu);
        assert_eq!(d.to_string().parse::<DeclaredWindow>().unwrap(), d);
        assert_eq!(
            "0:4000 SV".parse::<DeclaredWindow>().unwrap().units,
            Units::Stored
        );
        for bad in [
            "-160:240",
            "-160:240 grey",
            "auto HU",
            "240:-160 HU",
            "a:b HU",
            "",
        ] {
            assert!(bad.parse::<DeclaredWindow>().is_err(), "{bad:?} accepted");
        }
        let soft = WindowChoice::Range(d.window);
        let r = |c: &WindowChoice, o| DeclaredWindow::resolve(Some(&d), c, o, "ct-model");
        assert_eq!(
            r(&WindowChoice::Default, false).unwrap(),
            WindowChoice::Declared(d)
        );
        assert_eq!(r(&soft, false).unwrap(), WindowChoice::Declared(d));
        for other in [
            WindowChoice::Auto,
            WindowChoice::Full,
            WindowChoice::Range(CT_WINDOW),
        ] {
            let e = r(&other, false).unwrap_err();
            assert!(
                e.contains("ct-model") && e.contains("-160:240 HU") && e.contains("--override"),
                "{e}"
            );
            assert_eq!(r(&other, true).unwrap(), other);
        }
        assert_eq!(
            DeclaredWindow::resolve(None, &WindowChoice::Auto, false, "m").unwrap(),
            WindowChoice::Auto
        );
        assert!(d.check_units(Units::Hu).is_ok());
        let e = d.check_units(Units::Modality).unwrap_err();
        assert!(
            e.contains("modality units") && e.contains("-160:240 HU"),
            "{e}"
        );
        assert_eq!(
            DeclaredWindow::from_pair(&[-160.0, 240.0], Units::Hu).unwrap(),
            d
        );
        assert!(DeclaredWindow::from_pair(&[1.0], Units::Hu).is_err());
        assert!(DeclaredWindow::from_pair(&[2.0, 1.0], Units::Hu).is_err());
    }

    #[test]
    fn windows_parse_with_negative_bounds_and_refuse_nonsense() {
        assert_eq!(
            "-1024:3071".parse::<WindowChoice>().unwrap(),
            WindowChoice::Range(CT_WINDOW)
        );
        assert_eq!(
            "-160:-40".parse::<WindowChoice>().unwrap(),
            WindowChoice::Range(Window {
                lo: -160.0,
                hi: -40.0
            })
        );
        assert_eq!("AUTO".parse::<WindowChoice>().unwrap(), WindowChoice::Auto);
        assert_eq!("full".parse::<WindowChoice>().unwrap(), WindowChoice::Full);
        for bad in ["5:5", "7:3", "a:3", "300", "nan:4", ":4"] {
            assert!(bad.parse::<WindowChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_maps_onto_the_scale_clips_and_maps_back() {
        let w = CT_WINDOW;
        assert_eq!(w.to_scale(-1024.0), 0.0);
        assert_eq!(w.to_scale(3071.0), 255.0);
        assert_eq!(w.to_scale(-3000.0), 0.0);
        assert_eq!(w.to_scale(9000.0), 255.0);
        for v in [-1000.0, -1.0, 0.0, 40.0, 2500.0] {
            assert!((w.from_scale(w.to_scale(v)) - v).abs() < 1e-9);
        }
    }

    #[test]
    fn sigmas_parse_in_their_units_and_convert() {
        assert_eq!("25".parse::<Sigma>().unwrap(), Sigma::Scale(25.0));
        assert_eq!("20HU".parse::<Sigma>().unwrap(), Sigma::Hu(20.0));
        assert_eq!("12.5sv".parse::<Sigma>().unwrap(), Sigma::Stored(12.5));
        assert_eq!("auto".parse::<Sigma>().unwrap(), Sigma::Auto);
        for bad in ["0", "-3", "1e-400", "inf", "20XY", "HU", ""] {
            assert!(bad.parse::<Sigma>().is_err(), "{bad}");
        }
        let ct = ValueScale {
            units: Units::Hu,
            window: CT_WINDOW,
            slope: 2.0,
            clipped: 0,
            pixels: 1,
            derived: false,
        };
        let px = Array2::zeros((1, 1));
        let l = ct.level_of(Sigma::Hu(20.0), &px).unwrap();
        assert!((l - 20.0 * 255.0 / 4095.0).abs() < 1e-12);
        assert!((ct.in_units(l) - 20.0).abs() < 1e-9);
        // A stored value is two HU at slope 2.
        assert!((ct.level_of(Sigma::Stored(10.0), &px).unwrap() - l).abs() < 1e-12);
        let mr = ValueScale {
            units: Units::Modality,
            ..ct
        };
        assert!(mr
            .level_of(Sigma::Hu(20.0), &px)
            .unwrap_err()
            .contains("not a CT"));
    }

    /// A bare number is a DICOM's window fraction: on a CT's default window `20` is 321 HU,
    /// which is how a CT came back smoothed flat. Refused with the fix; a PNG's grey levels
    /// are its own units, so there it stands.
    #[test]
    fn a_bare_level_is_refused_for_an_image_with_units() {
        let px = Array2::zeros((1, 1));
        let ct = ValueScale {
            units: Units::Hu,
            window: CT_WINDOW,
            slope: 1.0,
            clipped: 0,
            pixels: 1,
            derived: false,
        };
        let e = ct.level_of(Sigma::Scale(20.0), &px).unwrap_err();
        for want in ["321.2 HU", "--sigma 20HU", "--sigma 20SV", "--sigma auto"] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let mr = ValueScale {
            units: Units::Modality,
            ..ct
        };
        let e = mr.level_of(Sigma::Scale(20.0), &px).unwrap_err();
        assert!(e.contains("--sigma 20SV") && !e.contains("HU"), "{e}");
        let png = ValueScale::grey(8, 1);
        assert_eq!(png.level_of(Sigma::Scale(20.0), &px).unwrap(), 20.0);
    }

    #[test]
    fn the_auto_window_is_robust_to_a_few_outliers() {
        let mut v: Vec<f64> = (0..10_000).map(|i| f64::from(i % 1000)).collect();
        v.extend([-30_000.0, 60_000.0]);
        let w = auto_window(&v).unwrap();
        assert!(w.lo < 0.0 && w.lo > -150.0, "{w}");
        assert!(w.hi > 999.0 && w.hi < 1150.0, "{w}");
        // Never past the values' own extremes; a constant image still gets a window.
        let w = auto_window(&[5.0; 100]).unwrap();
        assert_eq!((w.lo, w.hi), (4.5, 5.5));
        assert!(auto_window(&[]).is_none());
    }
}
