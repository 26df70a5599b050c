"""QIDO-RS query parameters (PS3.18 8.3.4) parsed and matched as PS3.4 C.2.2.2 says.

Viewers filter with keywords or with tag numbers (OHIF asks for ``00100020=<id>``), with
wildcards, date ranges and UID lists. A filter the node cannot apply must never be dropped
quietly: dropping ``00100020`` once listed another patient's study in a viewer. So every
parameter is either applied exactly or refused with 400 and a message naming it; the only
parameters answered with a Warning instead are the ones the standard itself says to answer
that way (``fuzzymatching``, and a result list cut at the server's maximum).

Matching works on DICOM JSON records (PS3.18 F.2): the stored header of an instance as
JSON, overlaid with attributes the node computes (counts, ModalitiesInStudy, RetrieveURL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword

from dicom_node.uids import validate_uid

#: results per response when the client gives no limit, and the most the node ever returns
DEFAULT_LIMIT, MAX_LIMIT = 200, 1000
LEVELS = ("study", "series", "instance")

STUDY_MATCH = frozenset({
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
    "PatientName", "PatientID", "StudyInstanceUID", "StudyID", "StudyDescription",
    "PatientBirthDate", "PatientSex", "IssuerOfPatientID", "OtherPatientIDs",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "InstitutionName"})
SERIES_MATCH = frozenset({
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "ProtocolName", "Laterality", "Manufacturer",
    "StationName", "FrameOfReferenceUID"})
#: returned without asking (PS3.18 table 10.6.3-3/-4/-5 and what OHIF's lists show)
STUDY_RETURN = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_RETURN = (
    "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "StudyInstanceUID", "InstanceAvailability")
INSTANCE_RETURN = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    "StudyInstanceUID", "SeriesInstanceUID")
#: match keys the node computes rather than reads from a header
COMPUTED = frozenset({"ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                      "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
                      "InstanceAvailability", "RetrieveURL"})

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NUMERIC_VRS = frozenset({"IS", "DS", "SS", "US", "SL", "UL", "FL", "FD", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DATE = {"DA": r"\d{8}", "TM": r"\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?",
         "DT": r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?"}
#: a partial date/time stands for the span it names: padded low for a start, high for an end
_LOW = {"DA": "", "TM": "000000.000000", "DT": "00000101000000.000000"}
_HIGH = {"DA": "", "TM": "235959.999999", "DT": "99991231235959.999999"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
FUZZY_WARNING = ("The fuzzymatching parameter is not supported. "
                 "Only literal matching has been performed.")
MORE_WARNING = ("The number of results exceeded the maximum supported by the server. "
                "Additional results can be requested.")


class QueryError(ValueError):
    """A query the node cannot answer exactly: the HTTP layer answers 400 with the text."""


@dataclass(frozen=True)
class Attribute:
    tag: int
    keyword: str
    vr: str

    @property
    def hex(self) -> str:
        """The DICOM JSON key (PS3.18 F.2.1.1)."""
        return f"{self.tag:08X}"


def attribute(name: str) -> Attribute:
    """A keyword (``PatientID``) or 8 hex digits (``00100020``) of a public attribute."""
    if "." in name:
        raise QueryError(f"{name!r}: sequence (dotted) match keys are not supported")
    if _TAG.match(name):
        tag = int(name, 16)
        if not dictionary_has_tag(tag):
            raise QueryError(f"{name!r} is not a public DICOM attribute tag")
    else:
        found = tag_for_keyword(name)
        if found is None:
            raise QueryError(f"unknown query parameter {name!r}: expected a DICOM attribute "
                             "keyword or tag, includefield, fuzzymatching, limit or offset")
        tag = found
    if tag >> 16 in (0x0000, 0x0002, 0xFFFE):
        raise QueryError(f"{name!r} is not a data set attribute")
    return Attribute(tag, keyword_for_tag(tag), dictionary_VR(tag))


def values(element: dict[str, Any] | None) -> list[Any]:
    """The values of a DICOM JSON element; person names as their alphabetic group."""
    out = []
    for value in (element or {}).get("Value", []):
        if isinstance(value, dict):
            value = value.get("Alphabetic", "")
        if isinstance(value, str):
            value = value.rstrip(" \x00")
        if value is not None and value != "":
            out.append(value)
    return out


def _wildcard(pattern: str, fold: bool) -> Callable[[Any], bool]:
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                               for c in pattern), re.DOTALL | (re.IGNORECASE if fold else 0))
    return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None


def _literal(text: str, fold: bool) -> Callable[[Any], bool]:
    want = text.casefold() if fold else text
    return lambda value: isinstance(value, str) and (value.casefold() if fold else value) == want


def _string_test(attr: Attribute, text: str) -> Callable[[Any], bool]:
    """PN matches case-insensitively (allowed by PS3.4 C.2.2.2.1); other VRs exactly."""
    fold = attr.vr == "PN"
    if "*" in text or "?" in text:
        return _wildcard(text, fold)
    return _literal(text, fold)


def _date_bound(attr: Attribute, text: str, high: bool) -> str:
    if not re.fullmatch(_DATE[attr.vr], text):
        raise QueryError(f"{attr.keyword}: {text!r} is not a valid {attr.vr} value")
    template = (_HIGH if high else _LOW)[attr.vr]
    return text + template[len(text):]


def _stored_date(vr: str, value: Any) -> str | None:
    """A stored DA/TM/DT in the padded comparable form; offsets and separators dropped."""
    text = str(value).replace(":", "")
    if vr == "DT":
        text = re.split(r"[+-]", text, maxsplit=1)[0]
    if not re.fullmatch(_DATE[vr], text):
        return None
    return text + _LOW[vr][len(text):]


def _date_test(attr: Attribute, text: str) -> Callable[[Any], bool]:
    """Range ``a-b``, ``-b``, ``a-`` (inclusive); a single partial TM/DT covers its span."""
    if "-" in text:
        low_text, _, high_text = text.partition("-")
        if not low_text and not high_text:
            raise QueryError(f"{attr.keyword}: a range needs at least one bound")
    else:
        low_text = high_text = text
    low = _date_bound(attr, low_text, False) if low_text else None
    high = _date_bound(attr, high_text, True) if high_text else None
    if low and high and low > high:
        raise QueryError(f"{attr.keyword}: range {text!r} ends before it starts")

    def test(value: Any) -> bool:
        stored = _stored_date(attr.vr, value)
        return stored is not None and (low is None or stored >= low) and (
            high is None or stored <= high)
    return test


def _numeric_test(attr: Attribute, text: str) -> Callable[[Any], bool]:
    try:
        want = float(text)
    except ValueError:
        raise QueryError(f"{attr.keyword}: {text!r} is not a number ({attr.vr})") from None

    def test(value: Any) -> bool:
        try:
            return float(value) == want
        except (TypeError, ValueError):
            return False
    return test


def _items(text: str) -> list[str]:
    """UID list matching: comma- or backslash-separated (PS3.18 8.3.4.1)."""
    items = [item.strip() for item in re.split(r"[,\\]", text)]
    if any(not item for item in items):
        raise QueryError(f"empty item in list {text!r}")
    return items


@dataclass(frozen=True)
class MatchKey:
    attr: Attribute
    raw: str
    #: None means universal matching: the attribute is only asked for as a return key
    test: Callable[[Any], bool] | None

    def matches(self, record: dict[str, Any]) -> bool:
        """Any stored value of a multi-valued attribute may match (PS3.4 C.2.2.2)."""
        return self.test is None or any(self.test(v) for v in values(record.get(self.attr.hex)))


def match_key(attr: Attribute, raw: str) -> MatchKey:
    """The matching PS3.4 C.2.2.2 gives the value and the attribute's VR."""
    text = raw.strip(" ")
    vr = attr.vr
    if not text or (text == "*" and vr in WILDCARD_VRS):
        return MatchKey(attr, raw, None)
    if vr == "UI":
        uids = {validate_uid(u, attr.keyword) for u in _items(text)}
        return MatchKey(attr, raw, lambda value: value in uids)
    if attr.keyword == "ModalitiesInStudy":
        tests = [_string_test(attr, item) for item in _items(text)]
        return MatchKey(attr, raw, lambda value: any(t(value) for t in tests))
    if vr in WILDCARD_VRS:
        if "\\" in text:
            raise QueryError(f"{attr.keyword}: multiple-value matching (backslash) is not "
                             "supported")
        return MatchKey(attr, raw, _string_test(attr, text))
    if vr in _DATE:
        return MatchKey(attr, raw, _date_test(attr, text))
    if vr in NUMERIC_VRS:
        return MatchKey(attr, raw, _numeric_test(attr, text))
    raise QueryError(f"{attr.keyword} ({vr}) cannot be used as a match key; only as a "
                     "return key (empty value or includefield)")


def _allowed(attr: Attribute, level: str) -> bool:
    """Study keys everywhere, series keys at series and instance level, any attribute of
    the instance's own header at instance level (matched against that header)."""
    if attr.tag >> 16 == 0x0010 or attr.keyword in STUDY_MATCH:
        return True
    if level == "series":
        return attr.keyword in SERIES_MATCH
    return level == "instance" and attr.keyword not in COMPUTED


def _bool(name: str, text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise QueryError(f"{name} must be true or false, got {text!r}")


def _int(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise QueryError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Query:
    level: str
    keys: tuple[MatchKey, ...]
    include: frozenset[str]
    include_all: bool
    limit: int
    offset: int
    #: whether a result list cut at `limit` was cut by the server rather than by the client
    server_limited: bool
    warnings: tuple[str, ...]

    def matches(self, record: dict[str, Any]) -> bool:
        return all(key.matches(record) for key in self.keys)

    def key(self, keyword: str) -> MatchKey | None:
        return next((k for k in self.keys if k.attr.keyword == keyword), None)

    def exact(self, keyword: str) -> list[str] | None:
        """The values a database column must hold when the key is a literal or UID list
        (wildcards are left to `matches`): lets the search skip rows up front."""
        key = self.key(keyword)
        if key is None or key.test is None:
            return None
        text = key.raw.strip(" ")
        if key.attr.vr == "UI":
            return _items(text)
        if "*" in text or "?" in text or key.attr.vr == "PN":
            return None
        return [text]

    def project(self, record: dict[str, Any], defaults: Iterable[str],
                level_all: Callable[[str], bool]) -> dict[str, Any]:
        """The attributes to return: defaults, match keys, includefield (or all of the
        level). Asked-for attributes that are absent come back empty (PS3.18 8.3.4)."""
        asked = {k.attr.hex: k.attr.vr for k in self.keys}
        asked.update({t: dictionary_VR(int(t, 16)) for t in self.include})
        wanted = {f"{tag_for_keyword(kw):08X}" for kw in defaults} | set(asked)
        if self.include_all:
            wanted |= {t for t, el in record.items()
                       if level_all(t) and el.get("vr") not in BINARY_VRS}
        out = {t: record[t] for t in wanted if t in record}
        for t, vr in asked.items():
            if t not in out and " or " not in vr:
                out[t] = {"vr": vr}
        return dict(sorted(out.items()))


def parse(items: Iterable[tuple[str, str]], level: str) -> Query:
    """Every parameter is applied or refused: QueryError names the first one refused."""
    keys: dict[str, MatchKey] = {}
    include: set[str] = set()
    include_all = fuzzy = False
    limit: int | None = None
    offset = 0
    seen: set[str] = set()
    for name, raw in items:
        if name in ("limit", "offset", "fuzzymatching"):
            if name in seen:
                raise QueryError(f"{name} given more than once")
            seen.add(name)
            if name == "limit":
                limit = _int(name, raw, 1)
            elif name == "offset":
                offset = _int(name, raw, 0)
            else:
                fuzzy = _bool(name, raw)
            continue
        if name == "includefield":
            for item in (i.strip() for i in raw.split(",")):
                if item == "all":
                    include_all = True
                elif item:
                    include.add(attribute(item).hex)
            continue
        attr = attribute(name)
        if attr.hex in keys:
            raise QueryError(f"{name}: {attr.keyword} given more than once")
        key = match_key(attr, raw)
        if key.test is not None and not _allowed(attr, level):
            named = name if name == attr.keyword else f"{name} ({attr.keyword})"
            raise QueryError(f"{named} is not supported as a match key at the {level} level; "
                             "see the conformance statement for the keys")
        keys[attr.hex] = key
    server_limited = limit is None or limit > MAX_LIMIT
    return Query(level=level, keys=tuple(keys.values()), include=frozenset(include),
                 include_all=include_all, limit=min(limit or DEFAULT_LIMIT, MAX_LIMIT),
                 offset=offset, server_limited=server_limited,
                 warnings=(FUZZY_WARNING,) if fuzzy else ())


def _keyword_tags(keywords: Iterable[str]) -> frozenset[str]:
    return frozenset(f"{tag_for_keyword(kw):08X}" for kw in keywords)


_STUDY_ALL = _keyword_tags(STUDY_MATCH | set(STUDY_RETURN) | {"IssuerOfAccessionNumberSequence",
                                                             "ReferencedStudySequence"})
_SERIES_ALL = _keyword_tags(SERIES_MATCH | set(SERIES_RETURN))


def level_all(level: str) -> Callable[[str], bool]:
    """What ``includefield=all`` returns: the patient and study attributes of a study, the
    series attributes of a series, every non-binary attribute of an instance's header."""
    if level == "study":
        return lambda t: t.startswith("0010") or t in _STUDY_ALL
    if level == "series":
        return lambda t: t in _SERIES_ALL
    return lambda t: True
