"""Tacit's own pattern recognizers: US postal (street) addresses.

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

import re
from collections.abc import Iterable

from presidio_analyzer import Pattern, PatternRecognizer

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
