#!/usr/bin/env python3
"""What an independent reader, pydicom, sees of a DICOM file ppdenoise wrote: one line of
JSON with the derived-series attributes and the stored pixel values (per frame for a
multi-frame file). tests/dicom.rs runs it in .venv-dicom (`make dicom-testdata`)."""
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
        "pixels": arr.reshape(-1).tolist(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
