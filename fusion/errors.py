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


class StoreBusyError(FusionRxError):
    """Another pipeline run holds the store's run lock (names the holder's pid, host and start)."""
