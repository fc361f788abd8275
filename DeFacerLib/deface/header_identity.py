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
  DICOM tags; acquisition keys (DWMRI_*, "0018|0080") stay.

DICOM outputs are scrubbed to PS3.15 by dicom.hook instead.
"""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

from DeFacerLib.io.formats import METAIMAGE, MGZ, NIFTI, NRRD
from DeFacerLib.volume import Volume

DICOM_TAG_KEY = re.compile(r"^\(?([0-9A-Fa-f]{4})[|,]([0-9A-Fa-f]{4})\)?$")


def without_identifying_header(volume: Volume) -> tuple[Volume, list[str]]:
    """(``volume`` whose source header has nothing identifying left, what was removed)."""
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
    tags, keywords = _profile_attributes()
    match = DICOM_TAG_KEY.match(key.strip())
    if match:
        group, element = int(match.group(1), 16), int(match.group(2), 16)
        return group % 2 == 1 or (group, element) in tags
    return key.strip() in keywords


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
