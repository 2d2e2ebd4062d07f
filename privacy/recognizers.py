"""Tacit's own recognizers: US postal (street) addresses, and PII in disguise.

``DisguisedPiiRecognizer`` (at the end) finds what Presidio's ``\\b``-anchored
patterns miss: values glued to letters, IBANs in any case, e-mails spelled out.

Presidio has no English street-address recognizer, and without an NER model
nothing finds "1600 Pennsylvania Avenue". ``StreetAddressRecognizer`` finds
the lines of a US postal address and labels every one ``STREET_ADDRESS``
(not ``LOCATION``: that label stays with NER cities and countries, so audit
counts tell the two apart and ``entities`` can select either):

* a street line: house number, 1-4 capitalized name words (or ordinals like
  ``5th``), a USPS street suffix (``Street``/``St``, ``Avenue``/``Ave``,
  ``Parkways``...), then an optional unit (``Apt. 915``, ``Suite 158``,
  ``Unit 4B``, ``# 12``); no context word needed (score 0.5);
* the same line written all in lower case (``12 oak st``): only counted next
  to a context word (``address``, ``street``, ``live``, ``ship``...), since
  lower-case suffixes are everyday words (score 0.15, 0.5 with context);
* a ``City, ST 12345[-6789]`` line (US state or territory code, ZIP code),
  which also covers ``APO AE 12345`` military lines, and their first lines
  (``PSC 1234, Box 5678``, ``Unit 1234 Box 5678``, ``USNS Name`` before an
  ``FPO`` line) (score 0.5).

Suffixes (USPS Publication 28, appendix C1: primary names and standard
abbreviations) and state codes are data; the regexes are built from them.
Every quantifier is bounded and adjacent parts use disjoint character
classes, so a match attempt costs at most a few dozen steps per start
position (linear in the text); the analyzer still wraps each pattern in its
time-out. Known misses: suffix-less streets ("1600 Broadway"), non-US
formats. Known false positives: a number followed by capitalized words that
end in a suffix word, e.g. a title like "2019 Harbor Lights".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import regex
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

# Offline public-suffix list: no URLs to fetch, no cache directory to write.
OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(
    cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True
)


class RegexTimeoutError(RuntimeError):
    """A recognizer regex ran past its time budget; the caller must fail closed."""

STREET_ADDRESS = "STREET_ADDRESS"

# USPS Publication 28, appendix C1: (primary suffix name, standard abbreviation).
USPS_STREET_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("Alley", "Aly"), ("Anex", "Anx"), ("Arcade", "Arc"), ("Avenue", "Ave"),
    ("Bayou", "Byu"), ("Beach", "Bch"), ("Bend", "Bnd"), ("Bluff", "Blf"),
    ("Bluffs", "Blfs"), ("Bottom", "Btm"), ("Boulevard", "Blvd"), ("Branch", "Br"),
    ("Bridge", "Brg"), ("Brook", "Brk"), ("Brooks", "Brks"), ("Burg", "Bg"),
    ("Burgs", "Bgs"), ("Bypass", "Byp"), ("Camp", "Cp"), ("Canyon", "Cyn"),
    ("Cape", "Cpe"), ("Causeway", "Cswy"), ("Center", "Ctr"), ("Centers", "Ctrs"),
    ("Circle", "Cir"), ("Circles", "Cirs"), ("Cliff", "Clf"), ("Cliffs", "Clfs"),
    ("Club", "Clb"), ("Common", "Cmn"), ("Commons", "Cmns"), ("Corner", "Cor"),
    ("Corners", "Cors"), ("Course", "Crse"), ("Court", "Ct"), ("Courts", "Cts"),
    ("Cove", "Cv"), ("Coves", "Cvs"), ("Creek", "Crk"), ("Crescent", "Cres"),
    ("Crest", "Crst"), ("Crossing", "Xing"), ("Crossroad", "Xrd"), ("Crossroads", "Xrds"),
    ("Curve", "Curv"), ("Dale", "Dl"), ("Dam", "Dm"), ("Divide", "Dv"),
    ("Drive", "Dr"), ("Drives", "Drs"), ("Estate", "Est"), ("Estates", "Ests"),
    ("Expressway", "Expy"), ("Extension", "Ext"), ("Extensions", "Exts"), ("Fall", "Fall"),
    ("Falls", "Fls"), ("Ferry", "Fry"), ("Field", "Fld"), ("Fields", "Flds"),
    ("Flat", "Flt"), ("Flats", "Flts"), ("Ford", "Frd"), ("Fords", "Frds"),
    ("Forest", "Frst"), ("Forge", "Frg"), ("Forges", "Frgs"), ("Fork", "Frk"),
    ("Forks", "Frks"), ("Fort", "Ft"), ("Freeway", "Fwy"), ("Garden", "Gdn"),
    ("Gardens", "Gdns"), ("Gateway", "Gtwy"), ("Glen", "Gln"), ("Glens", "Glns"),
    ("Green", "Grn"), ("Greens", "Grns"), ("Grove", "Grv"), ("Groves", "Grvs"),
    ("Harbor", "Hbr"), ("Harbors", "Hbrs"), ("Haven", "Hvn"), ("Heights", "Hts"),
    ("Highway", "Hwy"), ("Hill", "Hl"), ("Hills", "Hls"), ("Hollow", "Holw"),
    ("Inlet", "Inlt"), ("Island", "Is"), ("Islands", "Iss"), ("Isle", "Isle"),
    ("Junction", "Jct"), ("Junctions", "Jcts"), ("Key", "Ky"), ("Keys", "Kys"),
    ("Knoll", "Knl"), ("Knolls", "Knls"), ("Lake", "Lk"), ("Lakes", "Lks"),
    ("Land", "Land"), ("Landing", "Lndg"), ("Lane", "Ln"), ("Light", "Lgt"),
    ("Lights", "Lgts"), ("Loaf", "Lf"), ("Lock", "Lck"), ("Locks", "Lcks"),
    ("Lodge", "Ldg"), ("Loop", "Loop"), ("Mall", "Mall"), ("Manor", "Mnr"),
    ("Manors", "Mnrs"), ("Meadow", "Mdw"), ("Meadows", "Mdws"), ("Mews", "Mews"),
    ("Mill", "Ml"), ("Mills", "Mls"), ("Mission", "Msn"), ("Motorway", "Mtwy"),
    ("Mount", "Mt"), ("Mountain", "Mtn"), ("Mountains", "Mtns"), ("Neck", "Nck"),
    ("Orchard", "Orch"), ("Oval", "Oval"), ("Overpass", "Opas"), ("Park", "Park"),
    ("Parks", "Park"), ("Parkway", "Pkwy"), ("Parkways", "Pkwy"), ("Pass", "Pass"),
    ("Passage", "Psge"), ("Path", "Path"), ("Pike", "Pike"), ("Pine", "Pne"),
    ("Pines", "Pnes"), ("Place", "Pl"), ("Plain", "Pln"), ("Plains", "Plns"),
    ("Plaza", "Plz"), ("Point", "Pt"), ("Points", "Pts"), ("Port", "Prt"),
    ("Ports", "Prts"), ("Prairie", "Pr"), ("Radial", "Radl"), ("Ramp", "Ramp"),
    ("Ranch", "Rnch"), ("Rapid", "Rpd"), ("Rapids", "Rpds"), ("Rest", "Rst"),
    ("Ridge", "Rdg"), ("Ridges", "Rdgs"), ("River", "Riv"), ("Road", "Rd"),
    ("Roads", "Rds"), ("Route", "Rte"), ("Row", "Row"), ("Rue", "Rue"),
    ("Run", "Run"), ("Shoal", "Shl"), ("Shoals", "Shls"), ("Shore", "Shr"),
    ("Shores", "Shrs"), ("Skyway", "Skwy"), ("Spring", "Spg"), ("Springs", "Spgs"),
    ("Spur", "Spur"), ("Spurs", "Spur"), ("Square", "Sq"), ("Squares", "Sqs"),
    ("Station", "Sta"), ("Stravenue", "Stra"), ("Stream", "Strm"), ("Street", "St"),
    ("Streets", "Sts"), ("Summit", "Smt"), ("Terrace", "Ter"), ("Throughway", "Trwy"),
    ("Trace", "Trce"), ("Track", "Trak"), ("Trafficway", "Trfy"), ("Trail", "Trl"),
    ("Trailer", "Trlr"), ("Tunnel", "Tunl"), ("Turnpike", "Tpke"), ("Underpass", "Upas"),
    ("Union", "Un"), ("Unions", "Uns"), ("Valley", "Vly"), ("Valleys", "Vlys"),
    ("Viaduct", "Via"), ("View", "Vw"), ("Views", "Vws"), ("Village", "Vlg"),
    ("Villages", "Vlgs"), ("Ville", "Vl"), ("Vista", "Vis"), ("Walk", "Walk"),
    ("Walks", "Walk"), ("Wall", "Wall"), ("Way", "Way"), ("Ways", "Ways"),
    ("Well", "Wl"), ("Wells", "Wls"),
)
# Abbreviations that are everyday English words in title case ("Is", "Un"): left out.
AMBIGUOUS_ABBREVIATIONS = frozenset({"Is", "Un", "Pr", "Dl", "Dm", "Dv", "Lf"})
# Suffixes people type in lower case ("12 oak st"); only these (and their USPS
# abbreviations) count in lower-case text.
COMMON_SUFFIXES: tuple[str, ...] = (
    "Street", "Avenue", "Road", "Boulevard", "Lane", "Drive", "Court", "Place", "Terrace",
    "Parkway", "Highway", "Circle", "Way", "Trail", "Square", "Plaza",
)
# Words that never start or continue a street name in lower-case text (function words
# and measure words: "5 blocks down the road", "2 miles each way", "12 items").
NOT_STREET_NAME_WORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "or", "of", "to", "from", "in", "on", "at", "by", "for", "with",
    "down", "up", "off", "over", "past", "into", "onto", "per", "each", "every", "more",
    "less", "than", "other", "same", "this", "that", "my", "your", "our", "their", "his",
    "her", "its", "blocks", "block", "miles", "mile", "km", "minutes", "minute", "mins",
    "hours", "hour", "days", "day", "times", "items", "item", "people", "steps", "lanes",
    "doors", "floors", "stops", "exits", "feet", "ft", "yards", "meters", "boxes", "packages",
    "units", "pieces", "pcs", "orders", "bottles", "pairs", "copies",
)
DIRECTIONALS: tuple[str, ...] = ("N", "S", "E", "W", "NE", "NW", "SE", "SW")
# Title-case words that start sentences, not street names ("Chapter 3 The Road").
NOT_STREET_NAME_TITLES: tuple[str, ...] = (
    "The", "A", "An", "And", "Or", "Of", "To", "From", "In", "On", "At", "By", "For", "With",
)
# US states, DC, territories and freely associated states, military "states" (APO/FPO/DPO).
US_STATE_CODES: tuple[str, ...] = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN",
    "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH",
    "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
    "VT", "VA", "WA", "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI", "FM", "MH", "PW",
    "AA", "AE", "AP",
)
UNIT_DESIGNATORS: tuple[str, ...] = (
    "Apt", "Apartment", "Suite", "Ste", "Unit", "Fl", "Floor", "Rm", "Room", "Bldg", "Building",
    "Lot", "Trlr", "Spc", "Dept",
)
CONTEXT_WORDS: tuple[str, ...] = (
    # Presidio compares single lemmas by substring: "ship" covers "ship to", "live" "lives".
    "address", "street", "live", "reside", "ship", "deliver", "home", "apartment", "located",
)

STREET_SCORE = 0.5
LOWERCASE_STREET_SCORE = 0.15
CITY_LINE_SCORE = 0.5

_GAP = r"[ \t]{1,3}"
# No house number glued to a word, price, decimal, time, path or id ("item-3", "$12", "10:30");
# a comma is fine ("Jane,12 Oak St,Springfield").
_NUMBER_START = r"(?<![\w$€£.:/#@-])"


def _alternation(words: Iterable[str]) -> str:
    """A non-capturing alternation, longest first so a suffix never stops mid-word."""
    unique = sorted(set(words), key=lambda w: (-len(w), w))
    return "(?:" + "|".join(re.escape(w) for w in unique) + ")"


def _suffix_regex(names: Iterable[str], *, lower: bool = False) -> str:
    """Suffix names or their abbreviations; a period only after an abbreviation.

    "Main St." keeps its period, "Main Street." leaves the sentence's. Names
    come in title and upper case (or lower case only, for the ``(?i)`` pattern).
    """
    wanted = set(names)
    full = {name for name, _ in USPS_STREET_SUFFIXES}
    abbreviations = {
        abbreviation
        for name, abbreviation in USPS_STREET_SUFFIXES
        if name in wanted and abbreviation not in full | AMBIGUOUS_ABBREVIATIONS
    }

    def forms(words: set[str]) -> list[str]:
        return [w.lower() for w in words] if lower else [f for w in words for f in (w, w.upper())]

    return rf"(?:{_alternation(forms(wanted))}\b|{_alternation(forms(abbreviations))}\b\.?)"


def _unit(designators: str) -> str:
    """An optional unit after the street: ``Apt. 915``, ``Suite 158``, ``Unit 4B``, ``# 12``."""
    unit_id = r"(?:[A-Za-z]?\d{1,6}[A-Za-z]?|[A-Za-z])\b"
    return rf"(?:,?{_GAP}{designators}\.?[ \t]{{0,3}}#?[ \t]{{0,2}}{unit_id}|{_GAP}#[ \t]?\d{{1,6}}\b)?"


def street_pattern() -> str:
    """House number, capitalized name words, a USPS suffix (title or upper case), a unit."""
    name_word = (
        rf"(?!{_alternation(NOT_STREET_NAME_TITLES)}\b)"
        r"(?:[A-Z][A-Za-z'.-]{0,24}|\d{1,3}(?:st|nd|rd|th|ST|ND|RD|TH))"
    )
    suffix = _suffix_regex(name for name, _ in USPS_STREET_SUFFIXES)
    post_directional = rf"(?:{_GAP}{_alternation(DIRECTIONALS)}\b\.?)?"
    return (
        rf"{_NUMBER_START}\d{{1,6}}[A-Z]?(?:{_GAP}{name_word}){{1,4}}"
        rf"{_GAP}{suffix}{post_directional}"
        + _unit(_alternation(UNIT_DESIGNATORS))
    )


def lowercase_street_pattern() -> str:
    """The street line in any case, common suffixes only; scored to need a context word."""
    name_word = (
        rf"(?!{_alternation(NOT_STREET_NAME_WORDS)}\b)"
        r"(?:[a-z][a-z'.-]{0,24}|\d{1,3}(?:st|nd|rd|th))"
    )
    return (
        rf"(?i){_NUMBER_START}\d{{1,6}}[a-z]?(?:{_GAP}{name_word}){{1,3}}"
        rf"{_GAP}{_suffix_regex(COMMON_SUFFIXES, lower=True)}"
        + _unit(_alternation(w.lower() for w in UNIT_DESIGNATORS))
    )


def city_line_pattern() -> str:
    """``City Name, ST 12345[-6789]`` (also ``APO AE 12345``)."""
    # Written so each attempt starts on a literal capital: ~4x faster than "(?:word gap){0,3}".
    rest = r"[A-Za-z'.-]{0,24}"
    return (
        rf"(?<![\w-])[A-Z](?:{rest}{_GAP}[A-Z]){{0,3}}{rest},?{_GAP}"
        rf"{_alternation(US_STATE_CODES)}{_GAP}\d{{5}}(?:-\d{{4}})?(?![\w-])"
    )


def military_box_pattern() -> str:
    """A military first line: ``PSC 1234, Box 5678``, ``Unit 1234 Box 5678``, or a ship before FPO."""
    box = rf"(?:PSC|CMR|Unit){_GAP}\d{{1,5}},?{_GAP}Box{_GAP}\d{{1,5}}"
    ship = rf"(?:USNS|USNV|USS|USCGC){_GAP}[A-Z][A-Za-z'-]{{0,24}}(?=[,\s]{{1,4}}FPO\b)"
    return rf"\b(?:{box}|{ship})\b"


class StreetAddressRecognizer(PatternRecognizer):
    """US postal addresses (street line, ``City, ST ZIP`` line) as ``STREET_ADDRESS``."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity=STREET_ADDRESS,
            name="StreetAddressRecognizer",
            patterns=[
                Pattern("US street line", street_pattern(), STREET_SCORE),
                Pattern("US street line, lower case", lowercase_street_pattern(),
                        LOWERCASE_STREET_SCORE),
                Pattern("US city/state/ZIP line", city_line_pattern(), CITY_LINE_SCORE),
                Pattern("US military box line", military_box_pattern(), CITY_LINE_SCORE),
            ],
            context=list(CONTEXT_WORDS),
            # Case matters: capitalized name words and upper-case state codes carry the signal.
            global_regex_flags=re.DOTALL | re.MULTILINE,
        )


# -- disguised PII: no word boundary needed, case-insensitive, spelled out ------------------
# Plain ``re`` on purpose: every pattern below is linear (no nested quantifier can
# backtrack), and ``re`` is several times faster than ``regex`` for them.

_SSN_RE = re.compile(r"(?<!\d)(\d{3})([- .]?)(\d{2})\2(\d{4})(?!\d)")
# Dotted or dashed (``ip-203-0-113-77``, ``203-0-113-77.sslip.io``) IPv4, glued to anything.
_IPV4_RE = re.compile(r"(?<!\d)(\d{1,3})([.-])(\d{1,3})\2(\d{1,3})\2(\d{1,3})(?!\d)")
# An IPv6 candidate: hex groups and colons (with a possible embedded dotted IPv4).
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_IBAN_ANCHOR_RE = re.compile(r"[A-Za-z]{2}\d{2}")
_SPELLED_DOT = r"(?:[ \t]*[(\[{<][ \t]*dot[ \t]*[)\]}>][ \t]*|[ \t]+dot[ \t]+|\.)"
_LOOSE_DOT = rf"(?:{_SPELLED_DOT}|[ \t]+\.[ \t]*|[ \t]*\.[ \t]+)"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
# The "@" of an address written out: "@", "(at)", "[at]", "{at}", "<at>", or " at ".
_AT_RE = re.compile(r"@|[(\[{<][ \t]*at[ \t]*[)\]}>]|(?<=[ \t])at(?=[ \t])", re.IGNORECASE)
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:{_LOOSE_DOT}{_LABEL}){{1,4}}(?![a-z0-9])", re.IGNORECASE)
_LOCAL_RE = re.compile(
    rf"(?<![a-z0-9._%+-]){_LOCAL}(?:{_SPELLED_DOT}{_LOCAL}){{0,3}}\Z", re.IGNORECASE
)
_SPELLED_DOT_RE = re.compile(_LOOSE_DOT, re.IGNORECASE)
MAX_LOCAL_CHARS = 96


_AT_HINTS = (" at ", "(at", "[at", "{at", "<at", "\tat", "at\t")
_DIGIT_RE = re.compile(r"\d")


def has_spelled_at(text: str) -> bool:
    """Whether ``text`` has an ``at`` that may spell out an e-mail's ``@``."""
    lowered = text.lower()
    return any(hint in lowered for hint in _AT_HINTS)


def ssn_shape(digits: str) -> bool:
    """Nine digits that are a possible SSN (area 001-899 but 666, group and serial non-zero)."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area < "900" and group != "00" and serial != "0000"


def iban_checksum_valid(compact: str) -> bool:
    """ISO 13616 mod-97 check of an upper-case IBAN without separators."""
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


class DisguisedPiiRecognizer(EntityRecognizer):
    """PII that Presidio's recognizers miss because of a glued prefix, case or spelling.

    Presidio's patterns start with ``\\b``: ``ssn536-22-8741``, ``x4929…`` and
    ``ip203.0.113.77`` have none. This recognizer finds SSNs where Presidio's
    cannot (glued to a word character, or nine bare digits), every IPv4 (dotted or
    dashed) and IPv6 address (validated by ``ipaddress``), and every IBAN (Presidio's
    IP and IBAN recognizers are left out: theirs need word boundaries, and upper case
    for IBANs; the per-country formats and the mod-97 check are the same), and e-mail
    addresses written out (``name at host dot org``, ``(at)``, ``[dot]``, spaces around
    ``@``) whose domain ends in a known public suffix. Nine bare digits that form a
    valid SSN count as one (fail closed: a 9-digit id is scrubbed too).
    """

    ENTITIES = ("US_SSN", "IP_ADDRESS", "IBAN_CODE", "EMAIL_ADDRESS")

    def __init__(self) -> None:
        super().__init__(
            supported_entities=list(self.ENTITIES), name="DisguisedPiiRecognizer",
            supported_language="en",
        )

    def load(self) -> None:
        """Nothing to load: the regexes compile at import."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        wanted = set(entities) if entities else set(self.ENTITIES)
        results: list[RecognizerResult] = []
        if _DIGIT_RE.search(text):
            if "US_SSN" in wanted:
                results += self._ssns(text)
            if "IP_ADDRESS" in wanted:
                results += self._ipv4s(text)
            if "IBAN_CODE" in wanted:
                results += self._ibans(text)
        if "IP_ADDRESS" in wanted and ("::" in text or text.count(":") >= 2):
            results += self._ipv6s(text)
        if "EMAIL_ADDRESS" in wanted and ("@" in text or has_spelled_at(text)):
            results += self._spelled_emails(text)
        return results

    def _result(self, entity: str, start: int, end: int, score: float, what: str) -> RecognizerResult:
        return RecognizerResult(
            entity, start, end, score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: "DisguisedPiiRecognizer",
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                "pattern_name": what,
            },
        )

    def _ssns(self, text: str) -> list[RecognizerResult]:
        out = []
        for match in _SSN_RE.finditer(text):
            digits = match.group(1) + match.group(3) + match.group(4)
            start, end = match.span()
            if match.group(2) and not _glued(text, start, end):
                continue  # Presidio's SSN recognizer has it (and its context words)
            if ssn_shape(digits) and len(set(digits)) > 1:
                # Separated: a strong shape. Nine bare digits: fail closed, still an SSN.
                score = 0.5 if match.group(2) else 0.3
                out.append(self._result("US_SSN", start, end, score, "SSN, any boundary"))
        return out

    def _ipv4s(self, text: str) -> list[RecognizerResult]:
        return [
            self._result("IP_ADDRESS", *m.span(), 0.6, "IPv4, any boundary")
            for m in _IPV4_RE.finditer(text)
            if all(int(m.group(g)) <= 255 for g in (1, 3, 4, 5))
        ]

    def _ipv6s(self, text: str) -> list[RecognizerResult]:
        out = []
        for match in _IPV6_RE.finditer(text):
            start = match.start()
            candidate = match.group()
            # A glued prefix of hex letters ("ad2001:db8::1"): drop characters until it parses.
            for skip in range(min(5, len(candidate))):
                rest = candidate[skip:]
                piece = next((p for p in (rest, rest.rstrip(".:")) if _parses_as_ipv6(p)), None)
                if piece is not None:
                    out.append(self._result(
                        "IP_ADDRESS", start + skip, start + skip + len(piece), 0.6,
                        "IPv6, any boundary",
                    ))
                    break
        return out

    def _ibans(self, text: str) -> list[RecognizerResult]:
        out = []
        upper = ""
        for anchor in _IBAN_ANCHOR_RE.finditer(text):
            start = anchor.start()
            country = regex_per_country.get(text[start:start + 2].upper())
            if country is None:
                continue
            upper = upper or text.upper().replace("-", " ")  # same length: offsets still match
            match = regex.match(country, upper[start:start + 48])
            if match is None:
                continue
            compact = match.group().replace(" ", "")
            end = start + len(match.group().rstrip())
            if iban_checksum_valid(compact):
                out.append(self._result("IBAN_CODE", start, end, 0.6, "IBAN, any case"))
        return out

    def _spelled_emails(self, text: str) -> list[RecognizerResult]:
        out = []
        for at in _AT_RE.finditer(text):
            left, right = at.start(), at.end()
            while left > 0 and text[left - 1] in " \t":
                left -= 1
            while right < len(text) and text[right] in " \t":
                right += 1
            domain_match = _DOMAIN_RE.match(text, right)
            if domain_match is None:
                continue
            local_match = _LOCAL_RE.search(text, max(0, left - MAX_LOCAL_CHARS), left)
            if local_match is None:
                continue
            domain = _SPELLED_DOT_RE.sub(".", domain_match.group())
            local = local_match.group()
            spelled = (
                at.group() != "@" or (left, right) != at.span()
                or domain != domain_match.group() or _SPELLED_DOT_RE.sub(".", local) != local
            )
            if not spelled:
                continue  # an ordinary address: the e-mail recognizer's
            if _known_suffix(domain):
                out.append(self._result(
                    "EMAIL_ADDRESS", local_match.start(), domain_match.end(), 0.6, "spelled e-mail"
                ))
        return out


_WORD_RE = re.compile(r"\w")


def _glued(text: str, start: int, end: int) -> bool:
    """Whether a match touches a word character, where Presidio's ``\\b`` patterns fail."""
    return bool(
        (start > 0 and _WORD_RE.match(text[start - 1]))
        or (end < len(text) and _WORD_RE.match(text[end]))
    )


def _parses_as_ipv6(text: str) -> bool:
    if text.count(":") < 2 or text == "::":
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _known_suffix(domain: str) -> bool:
    extracted = OFFLINE_TLD_EXTRACT(domain.lower())
    return bool(extracted.domain and extracted.suffix)
