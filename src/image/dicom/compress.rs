//! Lossless compressed DICOM output (`--transfer-syntax`): JPEG-LS through dicom-rs's CharLS
//! writer, JPEG 2000 through openjp2's encoder (dicom-rs has a JPEG 2000 decoder only). Both
//! codecs are the ones the project already builds for reading; nothing new is compiled.
//!
//! Stored values go to the codecs as BitsStored-bit samples: JPEG-LS takes them unsigned
//! (a signed value's two's complement bits, as PS3.5 8.2.3 says a decoder reads them back
//! with PixelRepresentation), JPEG 2000 as a signed or unsigned component of that precision.

use std::io::{Cursor, Seek, SeekFrom, Write};

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION;
use openjp2::image::{opj_image, opj_image_comptparm};
use openjp2::openjpeg::{
    opj_codec_t, opj_cparameters_t, opj_create_compress, opj_destroy_codec, opj_encode,
    opj_end_compress, opj_set_default_encoder_parameters, opj_setup_encoder, opj_start_compress,
    opj_stream_create, opj_stream_destroy, opj_stream_set_seek_function,
    opj_stream_set_skip_function, opj_stream_set_user_data, opj_stream_set_write_function,
    opj_stream_t, OPJ_CLRSPC_GRAY, OPJ_CODEC_J2K,
};

use crate::image::derived::OutputSyntax;

/// The pixel layout the codecs need.
pub(super) struct Samples<'a> {
    pub rows: usize,
    pub cols: usize,
    pub frames: usize,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    /// Every frame's stored values, in order.
    pub stored: &'a [i32],
}

/// `obj` (pixel attributes set, no Pixel Data) with `s` encoded in `syntax`, written as a
/// Part 10 file; `meta` is the file meta table without its transfer syntax.
pub(super) fn write(
    mut obj: InMemDicomObject,
    s: &Samples,
    syntax: OutputSyntax,
    meta: FileMetaTableBuilder,
) -> Result<Vec<u8>, String> {
    let mask = (1u32 << s.bits_stored) - 1;
    match syntax {
        OutputSyntax::ExplicitLe | OutputSyntax::JpegLsLossless => {
            // JPEG-LS samples are the BitsStored low bits; native data keeps the sign
            // extension a reader expects of it.
            let keep = if syntax == OutputSyntax::JpegLsLossless {
                mask
            } else {
                u32::MAX
            };
            let raw = s.stored.iter().map(|&v| (v as u32 & keep) as u16);
            obj.put(if s.bits_allocated == 8 {
                let mut b: Vec<u8> = raw.map(|v| v as u8).collect();
                if b.len() % 2 == 1 {
                    b.push(0);
                }
                DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(b.into()))
            } else {
                let w: Vec<u16> = raw.collect();
                DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(w.into()))
            });
            let mut file = obj
                .with_meta(meta.transfer_syntax(OutputSyntax::ExplicitLe.uid()))
                .map_err(|e| e.to_string())?;
            if syntax == OutputSyntax::JpegLsLossless {
                file.transcode(&JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased())
                    .map_err(|e| format!("JPEG-LS encoding: {e}"))?;
            }
            let mut bytes = Vec::new();
            file.write_all(&mut bytes).map_err(|e| e.to_string())?;
            Ok(bytes)
        }
        OutputSyntax::J2kLossless => {
            let per = s.rows * s.cols;
            let mut fragments = Vec::with_capacity(s.frames);
            for f in s.stored.chunks_exact(per) {
                let mut j = j2k_lossless(f, s)?;
                if j.len() % 2 == 1 {
                    j.push(0); // fragments have even lengths; a J2K reader stops at EOC
                }
                fragments.push(j);
            }
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
            ));
            obj.put(DataElement::new(
                tags::LOSSY_IMAGE_COMPRESSION,
                VR::CS,
                PrimitiveValue::from(lossy_flag(&obj)),
            ));
            let file = obj
                .with_meta(meta.transfer_syntax(syntax.uid()))
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            file.write_all(&mut bytes).map_err(|e| e.to_string())?;
            Ok(bytes)
        }
    }
}

/// Once lossy, always lossy: the source's flag is kept, else `00`.
fn lossy_flag(obj: &InMemDicomObject) -> String {
    obj.element_opt(tags::LOSSY_IMAGE_COMPRESSION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s == "01")
        .unwrap_or_else(|| "00".into())
}

/// The output stream's bytes: openjp2 writes, skips and seeks through these callbacks.
type Sink = Cursor<Vec<u8>>;

unsafe extern "C" fn sink_write(
    buf: *mut core::ffi::c_void,
    n: usize,
    user: *mut core::ffi::c_void,
) -> usize {
    // SAFETY: `user` is the `Sink` that `j2k_lossless` owns for the stream's whole life, and
    // `buf` holds `n` bytes for the duration of the call (openjp2's contract).
    let sink = unsafe { &mut *(user as *mut Sink) };
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    match sink.write_all(data) {
        Ok(()) => n,
        Err(_) => usize::MAX, // (OPJ_SIZE_T)-1: failure
    }
}

unsafe extern "C" fn sink_skip(n: i64, user: *mut core::ffi::c_void) -> i64 {
    // SAFETY: as in `sink_write`.
    let sink = unsafe { &mut *(user as *mut Sink) };
    match sink.seek(SeekFrom::Current(n)) {
        Ok(_) => n,
        Err(_) => -1,
    }
}

unsafe extern "C" fn sink_seek(at: i64, user: *mut core::ffi::c_void) -> i32 {
    // SAFETY: as in `sink_write`.
    let sink = unsafe { &mut *(user as *mut Sink) };
    i32::from(u64::try_from(at).is_ok_and(|at| sink.seek(SeekFrom::Start(at)).is_ok()))
}

/// One frame as a reversible (5/3 wavelet, one layer, no rate) JPEG 2000 codestream.
pub(super) fn j2k_lossless(frame: &[i32], s: &Samples) -> Result<Vec<u8>, String> {
    let fail = |what: &str| format!("JPEG 2000 encoding: {what}");
    let (w, h) = (s.cols as u32, s.rows as u32);
    let param = opj_image_comptparm {
        dx: 1,
        dy: 1,
        w,
        h,
        x0: 0,
        y0: 0,
        prec: u32::from(s.bits_stored),
        bpp: u32::from(s.bits_stored),
        sgnd: u32::from(s.signed),
    };
    let mut image = opj_image::create(&[param], OPJ_CLRSPC_GRAY).ok_or(fail("no image"))?;
    image.x1 = w;
    image.y1 = h;
    let data = image
        .comps_data_mut_iter()
        .and_then(|mut c| c.next())
        .ok_or(fail("no component"))?;
    if data.len() != frame.len() {
        return Err(fail("component size"));
    }
    // Sign-extended from BitsStored, as the component's precision reads them.
    let shift = 32 - u32::from(s.bits_stored);
    for (d, &v) in data.iter_mut().zip(frame) {
        *d = if s.signed {
            (v << shift) >> shift
        } else {
            v & ((1i64 << s.bits_stored) - 1) as i32
        };
    }
    // SAFETY: a zeroed parameter block is what openjp2's own API starts from before it sets
    // the defaults (a plain C struct of integers, floats and null pointers).
    let mut params: opj_cparameters_t = unsafe { std::mem::zeroed() };
    unsafe { opj_set_default_encoder_parameters(&mut params) };
    params.tcp_numlayers = 1;
    params.tcp_rates[0] = 0.0; // no rate: every bit plane, lossless
    params.cp_disto_alloc = 1;
    params.irreversible = 0;
    params.tcp_mct = 0;
    // openjp2 0.6.1 makes its default comment with Rust's allocator and frees it with libc's
    // free (an abort under mimalloc); a comment of ours, from libc's malloc as the parameter
    // block's drop frees it, is copied with openjp2's own malloc instead.
    // SAFETY: strdup of a static C string; the result is owned by `params`.
    params.cp_comment = unsafe { libc::strdup(c"ppdenoise".as_ptr()) };
    // Resolutions: at most what the smaller side allows (a level halves it).
    let side = w.min(h).max(1);
    params.numresolution = (32 - side.leading_zeros()).clamp(1, 6) as i32;
    let mut sink: Box<Sink> = Box::new(Cursor::new(Vec::new()));
    // The codec and the stream are freed by their guards on every path, the stream first
    // (its drop flushes into `sink`, which outlives both).
    let codec = CodecGuard(unsafe { opj_create_compress(OPJ_CODEC_J2K) });
    if codec.0.is_null() {
        return Err(fail("no encoder"));
    }
    let img: *mut opj_image = &mut *image;
    // SAFETY: the codec, the parameters and the image are valid for the call.
    if unsafe { opj_setup_encoder(codec.0, &mut params, img) } == 0 {
        return Err(fail("the encoder refused the frame's parameters"));
    }
    let stream = StreamGuard(unsafe { opj_stream_create(1 << 20, 0) });
    if stream.0.is_null() {
        return Err(fail("no stream"));
    }
    // SAFETY: the user data is `sink`, alive until after the stream is destroyed, freed by
    // us (no free function); the callbacks read it as the `Sink` it is.
    unsafe {
        opj_stream_set_user_data(stream.0, (&mut *sink as *mut Sink).cast(), None);
        opj_stream_set_write_function(stream.0, Some(sink_write));
        opj_stream_set_skip_function(stream.0, Some(sink_skip));
        opj_stream_set_seek_function(stream.0, Some(sink_seek));
    }
    // SAFETY: codec, image and stream are valid, set up above.
    let ok = unsafe {
        opj_start_compress(codec.0, img, stream.0) != 0
            && opj_encode(codec.0, stream.0) != 0
            && opj_end_compress(codec.0, stream.0) != 0
    };
    drop(stream);
    drop(codec);
    if !ok {
        return Err(fail("the encoder failed"));
    }
    Ok(sink.into_inner())
}

struct CodecGuard(*mut opj_codec_t);

impl Drop for CodecGuard {
    fn drop(&mut self) {
        // SAFETY: made by opj_create_compress, freed once, here.
        unsafe { opj_destroy_codec(self.0) }
    }
}

struct StreamGuard(*mut opj_stream_t);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // SAFETY: made by opj_stream_create, freed once, here (which flushes it).
        unsafe { opj_stream_destroy(self.0) }
    }
}
