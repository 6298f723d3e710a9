//! What a gray pipeline does with a colour PNG or TIFF: refuse it by name unless the command
//! line said `--as-gray`, which converts it to its BT.601 luma and is reported in the
//! command's summary. The choice is the process's (one command per process), so that every
//! loader, deep in whichever command, follows the one flag without its own copy of it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static AS_GRAY: AtomicBool = AtomicBool::new(false);
static CONVERTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sets this process's choice (the `--as-gray` flag) and forgets earlier conversions.
pub fn set_as_gray(on: bool) {
    AS_GRAY.store(on, Ordering::SeqCst);
    CONVERTED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Whether colour images are converted to luma rather than refused.
pub fn as_gray() -> bool {
    AS_GRAY.load(Ordering::SeqCst)
}

/// Notes that `path` (a colour image of `kind`) was converted, for the summary.
pub(super) fn record(path: &Path, kind: &str) {
    // Luma has no alpha: what an RGBA image loses is said, not left to be noticed.
    let lost = if kind.starts_with("RGBA") {
        "; its alpha dropped"
    } else {
        ""
    };
    CONVERTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{} ({kind}{lost})", path.display()));
}

/// The colour files converted since [`set_as_gray`], each once, in the order first read.
pub fn converted() -> Vec<String> {
    let mut seen = Vec::new();
    for f in CONVERTED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if !seen.contains(f) {
            seen.push(f.clone());
        }
    }
    seen
}

/// A decoder's colour type in words (`RGB, 8 bits`), or `None` for gray (with or without
/// alpha), which a gray model takes as it is.
pub(super) fn kind(c: ::image::ColorType) -> Option<String> {
    use ::image::ColorType as C;
    let (name, bits) = match c {
        C::L8 | C::La8 | C::L16 | C::La16 => return None,
        C::Rgb8 => ("RGB", 8),
        C::Rgba8 => ("RGBA", 8),
        C::Rgb16 => ("RGB", 16),
        C::Rgba16 => ("RGBA", 16),
        C::Rgb32F => ("RGB", 32),
        C::Rgba32F => ("RGBA", 32),
        _ => ("colour", c.bits_per_pixel()),
    };
    Some(format!("{name}, {bits} bits"))
}
