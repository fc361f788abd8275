"""DICOM header de-identification to DICOM PS3.15 Annex E (Basic profile + every option).

Public surface:

* ``ProfileOptions``: the options (dataclass); ``resolve_action(row, options)`` and
  ``load_profile()`` expose the generated Table E.1-1 and the rule applied to each row.
* ``Scrubber(options, key).scrub(ds, defaced=False)``: one Dataset in place, with leak check.
* ``scrub_tree(input, output, options, key, workers=1)``: a whole folder tree, atomically,
  with an audit trail (UID/patient mappings, per-file action log) kept outside the output.
* ``deidentify_dataset_hook(options, key, defaced=True)``: a ``write_volume`` dicom_hook.
* ``load_or_create_key(path)``, ``keyed_uid``, ``pseudonym``, ``date_offset_days``.
* ``find_leaks(ds, phi)``, ``read_text(ds)`` / ``clean_burned_in_text(ds, where)`` (OCR).
"""
from __future__ import annotations

from DeFacerLib.dicom.hook import DeidentifyHook, deidentify_dataset_hook
from DeFacerLib.dicom.leakcheck import Leak, PhiSet, find_leaks
from DeFacerLib.dicom.markers import METHOD_CODES
from DeFacerLib.dicom.pixels_ocr import clean_burned_in_text, read_text, tesseract_available
from DeFacerLib.dicom.profile import ProfileOptions, compile_actions, load_profile, resolve_action
from DeFacerLib.dicom.scrub import Scrubber, ScrubResult
from DeFacerLib.dicom.tree import scrub_tree
from DeFacerLib.dicom.uids import date_offset_days, default_key_path, keyed_uid, load_or_create_key, pseudonym

__all__ = [
    "ProfileOptions", "resolve_action", "load_profile", "compile_actions",
    "Scrubber", "ScrubResult", "scrub_tree",
    "DeidentifyHook", "deidentify_dataset_hook",
    "load_or_create_key", "default_key_path", "keyed_uid", "pseudonym", "date_offset_days",
    "find_leaks", "PhiSet", "Leak", "METHOD_CODES",
    "clean_burned_in_text", "read_text", "tesseract_available",
]
