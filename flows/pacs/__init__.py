"""Doors from a PACS: pull studies over DICOMweb (QIDO-RS / WADO-RS) or DIMSE (C-FIND / C-GET) into a
folder laid out like a download (``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``),
which the same readers as files on disk then take (``fusionrx scan``, ``fusionrx radiology``)."""

from flows.pacs.layout import PullReport, StudyRef, pulled_sop_uids
from flows.pacs.pull import pull_dicomweb, pull_dimse

__all__ = ["PullReport", "StudyRef", "pulled_sop_uids", "pull_dicomweb", "pull_dimse"]
