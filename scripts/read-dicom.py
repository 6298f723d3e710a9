#!/usr/bin/env python3
"""What an independent reader, pydicom, sees of a DICOM file ppdenoise wrote: one line of
JSON with the derived-series attributes and the stored pixel values (per frame for a
multi-frame file). tests/suite/images/dicom.rs runs it in .venv-dicom (`make dicom-testdata`)."""
import json
import sys

import pydicom


def main():
    ds = pydicom.dcmread(sys.argv[1])
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    out = {
        "TransferSyntaxUID": str(ds.file_meta.TransferSyntaxUID),
        "SOPInstanceUID": str(ds.SOPInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "SeriesDescription": str(ds.get("SeriesDescription", "")),
        "ImageType": list(ds.ImageType),
        "DerivationDescription": str(ds.get("DerivationDescription", "")),
        "SourceImageSOPInstanceUIDs": [
            str(item.ReferencedSOPInstanceUID) for item in ds.get("SourceImageSequence", [])
        ],
        "NumberOfFrames": frames,
        "SamplesPerPixel": int(ds.SamplesPerPixel),
        "PhotometricInterpretation": str(ds.PhotometricInterpretation),
        "PlanarConfiguration": ds.get("PlanarConfiguration"),
        "BitsAllocated": int(ds.BitsAllocated),
        "SeriesNumber": str(ds.get("SeriesNumber", "")),
        "SeriesDate": str(ds.get("SeriesDate", "")),
        "ContentDate": str(ds.get("ContentDate", "")),
        "InstanceCreationDate": str(ds.get("InstanceCreationDate", "")),
        "Equipment": [
            [str(i.get("Manufacturer", "")), str(i.get("SoftwareVersions", "")),
             [str(c.CodeValue) for c in i.get("PurposeOfReferenceCodeSequence", [])]]
            for i in ds.get("ContributingEquipmentSequence", [])
        ],
        "DerivationCodes": [
            [str(c.CodeValue), str(c.CodingSchemeDesignator)]
            for c in ds.get("DerivationCodeSequence", [])
        ],
        "PrivateTags": sum(1 for e in ds if e.tag.is_private),
        "OverlayGroups": sorted({e.tag.group for e in ds if 0x6000 <= e.tag.group <= 0x601E}),
        "pixels": arr.reshape(-1).tolist(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
