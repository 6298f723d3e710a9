//! Codestream sniffing: an encapsulated frame's RLE, JPEG, JPEG-LS or JPEG 2000 header read
//! from its bytes and checked against the DICOM header before any decoder sizes anything
//! from it, and which decoder takes the frame. Apart because it only reads bytes (no
//! decoder, no data set): the checks of hostile streams in one place.

use std::path::Path;

use dicom_dictionary_std::uids;

use super::attributes::{ColourForm, Layout};
use super::frames;
use super::{corrupt, unsupported, TRANSCODE};
use crate::image::ImageError;

/// Which decoder takes encapsulated pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// The registry's decoder for the transfer syntax.
    Registry,
    /// JPEG, DCT or lossless: libjpeg-turbo (see [`crate::image::jpeg12`]).
    Jpeg,
    /// JPEG-LS: CharLS.
    JpegLs,
    /// JPEG 2000: openjp2 in its strict mode ([`super::pixels::j2k_decode`]).
    J2k,
}

/// Encapsulated pixel data is checked against the header before a decoder sizes anything
/// from it: one frame is one fragment for RLE (the decoder makes a frame of every fragment),
/// and a JPEG, JPEG-LS or JPEG 2000 stream's own header must say the header's rows, columns,
/// one component and a precision that fits the bits allocated (the decoders allocate what
/// the stream says). Returns the decoder to use.
pub(super) fn check_encapsulated(
    ts_uid: &str,
    frame: &frames::Frame,
    l: &Layout,
    path: &Path,
) -> Result<Codec, ImageError> {
    let first: &[u8] = &frame.bytes;
    let stream = |kind: &str, (rows, cols, comps, precision): (usize, usize, u16, u16)| {
        if (rows, cols) != (l.rows, l.cols)
            || usize::from(comps) != l.samples()
            || precision > l.bits_allocated
            || (precision <= 8) != (l.bits_allocated == 8)
        {
            return Err(corrupt(
                path,
                format!(
                    "the {kind} data is {rows} x {cols}, {comps} component(s) of {precision} \
                     bits; the header says {} x {}, {} sample(s) of {} bits allocated",
                    l.rows,
                    l.cols,
                    l.samples(),
                    l.bits_allocated
                ),
            ));
        }
        Ok(())
    };
    match ts_uid {
        uids::RLE_LOSSLESS => {
            check_rle(first, frame.fragments, l, path)?;
            Ok(Codec::Registry)
        }
        uids::JPEG_BASELINE8_BIT
        | uids::JPEG_EXTENDED12_BIT
        | uids::JPEG_LOSSLESS
        | uids::JPEG_LOSSLESS_SV1
        | uids::JPEGLS_LOSSLESS
        | uids::JPEGLS_NEAR_LOSSLESS => {
            let (marker, precision, rows, cols, comps) = jpeg_frame(first).ok_or_else(|| {
                corrupt(
                    path,
                    "JPEG data without a frame header (SOF) before its scan",
                )
            })?;
            if matches!(marker, 0xC5..=0xC7 | 0xCD..=0xCF) {
                return Err(unsupported(
                    path,
                    format!(
                        "a hierarchical JPEG (SOF{}), which no decoder here reads; {TRANSCODE}",
                        marker - 0xC0
                    ),
                ));
            }
            let jpeg_ls = marker == 0xF7;
            // Several frames of JPEG: each fragment must hold exactly its stream (dicom-rs's
            // decoder read a second one hidden after the first's end as the next frame,
            // unchecked; libjpeg-turbo stops at EOI, but nothing is taken from after it).
            if l.frames > 1 && !jpeg_ls && !one_jpeg_stream(first) {
                return Err(corrupt(
                    path,
                    "a frame's JPEG fragment does not hold exactly one stream (data after its \
                     end, EOI, or no end)",
                ));
            }
            if jpeg_ls != ts_uid.starts_with("1.2.840.10008.1.2.4.8") {
                return Err(corrupt(
                    path,
                    format!("the transfer syntax is {ts_uid} but the stream's frame header is SOF marker {marker:#04X}"),
                ));
            }
            let kind = if jpeg_ls { "JPEG-LS" } else { "JPEG" };
            stream(kind, (rows, cols, u16::from(comps), u16::from(precision)))?;
            // Lossless (SOF3, SOF11) and DCT JPEG: libjpeg-turbo; JPEG-LS: CharLS.
            Ok(if jpeg_ls { Codec::JpegLs } else { Codec::Jpeg })
        }
        uids::JPEG2000_LOSSLESS
        | uids::JPEG2000
        | uids::JPEG2000MC_LOSSLESS
        | uids::JPEG2000MC
        | uids::HTJ2K_LOSSLESS
        | uids::HTJ2K_LOSSLESS_RPCL
        | uids::HTJ2K => {
            let cs = first;
            let Some(h) = j2k_header(cs) else {
                return Err(if cs.get(4..8) == Some(b"jP  ") {
                    unsupported(
                        path,
                        format!(
                            "JPEG 2000 data in a JP2 file wrapper, not the bare codestream DICOM \
                             requires; {TRANSCODE}"
                        ),
                    )
                } else {
                    corrupt(
                        path,
                        "JPEG 2000 data without its codestream header (SOC, SIZ) at its start",
                    )
                });
            };
            stream("JPEG 2000", (h.rows, h.cols, h.comps, h.precision))?;
            if !h.alike {
                return Err(unsupported(
                    path,
                    "JPEG 2000 components of differing precision, sign or subsampling; all \
                     alike are read",
                ));
            }
            // The decoder undoes the codestream's colour transform: what it returns must be
            // what the header's photometric interpretation leads the reader to expect (RGB
            // after YBR_ICT/YBR_RCT; the samples themselves for RGB and YBR_FULL).
            if let Some(c) = &l.colour {
                let said = match c.form {
                    ColourForm::YbrIct | ColourForm::YbrRct => Some(true),
                    ColourForm::YbrFull | ColourForm::YbrFull422 => Some(false),
                    ColourForm::Rgb => None,
                };
                if said.is_some_and(|want| want != h.mct) {
                    return Err(corrupt(
                        path,
                        format!(
                            "JPEG 2000 data {} a colour transform, but the header's \
                             photometric interpretation ({}) says {}",
                            if h.mct { "with" } else { "without" },
                            c.form.name(),
                            if h.mct { "none" } else { "one" }
                        ),
                    ));
                }
            }
            if h.subsampling != (1, 1) {
                return Err(unsupported(
                    path,
                    format!(
                        "a JPEG 2000 component subsampled {} x {}; only full resolution is read",
                        h.subsampling.0, h.subsampling.1
                    ),
                ));
            }
            // Tiny tiles cost the decoder far more than the image (1 x 1 tiles: ~10 kB each).
            let (tw, th) = h.tile_size;
            if h.tiles > 1 && u64::from(tw) * u64::from(th) < 4096 {
                return Err(unsupported(
                    path,
                    format!(
                        "JPEG 2000 tiles of {tw} x {th} pixels ({} tiles); tiles of at least \
                         4096 pixels are read",
                        h.tiles
                    ),
                ));
            }
            if !j2k_tiles_present(cs, h.tiles) {
                return Err(corrupt(
                    path,
                    format!(
                        "JPEG 2000 data cut short or missing some of its {} tile(s)",
                        h.tiles
                    ),
                ));
            }
            Ok(Codec::J2k)
        }
        // Encapsulated uncompressed: the registry copies the fragments, sized by the header.
        // It reports every encapsulated colour frame as interleaved, so a colour one (planar
        // or 4:2:2 alike) would be read in the wrong order: refused.
        _ if l.colour.is_some() => Err(unsupported(
            path,
            format!("a colour image in transfer syntax {ts_uid} (encapsulated uncompressed); {TRANSCODE}"),
        )),
        _ => Ok(Codec::Registry),
    }
}

/// RLE: a 64-byte header of 16 little-endian u32: the segment count, then the offsets.
fn check_rle(first: &[u8], fragments: usize, l: &Layout, path: &Path) -> Result<(), ImageError> {
    let segments = l.bytes_per_sample() * l.samples();
    let word = |i: usize| {
        first
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let offsets: Option<Vec<usize>> = (1..=segments).map(word).collect();
    let ok = fragments == 1
        && first.len() >= 64
        && word(0) == Some(segments)
        && offsets.as_ref().is_some_and(|o| {
            o[0] == 64 && o.windows(2).all(|w| w[0] < w[1]) && o.iter().all(|&x| x < first.len())
        });
    if !ok {
        return Err(corrupt(
            path,
            format!(
                "RLE data of {} fragment(s) does not hold one frame of {segments} segment(s) \
                 with a valid header",
                fragments
            ),
        ));
    }
    Ok(())
}

/// A JPEG 2000 codestream's header, as far as the checks need it.
#[derive(Debug, PartialEq)]
struct J2kHeader {
    rows: usize,
    cols: usize,
    comps: u16,
    /// Whether every component has the first's precision, sign and subsampling.
    alike: bool,
    /// Whether the codestream applies a multiple-component (colour) transform, which the
    /// decoder undoes: its output is then RGB whatever the header says.
    mct: bool,
    /// The first component's precision in bits.
    precision: u16,
    /// Its subsampling (XRsiz, YRsiz).
    subsampling: (u8, u8),
    tiles: usize,
    tile_size: (u32, u32),
}

/// Reads the SIZ marker of a bare JPEG 2000 codestream (SOC then SIZ at byte 0, as DICOM
/// requires; a JP2 file wrapper is not taken: a box could hide a decoy header).
fn j2k_header(b: &[u8]) -> Option<J2kHeader> {
    if b.get(..4)? != [0xFF, 0x4F, 0xFF, 0x51] {
        return None;
    }
    let u16_at = |i: usize| Some(u16::from_be_bytes([*b.get(4 + i)?, *b.get(5 + i)?]));
    let u32_at = |i: usize| {
        Some(u32::from_be_bytes([
            *b.get(4 + i)?,
            *b.get(5 + i)?,
            *b.get(6 + i)?,
            *b.get(7 + i)?,
        ]))
    };
    // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz, then
    // Ssiz, XRsiz, YRsiz per component.
    let (xsiz, ysiz, xo, yo) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let (xt, yt, xto, yto) = (u32_at(20)?, u32_at(24)?, u32_at(28)?, u32_at(32)?);
    let comps = u16_at(36)?;
    let (ssiz, xr, yr) = (*b.get(4 + 38)?, *b.get(4 + 39)?, *b.get(4 + 40)?);
    // Every component's Ssiz, XRsiz and YRsiz (three bytes each, after Csiz).
    let alike = (1..usize::from(comps)).all(|c| {
        let at = 4 + 38 + 3 * c;
        b.get(at..at + 3) == Some(&[ssiz, xr, yr][..])
    });
    let cols = xsiz.checked_sub(xo)? as usize;
    let rows = ysiz.checked_sub(yo)? as usize;
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return None;
    }
    let across = (xsiz - xto).div_ceil(xt) as usize;
    let down = (ysiz - yto).div_ceil(yt) as usize;
    Some(J2kHeader {
        rows,
        cols,
        comps,
        alike,
        // A codestream without a COD is refused by the decoder; no transform is assumed here.
        mct: j2k_mct(b).unwrap_or(false),
        precision: u16::from(ssiz & 0x7F) + 1,
        subsampling: (xr, yr),
        tiles: across.checked_mul(down)?,
        tile_size: (xt, yt),
    })
}

/// The main header of a JPEG 2000 codestream (SOC, then marker segments up to the first
/// SOT): each segment's marker and offset, and the first SOT's offset; `None` if cut short.
fn j2k_main_header(b: &[u8]) -> Option<(Vec<(u8, usize)>, usize)> {
    let mut segments = Vec::new();
    let mut i = 2;
    loop {
        let (&ff, &m) = (b.get(i)?, b.get(i + 1)?);
        if ff != 0xFF {
            return None;
        }
        if m == 0x90 {
            return Some((segments, i));
        }
        segments.push((m, i));
        let len = b.get(i + 2..i + 4)?;
        i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
}

/// The COD marker's multiple-component transform flag (SGcod's fourth byte); `None`
/// without a COD in the main header.
fn j2k_mct(b: &[u8]) -> Option<bool> {
    let (segments, _) = j2k_main_header(b)?;
    let &(_, at) = segments.iter().find(|&&(m, _)| m == 0x52)?;
    // COD: Lcod, Scod, then SGcod: progression order, layers (2 bytes), MCT.
    Some(*b.get(at + 8)? != 0)
}

/// Whether every one of `tiles` tiles has a tile-part in the codestream `b`, each within the
/// data, and the last followed by EOC (openjp2 fills a missing or cut tile with zeros and
/// says nothing).
fn j2k_tiles_present(b: &[u8], tiles: usize) -> bool {
    let Some((_, mut i)) = j2k_main_header(b) else {
        return false;
    };
    let mut seen = vec![false; tiles];
    while b.get(i..i + 2) == Some(&[0xFF, 0x90]) {
        // SOT: Lsot (10), Isot, Psot (from this marker, 0: up to EOC), TPsot, TNsot.
        let Some(sot) = b.get(i + 2..i + 12) else {
            return false;
        };
        let isot = usize::from(u16::from_be_bytes([sot[2], sot[3]]));
        let psot = u32::from_be_bytes([sot[4], sot[5], sot[6], sot[7]]) as usize;
        match seen.get_mut(isot) {
            Some(s) => *s = true,
            None => return false,
        }
        if psot == 0 {
            // The last tile-part runs to EOC, which must end the data (a fragment may add
            // one byte of padding): a cut codestream does not reach it.
            let end = b.strip_suffix(&[0]).unwrap_or(b);
            return end.ends_with(&[0xFF, 0xD9]) && end.len() >= i + 14 && seen.iter().all(|&s| s);
        }
        if psot < 14 || i + psot > b.len() {
            return false;
        }
        i += psot;
    }
    // After the last tile-part: EOC.
    b.get(i..i + 2) == Some(&[0xFF, 0xD9]) && seen.iter().all(|&s| s)
}

/// Whether `b` is one JPEG stream followed by nothing but zero padding: its marker segments
/// walked from SOI, the entropy-coded data after each SOS skipped (there FF is followed by 00,
/// a restart marker or fill), up to its EOI.
fn one_jpeg_stream(b: &[u8]) -> bool {
    let end = || -> Option<usize> {
        if !b.starts_with(&[0xFF, 0xD8]) {
            return None;
        }
        let mut i = 2;
        loop {
            while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
                i += 1; // fill bytes
            }
            if *b.get(i)? != 0xFF {
                return None;
            }
            let m = *b.get(i + 1)?;
            match m {
                0xD9 => return Some(i + 2),
                0x01 | 0xD0..=0xD7 => {
                    i += 2; // markers without a length
                    continue;
                }
                _ => {}
            }
            let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
            if len < 2 {
                return None;
            }
            i += 2 + len;
            if m == 0xDA {
                // Entropy-coded data up to the next marker.
                while *b.get(i)? != 0xFF || matches!(*b.get(i + 1)?, 0x00 | 0xD0..=0xD7) {
                    i += 1;
                }
            }
        }
    };
    end().is_some_and(|e| b[e..].iter().all(|&x| x == 0))
}

/// The first marker segment of a JPEG stream, up to and including its first scan header
/// (SOS), for which `wanted(marker, body)` holds: its marker and body (what follows the
/// length); `None` if there is none or the stream is cut short.
fn jpeg_segment(b: &[u8], wanted: impl Fn(u8, &[u8]) -> bool) -> Option<(u8, &[u8])> {
    let mut i = 2; // after SOI
    loop {
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1; // fill bytes
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
        if len < 2 {
            return None;
        }
        let body = b.get(i + 4..i + 2 + len)?;
        if wanted(marker, body) {
            return Some((marker, body));
        }
        if marker == 0xDA {
            return None;
        }
        i += 2 + len;
    }
}

/// The frame header (SOFn) of a JPEG stream: its marker, precision, rows, columns,
/// components.
fn jpeg_frame(b: &[u8]) -> Option<(u8, u8, usize, usize, u8)> {
    // SOF0..SOF15 but DHT, JPG and DAC; SOF55 is JPEG-LS's.
    let sof = |m: u8| (matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)) || m == 0xF7;
    // Scan data before any frame header: none.
    let (marker, seg) = jpeg_segment(b, |m, _| sof(m))?;
    let rows = usize::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
    let cols = usize::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
    Some((marker, *seg.first()?, rows, cols, *seg.get(5)?))
}

/// A colour JPEG stream whose own markers say nothing of its colour space (no JFIF APP0,
/// no Adobe APP14 before its first scan) gets an Adobe marker saying what the header's
/// PhotometricInterpretation says (PS3.5 8.2.1): RGB untransformed, YBR_* as YCbCr.
/// Left alone, libjpeg-turbo would guess from the component ids and take a lossy RGB
/// stream with ids 1, 2, 3 for YCbCr (pydicom's SC_jpeg_no_color_transform.dcm). A stream
/// that says its colour space is believed, as pydicom does.
pub(super) fn jpeg_colour_said(b: &[u8], form: ColourForm) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    // Whether a JFIF APP0 or an Adobe APP14 comes before the first scan.
    let said = jpeg_segment(b, |m, body| {
        m == 0xDA
            || (m == 0xE0 && body.starts_with(b"JFIF\0"))
            || (m == 0xEE && body.starts_with(b"Adobe"))
    })
    .map(|(m, _)| m != 0xDA);
    if said != Some(false) || !b.starts_with(&[0xFF, 0xD8]) {
        return Cow::Borrowed(b);
    }
    let transform = u8::from(form != ColourForm::Rgb);
    // APP14 "Adobe": version 100, two flag words, then the transform (0 RGB, 1 YCbCr).
    let adobe = [
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
        transform,
    ];
    let mut out = Vec::with_capacity(b.len() + adobe.len());
    out.extend_from_slice(&b[..2]);
    out.extend_from_slice(&adobe);
    out.extend_from_slice(&b[2..]);
    Cow::Owned(out)
}

/// Whether a JPEG-LS stream's first scan (SOS) holds one component: interleave mode none,
/// a scan per component.
pub(super) fn jpeg_ls_scan_per_component(b: &[u8]) -> bool {
    // SOS: Ns, the scan's component count, first.
    jpeg_segment(b, |m, _| m == 0xDA).and_then(|(_, sos)| sos.first().copied()) == Some(1)
}
