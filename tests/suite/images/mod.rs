//! Images in (src/image/): DICOM decoding and writing, colour PNG and TIFF inputs, alpha, colour
//! DICOM.

mod colour_alpha;
mod colour_dicom;
mod colour_input;
mod dicom;
