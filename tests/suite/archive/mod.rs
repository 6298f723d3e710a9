//! The hospital archive (src/pacs/): a real Orthanc, fake DICOMweb and DIMSE archives.

mod dimse_fake;
mod pacs;
mod pacs_fake;
