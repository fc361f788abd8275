"""The DICOM hook of the deface path: ``write_volume(volume, out, dicom_hook=hook)``.

Every dataset the writer is about to save is de-identified in place (same rules as
``defacer scrub``); with ``defaced=True`` it becomes part of a NEW series (SOP Instance and
Series Instance UIDs from their own keyed namespace, so they never collide with a scrub of
the original), the Study and Frame of Reference UIDs stay keyed as in a plain scrub (the
defaced series sits in the same pseudonymised study), and 113102 Clean Recognizable Visual
Features is recorded. A leak raises ``GuaranteeError``, so ``atomic_path`` publishes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from DeFacerLib.dicom.profile import ProfileOptions
from DeFacerLib.dicom.scrub import Scrubber
from DeFacerLib.errors import GuaranteeError


@dataclass
class DeidentifyHook:
    """Callable ``(ds, index)``; keeps the mappings and per-file actions for the audit trail."""

    options: ProfileOptions
    key: bytes
    defaced: bool = True
    renamed_uids: frozenset = frozenset()
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_map: dict[str, str] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.scrubber = Scrubber(self.options, self.key, renamed_uids=self.renamed_uids if self.defaced else frozenset())

    def __call__(self, ds: Dataset, index: int) -> None:
        result = self.scrubber.scrub(ds, defaced=self.defaced, where=f"DICOM file {index}")
        if result.leaks:
            # without the value found: batch puts this reason in its shared reports
            raise GuaranteeError(f"PHI left in DICOM file {index} after de-identification: "
                                 f"{result.leaks[0].line_without_value()}; nothing was written")
        self.uid_map.update(result.uid_map)
        if result.patient:
            self.patient_map[result.patient[0]] = result.patient[1]
        self.records.append({"index": index, "actions": result.action_rows(), "kept_untouched": result.kept})

    def write_audit(self, folder) -> dict:
        from pathlib import Path

        from DeFacerLib.dicom.audit import write_audit

        return write_audit(Path(folder), self.uid_map, self.patient_map, self.records,
                           {"files": len(self.records), "defaced": self.defaced, "options": vars(self.options)})


def deidentify_dataset_hook(options: ProfileOptions, key: bytes, *, defaced: bool,
                            series_datasets=()) -> DeidentifyHook:
    """A ``dicom_hook`` for ``write_volume`` that de-identifies every dataset written.

    With ``defaced``, pass the series' source datasets: their SOP Instance and Series UIDs
    move to the new series everywhere they occur, references between its instances included.
    """
    renamed = set()
    for ds in series_datasets:
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
            value = str(ds.get(keyword, "") or "").strip()
            if value:
                renamed.add(value)
    return DeidentifyHook(options=options, key=key, defaced=defaced, renamed_uids=frozenset(renamed))
