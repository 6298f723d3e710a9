//! The hospital's archive through DIMSE, on dicom-rs's association layer (`dicom-ul`): the
//! command sets and the reassembly of messages from P-DATA fragments (`command.rs`), a
//! C-STORE SCP that files what it receives one folder per series (`store_scp.rs`, the
//! `receive` command and the receiving end of a C-MOVE), a C-STORE SCU that files a derived
//! series back (`store_scu.rs`), and C-FIND then C-MOVE to take a series out (`retrieve.rs`).
//! Like the DICOMweb half, only whole DICOM files travel here, between the hospital's archive
//! and its gateway or receiver.

pub mod command;
pub mod retrieve;
pub mod store_scp;
pub mod store_scu;
pub mod watch;

use anyhow::{bail, Result};

/// An archive as the command line names it: `dimse:AET@HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimseAddr {
    pub aet: String,
    pub host: String,
    pub port: u16,
}

/// Whether `s` is an AE title: 1 to 16 characters of printable ASCII, no backslash (the
/// value delimiter), not only spaces.
pub fn valid_aet(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
        && !s.trim().is_empty()
}

/// `what` AE title `s` checked.
pub fn checked_aet(s: &str, what: &str) -> Result<String> {
    if !valid_aet(s) {
        bail!(
            "{what} {s:?}: not an AE title (1 to 16 printable ASCII characters, no backslash, \
             not only spaces)"
        );
    }
    Ok(s.trim().to_string())
}

impl DimseAddr {
    /// Parses `dimse:AET@HOST:PORT`; `what` names the option in errors.
    pub fn parse(s: &str, what: &str) -> Result<DimseAddr> {
        let Some(rest) = s.strip_prefix("dimse:") else {
            bail!("{what} {s}: not a DIMSE archive; give dimse:AET@HOST:PORT");
        };
        let Some((aet, hostport)) = rest.rsplit_once('@') else {
            bail!("{what} {s}: no AE title; give dimse:AET@HOST:PORT");
        };
        let aet = checked_aet(aet, &format!("{what} {s}: the archive's"))?;
        let (host, port) = match hostport.strip_prefix('[') {
            Some(h) => match h.split_once("]:") {
                Some((h, p)) => (h, p),
                None => bail!("{what} {s}: no port; give dimse:AET@HOST:PORT"),
            },
            None => match hostport.rsplit_once(':') {
                Some(hp) => hp,
                None => bail!("{what} {s}: no port; give dimse:AET@HOST:PORT"),
            },
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            bail!("{what} {s}: {host:?} is not a host");
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => bail!("{what} {s}: {port:?} is not a port (1 to 65535)"),
        };
        Ok(DimseAddr {
            aet,
            host: host.to_string(),
            port,
        })
    }

    /// `HOST:PORT` for a socket (an IPv6 address in brackets).
    pub fn socket(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for DimseAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dimse:{}@{}", self.aet, self.socket())
    }
}

/// The storage SOP classes of images, which `receive` accepts: single- and multi-frame CT,
/// MR, CR, DX, MG, IO, US, NM, PET, XA, RF, RT image, secondary capture and visible light.
/// Anything else (a structured report, a presentation state, a waveform) is refused at the
/// association.
pub const IMAGE_STORAGE: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",      // CR
    "1.2.840.10008.5.1.4.1.1.1.1",    // DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  // DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",    // MG for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  // MG for processing
    "1.2.840.10008.5.1.4.1.1.1.3",    // IO for presentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",  // IO for processing
    "1.2.840.10008.5.1.4.1.1.2",      // CT
    "1.2.840.10008.5.1.4.1.1.2.1",    // enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",    // legacy converted enhanced CT
    "1.2.840.10008.5.1.4.1.1.3.1",    // US multi-frame
    "1.2.840.10008.5.1.4.1.1.4",      // MR
    "1.2.840.10008.5.1.4.1.1.4.1",    // enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4",    // legacy converted enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",    // US
    "1.2.840.10008.5.1.4.1.1.7",      // secondary capture
    "1.2.840.10008.5.1.4.1.1.7.1",    // multi-frame single bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",    // multi-frame grayscale byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",    // multi-frame grayscale word SC
    "1.2.840.10008.5.1.4.1.1.7.4",    // multi-frame true colour SC
    "1.2.840.10008.5.1.4.1.1.12.1",   // XA
    "1.2.840.10008.5.1.4.1.1.12.2",   // RF
    "1.2.840.10008.5.1.4.1.1.20",     // NM
    "1.2.840.10008.5.1.4.1.1.77.1.4", // VL photographic
    "1.2.840.10008.5.1.4.1.1.128",    // PET
    "1.2.840.10008.5.1.4.1.1.128.1",  // legacy converted enhanced PET
    "1.2.840.10008.5.1.4.1.1.130",    // enhanced PET
    "1.2.840.10008.5.1.4.1.1.481.1",  // RT image
];

/// The transfer syntaxes `receive` accepts: those the project's DICOM reader decodes, but
/// deflated explicit VR little endian (its inflation is bounded for files, not for a peer's
/// message: an archive sends the image in another of these).
pub const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",    // explicit VR little endian
    "1.2.840.10008.1.2",      // implicit VR little endian
    "1.2.840.10008.1.2.2",    // explicit VR big endian
    "1.2.840.10008.1.2.5",    // RLE lossless
    "1.2.840.10008.1.2.4.50", // JPEG baseline
    "1.2.840.10008.1.2.4.51", // JPEG extended (12-bit)
    "1.2.840.10008.1.2.4.57", // JPEG lossless
    "1.2.840.10008.1.2.4.70", // JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80", // JPEG-LS lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
];

/// The Verification SOP class (C-ECHO), which `receive` answers too.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// What the DIMSE tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use dicom_core::{dicom_value, DataElement, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;

    /// A CT slice file of `series` (study 1.2.826.0.1.3680043.8.498.1), its SOP Instance
    /// `sop`, one pixel of value `v`, written to `path`.
    pub fn slice(path: &Path, series: &str, sop: &str, v: u16) {
        let st = |tag, vr, x: &str| DataElement::new(tag, vr, dicom_value!(Str, x));
        let us = |tag, x: u16| DataElement::new(tag, VR::US, dicom_value!(U16, [x]));
        let class = "1.2.840.10008.5.1.4.1.1.2";
        let obj = InMemDicomObject::from_element_iter([
            st(tags::SOP_CLASS_UID, VR::UI, class),
            st(tags::SOP_INSTANCE_UID, VR::UI, sop),
            st(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.8.498.1",
            ),
            st(tags::SERIES_INSTANCE_UID, VR::UI, series),
            us(tags::SAMPLES_PER_PIXEL, 1),
            st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            us(tags::ROWS, 1),
            us(tags::COLUMNS, 1),
            us(tags::BITS_ALLOCATED, 16),
            us(tags::BITS_STORED, 12),
            us(tags::HIGH_BIT, 11),
            us(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_value!(U16, [v])),
        ]);
        obj.with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid(class)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap()
        .write_to_file(path)
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimse_addresses_are_aet_at_host_port() {
        let a = DimseAddr::parse("dimse:ORTHANC@127.0.0.1:4242", "--to").unwrap();
        assert_eq!(
            (a.aet.as_str(), a.host.as_str(), a.port),
            ("ORTHANC", "127.0.0.1", 4242)
        );
        assert_eq!(a.to_string(), "dimse:ORTHANC@127.0.0.1:4242");
        let b = DimseAddr::parse("dimse:PACS@[::1]:104", "--to").unwrap();
        assert_eq!(
            (b.host.as_str(), b.socket()),
            ("::1", "[::1]:104".to_string())
        );
        for (bad, says) in [
            ("dicomweb:http://h/", "not a DIMSE archive"),
            ("dimse:h:104", "no AE title"),
            ("dimse:@h:104", "not an AE title"),
            ("dimse:AVERYLONGAETITLE17@h:104", "not an AE title"),
            ("dimse:A\\B@h:104", "not an AE title"),
            ("dimse:AE@h", "no port"),
            ("dimse:AE@h:0", "not a port"),
            ("dimse:AE@h:70000", "not a port"),
            ("dimse:AE@:104", "not a host"),
        ] {
            let e = DimseAddr::parse(bad, "--to").unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
