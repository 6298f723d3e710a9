//! Every JPEG of DICOM's but JPEG-LS: libjpeg-turbo through `turbojpeg-sys`. It began with
//! 12-bit lossy JPEG (DICOM's JPEG extended, processes 2 and 4), which no Rust decoder reads;
//! 8-bit and lossless JPEG came here too because the Rust decoder fills data that ends early
//! with grey and says nothing, where libjpeg-turbo warns (made an error here).
//!
//! libjpeg-turbo reports errors through `setjmp`/`longjmp` inside its own frames and returns
//! -1 to us; a recoverable "warning" (corrupt data it would paper over with grey) is made an
//! error too, and progressive scans are capped, so hostile data costs a bounded time. One
//! warning is not about the data: a sequential scan header's unused spectral fields
//! ([`sequential_scans_said`]).

use std::borrow::Cow;
use std::ffi::CStr;

use turbojpeg_sys as tj;

/// Progressive scans taken before a stream is refused (libjpeg-turbo's own suggestion).
const SCAN_LIMIT: i32 = 500;

/// An owned TurboJPEG instance.
struct Handle(tj::tjhandle);

impl Handle {
    fn new(kind: tj::TJINIT) -> Result<Handle, String> {
        // SAFETY: tj3Init has no preconditions; a null return is checked.
        let h = unsafe { tj::tj3Init(kind as i32) };
        if h.is_null() {
            return Err("libjpeg-turbo could not start".into());
        }
        Ok(Handle(h))
    }

    fn set(&self, param: tj::TJPARAM, value: i32) -> Result<(), String> {
        // SAFETY: the handle is live; unknown parameters return -1.
        if unsafe { tj::tj3Set(self.0, param as i32, value) } != 0 {
            return Err(self.error());
        }
        Ok(())
    }

    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: the handle is live.
        unsafe { tj::tj3Get(self.0, param as i32) }
    }

    /// The last error's text.
    fn error(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decodes one JPEG stream (DCT of 8 or 12 bits, or lossless of 2 to 16 bits) that must be
/// `rows x cols`: its samples, row by row. Data that ends early (an EOI or another marker
/// before the last MCU or line) is a libjpeg-turbo warning, made an error.
///
/// `components` 3 (colour, 8 bits only): R, G, B pixel by pixel. libjpeg-turbo converts
/// from the stream's own colour space, which it tells from the stream (a JFIF marker or
/// Adobe's transform flag; else component ids R, G, B or a lossless stream mean RGB, and
/// anything else YCbCr, converted with the JFIF (BT.601 full range) equations, the ones
/// PS3.3 C.7.6.3.1.2 gives for YBR_FULL), upsampling subsampled chroma (YBR_FULL_422) with
/// its default "fancy" filter. So a colour JPEG comes out as RGB, never to be converted
/// again.
pub(super) fn decode(
    jpeg: &[u8],
    rows: usize,
    cols: usize,
    components: usize,
) -> Result<Vec<u16>, String> {
    let jpeg = &*sequential_scans_said(jpeg);
    let h = Handle::new(tj::TJINIT_TJINIT_DECOMPRESS)?;
    h.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;
    h.set(tj::TJPARAM_TJPARAM_SCANLIMIT, SCAN_LIMIT)?;
    // SAFETY: the buffer is valid for its length for the call.
    if unsafe { tj::tj3DecompressHeader(h.0, jpeg.as_ptr(), jpeg.len() as tj::size_t) } != 0 {
        return Err(h.error());
    }
    let (w, ht) = (
        h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    if (w as usize, ht as usize) != (cols, rows) {
        return Err(format!(
            "the JPEG is {ht} x {w}, the header says {rows} x {cols}"
        ));
    }
    let precision = h.get(tj::TJPARAM_TJPARAM_PRECISION);
    let lossless = h.get(tj::TJPARAM_TJPARAM_LOSSLESS) == 1;
    if !(2..=16).contains(&precision) || (!lossless && precision != 8 && precision != 12) {
        return Err(format!(
            "a {} JPEG of {precision} bits, which JPEG does not define",
            if lossless { "lossless" } else { "DCT" }
        ));
    }
    let (ptr, len) = (jpeg.as_ptr(), jpeg.len() as tj::size_t);
    if components == 3 {
        if precision != 8 {
            return Err(format!(
                "a colour JPEG of {precision} bits (8-bit colour is read)"
            ));
        }
        let mut out = vec![0u8; rows * cols * 3];
        // SAFETY: `out` holds rows x cols RGB pixels, the size the header was checked to be.
        let rc = unsafe {
            tj::tj3Decompress8(
                h.0,
                ptr,
                len,
                out.as_mut_ptr(),
                (cols * 3) as i32,
                tj::TJPF_TJPF_RGB,
            )
        };
        if rc != 0 {
            return Err(h.error());
        }
        return Ok(out.into_iter().map(u16::from).collect());
    }
    let n = rows * cols;
    let gray = tj::TJPF_TJPF_GRAY;
    // SAFETY (each arm): the output holds rows x cols samples, the size checked above, at
    // pitch `cols` (one sample per pixel, TJPF_GRAY); libjpeg-turbo picks the API by the
    // precision, which each arm matches.
    let (rc, out) = match precision {
        2..=8 => {
            let mut out = vec![0u8; n];
            let rc =
                unsafe { tj::tj3Decompress8(h.0, ptr, len, out.as_mut_ptr(), cols as i32, gray) };
            (rc, out.into_iter().map(u16::from).collect())
        }
        9..=12 => {
            let mut out = vec![0i16; n];
            let rc =
                unsafe { tj::tj3Decompress12(h.0, ptr, len, out.as_mut_ptr(), cols as i32, gray) };
            // Samples of at most 12 bits are 0..4095: no sign to lose.
            (rc, out.into_iter().map(|v| v as u16).collect())
        }
        _ => {
            let mut out = vec![0u16; n];
            let rc =
                unsafe { tj::tj3Decompress16(h.0, ptr, len, out.as_mut_ptr(), cols as i32, gray) };
            (rc, out)
        }
    };
    if rc != 0 {
        return Err(h.error());
    }
    Ok(out)
}

/// A sequential DCT stream (SOF0, SOF1: DICOM's JPEG baseline and extended) with every scan
/// header's spectral selection and successive approximation (Ss, Se, Ah, Al) set to the only
/// values sequential JPEG defines, 0, 63, 0, 0; any other stream, or one whose markers do not
/// walk, as it is.
///
/// A sequential decoder does not read these fields: libjpeg-turbo decodes all 64
/// coefficients whatever they say and only warns ("Invalid SOS parameters for sequential
/// JPEG", which STOPONWARNING would make an error), and GDCM, which pydicom uses, decodes
/// such a stream likewise. Modalities wrote them wrong (NEMA's WG04 NM1_JPLY, pydicom's
/// JPEG-lossy.dcm, has Se 0; JPGExtended.dcm is the same stream with Se 63). Setting them
/// here keeps every other warning an error: the decoded samples are those libjpeg-turbo
/// gives the stream when that warning is ignored.
fn sequential_scans_said(b: &[u8]) -> Cow<'_, [u8]> {
    // Where each scan header's Ss byte is, if the stream is sequential DCT.
    let wrong = || -> Option<Vec<usize>> {
        if !b.starts_with(&[0xFF, 0xD8]) {
            return None;
        }
        let (mut i, mut sequential, mut at) = (2, None, Vec::new());
        loop {
            while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
                i += 1; // fill bytes
            }
            if *b.get(i)? != 0xFF {
                return None;
            }
            let m = *b.get(i + 1)?;
            match m {
                0xD9 => return Some(at),
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
            let body = b.get(i + 4..i + 2 + len)?;
            // SOF0..SOF15 but DHT, JPG and DAC: the frame's process.
            if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
                sequential = Some(matches!(m, 0xC0 | 0xC1));
            }
            if m == 0xDA {
                // Ns, Ns component selectors of 2 bytes, then Ss, Se, Ah|Al.
                let ns = usize::from(*body.first()?);
                if sequential != Some(true) || body.len() != 4 + 2 * ns {
                    return None;
                }
                if body[1 + 2 * ns..] != [0, 63, 0] {
                    at.push(i + 4 + 1 + 2 * ns);
                }
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
    match wrong() {
        Some(at) if !at.is_empty() => {
            let mut fixed = b.to_vec();
            for i in at {
                fixed[i..i + 3].copy_from_slice(&[0, 63, 0]);
            }
            Cow::Owned(fixed)
        }
        _ => Cow::Borrowed(b),
    }
}

/// [`decode`] for tests: the raw samples, before any DICOM mapping.
pub fn decode_for_test(jpeg: &[u8], rows: usize, cols: usize) -> Vec<u16> {
    decode(jpeg, rows, cols, 1).expect("a valid 12-bit JPEG")
}

/// Encodes `rows x cols` 12-bit grayscale samples as a lossy JPEG (extended, Huffman) of
/// the given quality: test inputs, as a modality would write them.
pub fn encode(samples: &[u16], rows: usize, cols: usize, quality: i32) -> Result<Vec<u8>, String> {
    assert_eq!(samples.len(), rows * cols, "rows x cols samples");
    let h = gray_compressor(quality)?;
    let src: Vec<i16> = samples.iter().map(|&v| (v & 0x0FFF) as i16).collect();
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: `src` holds rows x cols samples at pitch `cols`; libjpeg-turbo allocates
    // `buf`, which is copied and then freed with tj3Free.
    let rc = unsafe {
        tj::tj3Compress12(
            h.0,
            src.as_ptr(),
            cols as i32,
            cols as i32,
            rows as i32,
            tj::TJPF_TJPF_GRAY,
            &mut buf,
            &mut size,
        )
    };
    compressed(&h, rc, buf, size)
}

/// A compressor for grayscale samples at `quality`.
fn gray_compressor(quality: i32) -> Result<Handle, String> {
    let h = Handle::new(tj::TJINIT_TJINIT_COMPRESS)?;
    h.set(tj::TJPARAM_TJPARAM_SUBSAMP, tj::TJSAMP_TJSAMP_GRAY)?;
    h.set(tj::TJPARAM_TJPARAM_QUALITY, quality)?;
    Ok(h)
}

/// What a `tj3Compress*` call (return code `rc`) left in `buf`, copied out; `buf` is freed
/// either way.
fn compressed(
    h: &Handle,
    rc: std::ffi::c_int,
    buf: *mut u8,
    size: tj::size_t,
) -> Result<Vec<u8>, String> {
    let result = if rc != 0 {
        Err(h.error())
    } else {
        // SAFETY: on success `buf` holds `size` bytes.
        Ok(unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec())
    };
    // SAFETY: `buf` is null or was allocated by libjpeg-turbo.
    unsafe { tj::tj3Free(buf.cast()) };
    result
}

/// Encodes `rows x cols` 8-bit grayscale samples as a baseline JPEG of `quality`, or as a
/// lossless one (process 14, selection value 1): test inputs (the module tests, the fuzz
/// seeds), as a modality would write them.
pub fn encode8(
    samples: &[u8],
    rows: usize,
    cols: usize,
    lossless: Option<()>,
    quality: i32,
) -> Vec<u8> {
    let h = gray_compressor(quality).unwrap();
    if lossless.is_some() {
        h.set(tj::TJPARAM_TJPARAM_LOSSLESS, 1).unwrap();
        h.set(tj::TJPARAM_TJPARAM_LOSSLESSPSV, 1).unwrap();
    }
    compress8(&h, samples, rows, cols).unwrap_or_else(|e| panic!("{e}"))
}

/// `rows x cols` 8-bit gray samples through the compressor `h`, as its parameters say.
fn compress8(h: &Handle, samples: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: as in `encode`, with 8-bit samples.
    let rc = unsafe {
        tj::tj3Compress8(
            h.0,
            samples.as_ptr(),
            cols as i32,
            cols as i32,
            rows as i32,
            tj::TJPF_TJPF_GRAY,
            &mut buf,
            &mut size,
        )
    };
    compressed(h, rc, buf, size)
}

/// Encodes `rows x cols` 8-bit RGB pixels (R, G, B interleaved) as a baseline JPEG of
/// `quality` in YCbCr with 4:2:2 chroma, as a modality writes a YBR_FULL_422 object: test
/// inputs.
#[cfg(test)]
pub(super) fn encode_rgb422(rgb: &[u8], rows: usize, cols: usize, quality: i32) -> Vec<u8> {
    assert_eq!(rgb.len(), rows * cols * 3, "rows x cols RGB pixels");
    let h = Handle::new(tj::TJINIT_TJINIT_COMPRESS).unwrap();
    h.set(tj::TJPARAM_TJPARAM_SUBSAMP, tj::TJSAMP_TJSAMP_422)
        .unwrap();
    h.set(tj::TJPARAM_TJPARAM_QUALITY, quality).unwrap();
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: as in `encode`, with rows x cols RGB pixels at pitch 3 cols.
    let rc = unsafe {
        tj::tj3Compress8(
            h.0,
            rgb.as_ptr(),
            cols as i32,
            3 * cols as i32,
            rows as i32,
            tj::TJPF_TJPF_RGB,
            &mut buf,
            &mut size,
        )
    };
    compressed(&h, rc, buf, size).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_12_bit_ramp_survives_a_high_quality_round_trip_and_bad_data_is_an_error() {
        let (rows, cols) = (40, 56);
        let img: Vec<u16> = (0..rows * cols)
            .map(|i| ((i % cols) * 4095 / (cols - 1)) as u16)
            .collect();
        let jpeg = encode(&img, rows, cols, 100).unwrap();
        // SOF1 (extended, Huffman) with precision 12.
        assert!(jpeg.windows(3).any(|w| w == [0xFF, 0xC1, 0x00]));
        let back = decode(&jpeg, rows, cols, 1).unwrap();
        let worst = img
            .iter()
            .zip(&back)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap();
        assert!(worst <= 8, "worst error {worst} of 4095");
        assert!(decode(&jpeg, rows + 1, cols, 1)
            .unwrap_err()
            .contains("header says"));
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(decode(cut, rows, cols, 1).is_err());
        assert!(decode(b"not a jpeg", rows, cols, 1).is_err());
    }

    #[test]
    fn a_sequential_scan_header_with_unused_fields_wrong_decodes_as_if_they_were_right() {
        let (rows, cols) = (24, 40);
        let img: Vec<u16> = (0..rows * cols).map(|i| ((i * 37) % 4096) as u16).collect();
        let good = encode(&img, rows, cols, 90).unwrap();
        let want = decode(&good, rows, cols, 1).unwrap();
        // The scan header's Ss, Se, Ah|Al: right, then Se 0 as NM1_JPLY has it (and Ah|Al
        // set, Ss set): every one decodes to the same samples.
        let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let ns = usize::from(good[sos + 4]);
        let ss = sos + 5 + 2 * ns;
        assert_eq!(good[ss..ss + 3], [0, 63, 0]);
        for fields in [[0, 0, 0], [1, 63, 0], [0, 63, 0x11]] {
            let mut bad = good.clone();
            bad[ss..ss + 3].copy_from_slice(&fields);
            assert_eq!(
                decode(&bad, rows, cols, 1).as_deref(),
                Ok(&want[..]),
                "{fields:?}"
            );
        }
        // Another warning stays an error: the stream cut before its last MCU.
        let mut cut = good[..good.len() * 3 / 4].to_vec();
        cut[ss + 1] = 0;
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert!(decode(&cut, rows, cols, 1).is_err());
        // A progressive stream's scan headers mean what they say: left alone.
        let h = gray_compressor(90).unwrap();
        h.set(tj::TJPARAM_TJPARAM_PROGRESSIVE, 1).unwrap();
        let bytes: Vec<u8> = img.iter().map(|&v| (v >> 4) as u8).collect();
        let progressive = compress8(&h, &bytes, rows, cols).unwrap();
        assert!(progressive.windows(2).any(|w| w == [0xFF, 0xC2]));
        assert!(matches!(
            sequential_scans_said(&progressive),
            Cow::Borrowed(_)
        ));
    }
}
