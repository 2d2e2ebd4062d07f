"""Normalize, then analyze: the forms a value is folded into before any recognizer sees it.

``normalize_text`` is what gets stored: NFKC, format and other default-ignorable
characters (ZWJ, bidi isolates, tag characters, variation selectors, soft hyphen…)
removed, every decimal digit folded to ASCII. ``decode_layers`` undoes the
text-level encodings a client can hide a value in (percent-encoding, also
doubled; HTML character references; ``\\uXXXX``/``\\xNN`` escapes) and
``encoded_tokens`` finds base64/base64url/hex-looking tokens whose decoding is
readable text, so the boundary can analyze what they hold.

Pure-ASCII text without ``%``, ``&``, ``\\`` or a long alphanumeric run pays only
a few ``str`` checks: every step has a cheap guard in front of it.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import regex

# Default-ignorable code points (ZW*, bidi controls and isolates, tags, variation
# selectors, soft hyphen, Hangul fillers, CGJ …) and the rest of category Cf.
_INVISIBLE_RE = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}]")
_NON_ASCII_DIGIT_RE = regex.compile(r"(?V1)[\p{Nd}--[0-9]]")
# Dots NFKC leaves alone that browsers and resolvers read as "." in host names.
_DOTS = str.maketrans({"\u3002": ".", "\uff61": ".", "\uff0e": "."})
_PERCENT_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_HTML_REF_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ESCAPE_RE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2}))")
MAX_DECODE_ROUNDS = 3
# Base64 (standard and URL-safe) and hex tokens; shortest: base64 of a 6-byte value.
_B64_TOKEN_RE = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_HEX_TOKEN_RE = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){6,}(?![0-9A-Fa-f])")
_B64_WHOLE_RE = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}\Z")
_HEX_DIGIT_PAIR_RE = re.compile(r"[0-9A-Fa-f]{12}")
_PRINTABLE_SHARE = 0.9
_MAY_HOLD_PII_RE = re.compile(r"[0-9@:\uff10-\uff19\uff20]|[ (\[{<][aA][tT][ )\]}>]")


def _fold_digit(match: regex.Match[str]) -> str:
    return str(unicodedata.decimal(match.group()))


def normalize_text(text: str) -> str:
    """NFKC, invisible characters removed, digits folded to ASCII (identity on ASCII)."""
    if text.isascii():
        return text
    text = _INVISIBLE_RE.sub("", text)
    text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    text = _INVISIBLE_RE.sub("", text)  # NFKC can expose a few (e.g. from compatibility forms)
    return _NON_ASCII_DIGIT_RE.sub(_fold_digit, text)


def _decode_escape(match: re.Match[str]) -> str:
    code = int(next(g for g in match.groups() if g is not None), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group()
    return chr(code)


def decode_layers(text: str) -> str:
    """Undo percent-encoding (repeatedly), HTML references and ``\\u``/``\\x`` escapes, normalized.

    Identity (and cheap) on text that holds none of ``%``, ``&``, ``\\``.
    """
    for _ in range(MAX_DECODE_ROUNDS):
        before = text
        if "%" in text and _PERCENT_RE.search(text):
            text = unquote(text, errors="replace")
        if "&" in text and _HTML_REF_RE.search(text):
            text = html.unescape(text)
        if "\\" in text and _ESCAPE_RE.search(text):
            text = _ESCAPE_RE.sub(_decode_escape, text)
        if text == before:
            break
        text = normalize_text(text)
    return text


@dataclass(frozen=True)
class EncodedToken:
    """A token of the text and the readable text its decoding gives."""

    start: int
    end: int
    decoded: str
    encoding: str


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="ignore")
        if len(text) < 0.8 * len(raw):
            return None
    if len(text) < 6 or not (_MAY_HOLD_PII_RE.search(text) or _B64_WHOLE_RE.match(text)):
        return None  # every STRICT value has a digit, "@", ":" or a spelled "at" (or is nested)
    printable = sum(ch.isprintable() or ch in "\t\n\r" for ch in text)
    if printable < _PRINTABLE_SHARE * len(text):
        return None
    return text


def _b64_decodings(token: str) -> Iterator[tuple[str, str]]:
    """Readable decodings of ``token`` as base64/base64url, also shifted past a glued prefix."""
    core = token.rstrip("=")
    alphabet = "base64url" if ("-" in core or "_" in core) else "base64"
    for skip in range(4):  # a glued prefix of 0-3 characters shifts the 4-character groups
        body = core[skip:]
        if len(body) < 8 or len(body) % 4 == 1:
            continue
        padded = body + "=" * (-len(body) % 4)
        try:
            if alphabet == "base64url":
                raw = base64.urlsafe_b64decode(padded)
            else:
                raw = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            continue
        text = _readable(raw)
        if text is not None:
            yield text, alphabet
            return


def encoded_tokens(text: str) -> list[EncodedToken]:
    """Base64/base64url/hex-looking tokens of ``text`` whose decoding is readable text."""
    found: list[EncodedToken] = []
    if len(text) < 8:
        return found
    for match in _B64_TOKEN_RE.finditer(text):
        token = match.group()
        if token.isdigit() or (token.isalpha() and (token[1:].islower() or token.isupper())):
            continue  # a number or a plain word: base64 of text mixes cases and digits
        pieces = [(match.start(), token)]
        if "/" in token:  # path segments: each may be a token of its own
            offset = match.start()
            for piece in token.split("/"):
                if len(piece) >= 8:
                    pieces.append((offset, piece))
                offset += len(piece) + 1
        for start, piece in pieces:
            decoded = next(iter(_b64_decodings(piece)), None)
            if decoded is not None:
                found.append(EncodedToken(start, start + len(piece), *decoded))
                break
    if _HEX_DIGIT_PAIR_RE.search(text):
        for match in _HEX_TOKEN_RE.finditer(text):
            readable = _readable(bytes.fromhex(match.group()))
            if readable is not None:
                found.append(EncodedToken(match.start(), match.end(), readable, "hex"))
    return found
