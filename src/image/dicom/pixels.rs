//! Pixel decoding: every frame's samples, native or encapsulated (each codec given the bytes
//! [`super::codestream`] checked, taken once by [`super::frames`]), as gray images on the
//! 0..255 scale or as colour; a decoder's panic becomes an error. Apart because this is
//! where the decoders run; what they are given was checked before, in codestream.rs.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use ndarray::Array2;

use super::attributes::{int_attr, layout, layout_of, str_attr, ColourForm, Layout};
use super::codestream::{check_encapsulated, jpeg_colour_said, jpeg_ls_scan_per_component, Codec};
use super::frames;
use super::intensity::{intensity, Intensity};
use super::parse::{parse, EXPLICIT_VR_BIG_ENDIAN};
use super::scan::ScanError;
use super::{corrupt, unsupported, TRANSCODE};
use crate::image::jpeg12;
use crate::image::{ColourImage, GrayImage, ImageError, Picture};

/// Decodes a single-frame DICOM file's bytes (with `DICM` at byte 128); a multi-frame one is
/// refused before its pixels are decoded. `path` is only used in errors.
pub(in crate::image) fn decode(bytes: &[u8], path: &Path) -> Result<GrayImage, ImageError> {
    let mut frames = decode_frames(bytes, path, false)?;
    Ok(frames.remove(0))
}

/// Decodes every frame of a DICOM file's bytes, in order (`multi`: more than one is taken;
/// else a multi-frame file is refused before its pixels are decoded).
pub(in crate::image) fn decode_frames(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<Vec<GrayImage>, ImageError> {
    decode_all(bytes, path, multi).map(|(frames, _)| frames)
}

/// [`decode_frames`], with how the stored values become the image's own units.
pub(in crate::image) fn decode_all(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<(Vec<GrayImage>, Intensity), ImageError> {
    let obj = parse(bytes, path, true)?;
    let l = layout(&obj, path)?;
    let intensity = intensity(&obj, &l, path)?;
    let Decoded {
        samples,
        encapsulated,
        ..
    } = decode_samples(&obj, &l, path, multi)?;
    // A lossy decoder can overshoot the stored range (a 10-bit image in a 12-bit JPEG gives
    // up to 4095): clamped, not wrapped by masking. Native data keeps the mask (old files put
    // overlay bits above the stored ones). Signed data keeps it too: a JPEG 2000 codestream
    // may call unsigned what the header calls signed, and the mask reads it right.
    let clamp = encapsulated && !l.signed;
    let frames = samples
        .chunks_exact(l.rows * l.cols)
        .map(|raw| {
            let values: Vec<f64> = raw
                .iter()
                .map(|&r| {
                    let r = if clamp { r.min(l.max() as u16) } else { r };
                    l.scale_of(l.stored_from_raw(r))
                })
                .collect();
            GrayImage {
                pixels: Array2::from_shape_vec((l.rows, l.cols), values)
                    .expect("sized from the layout"),
                bit_depth: if l.bits_stored <= 8 { 8 } else { 16 },
            }
        })
        .collect();
    Ok((frames, intensity))
}

/// What [`decode_samples`] gives.
struct Decoded {
    /// Every frame's samples as decoded (`l.frame_samples` of each, in order).
    samples: Vec<u16>,
    /// Whether the pixel data was encapsulated (compressed).
    encapsulated: bool,
    /// Whether a colour frame came planar (all of one component, then the next) rather than
    /// pixel by pixel.
    planar: bool,
    codec: Codec,
}

/// Decodes the pixel data of `obj` (layout `l`, checked); multi-frame data is refused
/// unless `multi`.
fn decode_samples(
    obj: &DefaultDicomObject,
    l: &Layout,
    path: &Path,
    multi: bool,
) -> Result<Decoded, ImageError> {
    let l = *l;
    if l.frames > 1 && !multi {
        return Err(unsupported(
            path,
            format!(
                "{} frames (a multi-frame image): add-noise, denoise, share-study and table \
                 take it whole, every frame a slice; this command takes single-frame images",
                l.frames
            ),
        ));
    }
    let pixel_data = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt(path, "no pixel data"))?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    // 16-bit samples typed OB (or UN) in a big-endian file: which byte comes first is not
    // said (pydicom and dicom-rs disagree); only OW's is.
    if ts_uid == EXPLICIT_VR_BIG_ENDIAN && l.bits_allocated == 16 && pixel_data.vr() != VR::OW {
        return Err(unsupported(
            path,
            format!(
                "16-bit pixel data typed {} in a big-endian file: its byte order is ambiguous \
                 (OW is required); {TRANSCODE}",
                pixel_data.vr()
            ),
        ));
    }
    // Encapsulated frames: one frame, in any number of fragments, or one fragment per frame
    // (so that each frame's own header is checked before a decoder sizes anything from it).
    // The bytes checked are the bytes decoded: [`frames`] takes them once, and every
    // codec but the registry's RLE reads them directly.
    let scan_err = |e| match e {
        ScanError::Corrupt(d) => corrupt(path, d),
        ScanError::Unsupported(d) => unsupported(path, format!("{d}; {TRANSCODE}")),
    };
    let encapsulated = match (
        pixel_data.value().offset_table(),
        pixel_data.value().fragments(),
    ) {
        (Some(table), Some(f)) => Some(frames::frames(table, f, l.frames).map_err(scan_err)?),
        _ => None,
    };
    let mut codec = Codec::Registry;
    for f in encapsulated.iter().flatten() {
        codec = check_encapsulated(ts_uid, f, &l, path)?;
    }
    let frame_len = l.frame_samples(encapsulated.is_none());
    let n = frame_len * l.frames;
    let mut planar = false;
    // A frame decoded to another size than the header's is refused, never cut or padded.
    let sized = |k: usize, got: usize, what: &str| {
        if got == frame_len {
            return Ok(());
        }
        Err(corrupt(
            path,
            format!(
                "{what} pixel data: frame {} decoded to {got} samples; {} x {} take {frame_len}",
                k + 1,
                l.rows,
                l.cols
            ),
        ))
    };
    let samples: Vec<u16> = match (codec, &encapsulated) {
        (Codec::Jpeg, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let stream = match l.colour {
                    Some(c) => jpeg_colour_said(&f.bytes, c.form),
                    None => std::borrow::Cow::Borrowed(&f.bytes[..]),
                };
                let s = jpeg12::decode(&stream, l.rows, l.cols, l.samples())
                    .map_err(|e| corrupt(path, format!("JPEG pixel data: {e}")))?;
                sized(k, s.len(), "JPEG")?;
                all.extend(s);
            }
            all
        }
        (Codec::JpegLs, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let raw = quietly(|| charls::CharLS::default().decode(&f.bytes))
                    .map_err(|_| corrupt(path, "JPEG-LS pixel data: the decoder failed"))?
                    .map_err(|e| corrupt(path, format!("JPEG-LS pixel data: {e}")))?;
                // CharLS gives 16-bit samples in native byte order.
                let s: Vec<u16> = if l.bits_allocated == 8 {
                    raw.iter().map(|&r| u16::from(r)).collect()
                } else if raw.len() % 2 == 0 {
                    raw.chunks_exact(2)
                        .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                        .collect()
                } else {
                    return Err(corrupt(path, "JPEG-LS pixel data of an odd byte count"));
                };
                // CharLS gives the components one after the other when the stream has a
                // scan for each (interleave mode none), else pixel by pixel.
                let by_plane = l.colour.is_some() && jpeg_ls_scan_per_component(&f.bytes);
                if k > 0 && by_plane != planar {
                    return Err(corrupt(
                        path,
                        "JPEG-LS frames of different interleave modes",
                    ));
                }
                planar = by_plane;
                sized(k, s.len(), "JPEG-LS")?;
                all.extend(s);
            }
            all
        }
        (Codec::J2k, Some(frames)) => {
            let mut all = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let s = j2k_decode(&f.bytes, &l)
                    .map_err(|e| corrupt(path, format!("JPEG 2000 pixel data: {e}")))?;
                sized(k, s.len(), "JPEG 2000")?;
                all.extend(s);
            }
            all
        }
        _ => {
            // The decoders of the registry can still panic on data the checks above let
            // through (a PackBits run cut short): an error, not a crash, and no message.
            // Encapsulated, only RLE comes here: its decoder takes fragment k as frame k,
            // which is frame k's checked bytes (one fragment per frame is required).
            let decoded = quietly(|| obj.decode_pixel_data());
            let decoded = decoded
                .map_err(|_| corrupt(path, "pixel data: the decoder failed on malformed data"))?
                .map_err(|e| corrupt(path, format!("pixel data: {}", causes(&e))))?;
            // RLE's decoder puts the components pixel by pixel; native data is as stored.
            planar = l.colour.is_some()
                && decoded.planar_configuration()
                    == dicom_pixeldata::PlanarConfiguration::PixelFirst;
            let data = decoded.data();
            let need = n * l.bytes_per_sample();
            if data.len() < need || (encapsulated.is_some() && data.len() != need) {
                return Err(corrupt(
                    path,
                    format!(
                        "pixel data holds {} bytes; {} frame(s) of {} x {}, {} sample(s) \
                         of {} bits allocated take {need}",
                        data.len(),
                        l.frames,
                        l.rows,
                        l.cols,
                        frame_len / (l.rows * l.cols),
                        l.bits_allocated
                    ),
                ));
            }
            // More native data is trailing padding (one byte evens an odd length and is
            // normal): other toolkits read the frame and ignore the rest, and so do we,
            // saying so. Decoded (encapsulated) data must be exactly the frames.
            if data.len() > need + 1 {
                eprintln!(
                    "warning: {}: pixel data holds {} bytes past its {} x {} frame(s) \
                     (trailing padding); they are ignored",
                    path.display(),
                    data.len() - need,
                    l.rows,
                    l.cols
                );
            }
            // Decoded samples are in native byte order.
            if l.bits_allocated == 8 {
                data[..n].iter().map(|&r| u16::from(r)).collect()
            } else {
                data[..need]
                    .chunks_exact(2)
                    .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                    .collect()
            }
        }
    };
    Ok(Decoded {
        samples,
        encapsulated: encapsulated.is_some(),
        planar,
        codec,
    })
}

/// Whether `bytes` (a DICOM file) holds a colour image (SamplesPerPixel 3, or PALETTE
/// COLOR, which its loader refuses by name), from its header alone; false for anything
/// unreadable (its loader names the problem).
pub(in crate::image) fn is_colour(bytes: &[u8], path: &Path) -> bool {
    let Ok(obj) = parse(bytes, path, false) else {
        return false;
    };
    str_attr(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref() == Some("PALETTE COLOR")
        || int_attr(&obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", path)
            .ok()
            .flatten()
            .is_some_and(|n| n != 1)
}

/// A DICOM file's bytes as gray ([`decode`]) or, SamplesPerPixel 3, colour: one frame
/// (a multi-frame file is refused before its pixels are decoded).
pub(in crate::image) fn decode_picture(bytes: &[u8], path: &Path) -> Result<Picture, ImageError> {
    let obj = parse(bytes, path, true)?;
    if layout_of(&obj, path, true)?.colour.is_none() {
        return decode(bytes, path).map(Picture::Gray);
    }
    let mut frames = decode_colour_object(&obj, path, false)?;
    Ok(Picture::Colour(frames.remove(0)))
}

/// Every frame of a colour DICOM file's bytes, in order (`multi`: more than one is taken).
pub fn decode_colour(
    bytes: &[u8],
    path: &Path,
    multi: bool,
) -> Result<Vec<ColourImage>, ImageError> {
    decode_colour_object(&parse(bytes, path, true)?, path, multi)
}

/// [`decode_colour`] of a parsed file.
///
/// Each decoder's output, and what is done with it (checked against pydicom, tests/
/// colour_dicom.rs):
/// - native data: as stored, pixel by pixel or planar (PlanarConfiguration), YBR_FULL_422's
///   subsampled pairs Y1 Y2 Cb Cr (each Cb, Cr taken for both pixels, as pydicom does);
/// - JPEG (libjpeg-turbo): RGB already, whatever the header says ([`jpeg12::decode`]);
/// - JPEG 2000 (openjp2): RGB for RGB, YBR_ICT and YBR_RCT (the codestream's component
///   transform undone by the decoder); YBR_FULL as stored;
/// - JPEG-LS (CharLS) and RLE: the stored components.
///
/// YBR_FULL and YBR_FULL_422 samples not already converted become RGB by the equations of
/// PS3.3 C.7.6.3.1.2 (ITU-R BT.601 full range: R = Y + 1.402 (Cr - 128), G = Y -
/// 0.344136 (Cb - 128) - 0.714136 (Cr - 128), B = Y + 1.772 (Cb - 128)), rounded to the
/// nearest integer and clipped to 0..255, as a viewer shows them. RGB samples map to the
/// 0..255 scale as gray ones do (`u * 255 / M`; divided by 257 at 16 bits).
/// Whether `obj`'s pixel data is encapsulated (compressed fragments); false without any.
fn is_encapsulated(obj: &DefaultDicomObject) -> bool {
    obj.element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_some_and(|e| e.value().fragments().is_some())
}

fn decode_colour_object(
    obj: &DefaultDicomObject,
    path: &Path,
    multi: bool,
) -> Result<Vec<ColourImage>, ImageError> {
    let l = layout_of(obj, path, true)?;
    let Some(colour) = l.colour else {
        return Err(unsupported(path, "a grayscale image, where colour is read"));
    };
    // Native YBR_FULL_422 pairs the pixels of a row (Y1 Y2 Cb Cr): an odd row cannot be
    // stored so. A JPEG's own sampling factors say how its chroma is stored, at any width.
    if colour.form == ColourForm::YbrFull422 && l.cols % 2 == 1 && !is_encapsulated(obj) {
        return Err(corrupt(
            path,
            format!(
                "native YBR_FULL_422 of an odd number of columns ({})",
                l.cols
            ),
        ));
    }
    let d = decode_samples(obj, &l, path, multi)?;
    let native = !d.encapsulated;
    let ybr = match colour.form {
        ColourForm::YbrFull | ColourForm::YbrFull422 => d.codec != Codec::Jpeg,
        ColourForm::Rgb | ColourForm::YbrIct | ColourForm::YbrRct => false,
    };
    let (h, w) = (l.rows, l.cols);
    let n = h * w;
    let frame_len = l.frame_samples(native);
    let subsampled = l.subsampled(native);
    let top = l.max() as u16;
    let frames = d
        .samples
        .chunks_exact(frame_len)
        .map(|f| {
            // Sample `c` of pixel `i`, as stored.
            let at = |i: usize, c: usize| -> u16 {
                let v = if subsampled {
                    // Y1 Y2 Cb Cr for pixels 2k and 2k + 1.
                    let (pair, odd) = (i / 2, i % 2);
                    match c {
                        0 => f[4 * pair + odd],
                        _ => f[4 * pair + 1 + c],
                    }
                } else if d.planar {
                    f[c * n + i]
                } else {
                    f[3 * i + c]
                };
                // A lossy decoder's overshoot is clamped; native data keeps its low bits.
                if d.encapsulated {
                    v.min(top)
                } else {
                    v & top
                }
            };
            let mut planes = Array2::<f64>::zeros((3 * h, w));
            for i in 0..n {
                let (y, x) = (i / w, i % w);
                let rgb = if ybr {
                    ybr_full_to_rgb([at(i, 0), at(i, 1), at(i, 2)])
                } else {
                    [0, 1, 2].map(|c| l.scale_of(i32::from(at(i, c))))
                };
                for (c, v) in rgb.into_iter().enumerate() {
                    planes[[c * h + y, x]] = v;
                }
            }
            ColourImage {
                planes,
                bit_depth: if l.bits_stored <= 8 { 8 } else { 16 },
                alpha: None,
                // A level in stored values is read against what the file stores.
                stored_max: (!matches!(l.bits_stored, 8 | 16)).then_some(top),
            }
        })
        .collect();
    Ok(frames)
}

/// One YBR_FULL pixel (8-bit Y, Cb, Cr) as RGB on 0..255, by PS3.3 C.7.6.3.1.2 (the
/// coefficients of ISO/IEC 10918-5, as pydicom's): rounded half up, clipped.
fn ybr_full_to_rgb([y, cb, cr]: [u16; 3]) -> [f64; 3] {
    let (y, cb, cr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
    let r = y + 1.402 * cr;
    let g = y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr;
    let b = y + 1.772 * cb;
    [r, g, b].map(|v| (v + 0.5).floor().clamp(0.0, 255.0))
}

/// Decodes one JPEG 2000 codestream, whose header was checked against the layout, with
/// openjp2 in its strict mode (its default fills a cut codestream with zeros and says
/// nothing): the samples' low bits in the allocated width, as the registry wrote them.
fn j2k_decode(cs: &[u8], l: &Layout) -> Result<Vec<u16>, String> {
    let params = jpeg2k::DecodeParameters::default().strict(true);
    let image = quietly(|| jpeg2k::Image::from_bytes_with(cs, params))
        .map_err(|_| "the decoder failed on malformed data".to_string())?
        .map_err(|e| e.to_string())?;
    let comps = image.components();
    if comps.len() != l.samples() {
        return Err(format!(
            "{} components decoded; {} were checked",
            comps.len(),
            l.samples()
        ));
    }
    for c in comps {
        if (c.height() as usize, c.width() as usize) != (l.rows, l.cols) {
            return Err(format!(
                "decoded to {} x {}; the header says {} x {}",
                c.height(),
                c.width(),
                l.rows,
                l.cols
            ));
        }
    }
    let mask: u32 = if l.bits_allocated == 8 { 0xFF } else { 0xFFFF };
    // Colour: pixel by pixel. openjp2 has already undone the codestream's multiple-component
    // transform (YBR_ICT, YBR_RCT), so three components are R, G and B.
    let n = l.rows * l.cols;
    Ok((0..n * comps.len())
        .map(|i| (comps[i % comps.len()].data()[i / comps.len()] as u32 & mask) as u16)
        .collect())
}

/// An error and its causes, `a: b: c` (a decoder's reason is in its source).
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s = format!("{s}: {text}");
        }
        cause = c.source();
    }
    s
}

thread_local! {
    /// Whether a panic on this thread is caught by [`quietly`] (and not to be printed).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts the quiet test in front of the process's panic hook.
fn wrap_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET.with(|q| q.get()) {
            prev(info)
        }
    }));
}

/// Runs `f`, turning a panic into an `Err` without a panic message. The process's panic
/// hook is wrapped once (it stays in charge of every other panic); decoders on several
/// threads used to take and put back the hook in turns, so one could put back another's
/// silent hook for good.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAP: std::sync::Once = std::sync::Once::new();
    WRAP.call_once(wrap_panic_hook);
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quiet decoding on many threads at once leaves the process's hook in charge of every
    /// other panic, and prints none of its own.
    #[test]
    fn quiet_decoding_keeps_the_process_panic_hook() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        const QUIET_PANIC: &str = "ppdenoise quiet-decoding test: quiet";
        const LOUD_PANIC: &str = "ppdenoise quiet-decoding test: loud";
        let (quiet_seen, loud_seen) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        quietly(|| ()).unwrap(); // the process's own wrapper is in place (restored below)
        let prev = std::panic::take_hook();
        let (q, l) = (Arc::clone(&quiet_seen), Arc::clone(&loud_seen));
        std::panic::set_hook(Box::new(move |info| {
            match info.payload().downcast_ref::<&str>() {
                Some(&m) if m == QUIET_PANIC => q.fetch_add(1, Ordering::SeqCst),
                Some(&m) if m == LOUD_PANIC => l.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }));
        // The recorder stands for the process's hook: wrapped as quietly's first call does.
        wrap_panic_hook();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200 {
                        assert!(quietly(|| std::panic::panic_any(QUIET_PANIC)).is_err());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let loud = std::panic::catch_unwind(|| std::panic::panic_any(LOUD_PANIC));
        std::panic::set_hook(prev);
        assert!(loud.is_err());
        assert_eq!(
            loud_seen.load(Ordering::SeqCst),
            1,
            "the process hook was lost"
        );
        assert_eq!(
            quiet_seen.load(Ordering::SeqCst),
            0,
            "a quiet panic was printed"
        );
    }
}
