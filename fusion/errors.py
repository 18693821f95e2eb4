"""The one error hierarchy of FusionRx.

It lives in ``fusion`` (which imports no modality package) so that every package,
modality packages included, can derive its own error class from ``FusionRxError``
without importing each other or ``flows``.
"""


class FusionRxError(Exception):
    """Base class for every error FusionRx raises on bad input or state."""


class CatalogError(FusionRxError):
    """The data catalog is malformed: a wrong path, unknown modality or missing field."""


class DicomSeriesError(FusionRxError):
    """A DICOM series cannot be read or is inconsistent (names the file and the tag)."""


class SlideError(FusionRxError):
    """A whole-slide image cannot be opened or read."""


class OmicsFormatError(FusionRxError):
    """A GDC/TCGA omics file (counts, MAF, copy number, clinical) is malformed."""


class SpatialError(FusionRxError):
    """A spatial transcriptomics file (h5ad) is malformed or lacks required slots."""


class MoleculeError(FusionRxError):
    """A SMILES/SDF record or compound table cannot be parsed."""


class FusionDataError(FusionRxError):
    """Multimodal inputs are inconsistent (shapes, patients, masks)."""


class FusionConfigError(FusionRxError):
    """A fusion experiment is misconfigured: unknown strategy or task, bad sizes or options."""


class SegmentationError(FusionRxError):
    """A segmentation (RTSTRUCT, DICOM SEG, NIfTI mask) cannot be read or placed on the image grid."""


class FeatureFileError(FusionRxError):
    """A precomputed feature table or tile-feature HDF5 file is malformed (names the file and field)."""


class SpecError(FusionConfigError):
    """An experiment spec is invalid: names the spec file, the key, what was expected and found."""


class QueryError(FusionRxError):
    """A results query is malformed: unknown gene or run, bad paging, weights or score bounds."""


class PacsError(FusionRxError):
    """A PACS (DICOMweb or DIMSE) could not be queried or a study could not be pulled."""


class StoreBusyError(FusionRxError):
    """Another pipeline run holds the store's run lock (names the holder's pid, host and start)."""


class TileEncoderError(FusionRxError):
    """A tile-encoder spec or its weights are unusable (names the config field or weights file, expected and found)."""
