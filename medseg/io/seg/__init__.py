"""DICOM Segmentation objects: writer, reader and checks (public face: :mod:`medseg.io.dicom_seg`)."""
