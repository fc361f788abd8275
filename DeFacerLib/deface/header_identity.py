"""What a defaced volume must not carry over from its input's header: names, paths, machines.

The output keeps the input's header, field for field, except what can name a person, a
machine or a file, which no head image needs:

- NIfTI: the extensions (a whole DICOM header, comments, XML; nifti.nifti_header_without_identity)
  and the free-text ``db_name`` and ``aux_file``; ``descrip`` becomes the deface note;
- MGZ: FreeSurfer's command-line tags (each says who ran what on which machine, on which
  paths) and the transform's file name (nifti.mgh_footer_without_identity); the scan
  parameters and the other tags stay;
- NRRD and MetaImage: keys that are DICOM attributes the PS3.15 Basic profile does not keep
  as they are ("0010|0010", as ITK writes a DICOM series' tags, or "PatientName"), and private
  DICOM tags; NRRD's free-text ``content`` field (ITK's NRRD_content: a converter or a user
  writes what the scan is, often whose); and any other key whose name says it holds a person,
  a place or a date (IDENTIFYING_KEY_WORDS: "patient:=...", "scan_date", "Operator"), since
  nothing else knows what a free key holds; the NIfTI free text ITK copies into the metadata
  (descrip, ITK_FileNotes, aux_file, db_name) goes as in a NIfTI output. Acquisition and
  geometry keys (DWMRI_*, "0018|0080", "PatientPosition", which is a DICOM attribute the
  profile keeps, and "name" keys that name a code, an intent, a sequence, a coil or a
  scanner model: qform_code_name, intent_name, sequence_name) stay.

DICOM outputs are scrubbed to PS3.15 by dicom.hook instead.
"""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

from DeFacerLib.io.formats import METAIMAGE, MGZ, NIFTI, NRRD
from DeFacerLib.volume import Volume

DICOM_TAG_KEY = re.compile(r"^\(?([0-9A-Fa-f]{4})[|,]([0-9A-Fa-f]{4})\)?$")
# Free text a converter or a user fills in: NRRD's content, and the NIfTI header's own free-text
# fields that ITK copies into the metadata of an NRRD/MetaImage made from a NIfTI (descrip is
# also ITK_FileNotes; dcm2niix writes the acquisition time there; the NIfTI path drops them too).
FREE_TEXT_KEYS = frozenset({"NRRD_content", "ITK_FileNotes", "descrip", "aux_file", "db_name"})
# A free key (not a DICOM attribute's tag or keyword) goes when one of its words is one of these.
IDENTIFYING_KEY_WORDS = frozenset({
    "patient", "subject", "participant", "name", "names", "birth", "birthdate", "dob", "born", "age", "sex",
    "date", "physician", "doctor", "operator", "operators", "technologist", "institution", "hospital", "site",
    "address", "phone", "telephone", "email", "accession", "mrn", "ssn", "referring", "performing",
})
_KEY_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# "name" right after one of these names a thing, not a person or a place: an enumerated code
# (ITK's qform_code_name, sform_code_name from a NIfTI), the data's intent (NIfTI intent_name,
# which the NIfTI path keeps), a pulse sequence, a coil or a scanner model (PS3.15 keeps
# SequenceName, ReceiveCoilName and ManufacturerModelName).
HARMLESS_NAME_QUALIFIERS = frozenset({"code", "intent", "sequence", "coil", "model"})


def without_identifying_header(volume: Volume) -> tuple[Volume, list[str]]:
    """(``volume`` whose source header has nothing identifying left, what was removed).

    A DICOM source is returned as it is: its datasets are de-identified only as they are
    written, by ``write_volume(..., dicom_hook=dicom.hook.deidentify_dataset_hook(...))``."""
    from DeFacerLib.io.itk_formats import FORMAT_NAMES
    from DeFacerLib.io.nifti import mgh_footer_without_identity, nifti_header_without_identity

    source = volume.source
    if source is None or not source.header:
        return volume, []
    if source.format == NIFTI:
        header, removed = nifti_header_without_identity(source.header)
    elif source.format == MGZ:
        footer, removed = mgh_footer_without_identity(source.header["footer"])
        header = {**source.header, "footer": footer}
    elif source.format in (NRRD, METAIMAGE):
        metadata = source.header.get("metadata", {})
        gone = [key for key in metadata if _identifying_key(key)]
        header = {**source.header, "metadata": {k: v for k, v in metadata.items() if k not in gone}}
        removed = [f"{FORMAT_NAMES[source.format]} key {key}" for key in gone]
    else:
        return volume, []
    if not removed:
        return volume, []
    return dataclasses.replace(volume, source=dataclasses.replace(source, header=header)), removed


def _identifying_key(key: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    key = key.strip()
    tags, keywords = _profile_attributes()
    match = DICOM_TAG_KEY.match(key)
    if match:
        group, element = int(match.group(1), 16), int(match.group(2), 16)
        return group % 2 == 1 or (group, element) in tags
    if tag_for_keyword(key) is not None:  # a DICOM attribute by keyword: the profile decides
        return key in keywords
    return key in FREE_TEXT_KEYS or bool(_identifying_words(key))


def _identifying_words(key: str) -> list[str]:
    """The words of a free key that say it holds a person, a place or a date."""
    words = [word.lower() for word in _KEY_WORD.findall(key)]
    return [word for position, word in enumerate(words) if word in IDENTIFYING_KEY_WORDS
            and not (word in ("name", "names") and position > 0 and words[position - 1] in HARMLESS_NAME_QUALIFIERS)]


@lru_cache(maxsize=1)
def _profile_attributes() -> tuple[frozenset, frozenset]:
    """(tags, keywords) of the PS3.15 table's attributes whose Basic profile action is not K."""
    from DeFacerLib.dicom.profile import load_profile

    tags, keywords = set(), set()
    for row in load_profile()["rows"]:
        if row["basic"] == "K":
            continue
        if row.get("keyword"):
            keywords.add(row["keyword"])
        try:
            tags.add((int(row["group"], 16), int(row["element"], 16)))
        except ValueError:  # repeating groups such as 50xx: no ITK key is written that way
            continue
    return frozenset(tags), frozenset(keywords)
