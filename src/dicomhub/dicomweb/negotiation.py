"""Media types of Accept and Content-Type, parsed leniently (unquoted `type=`, `*/*`) as peers do."""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomhub.dicom.transcode import known_media_type
from dicomhub.errors import NotAcceptable
from dicomhub.services.frames import FrameTarget

__all__ = [
    "MediaRange",
    "RetrieveChoice",
    "accepts_json",
    "choose_bulk",
    "choose_frames",
    "choose_retrieve",
    "if_none_match",
    "parse_accept",
    "parse_media_type",
]


@dataclass(frozen=True, slots=True)
class MediaRange:
    mime: str  # lower case, e.g. "multipart/related"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def type_param(self) -> str | None:
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaRange:
    pieces = _split(text, ";")
    mime = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        key, value = piece.split("=", 1)
        key = key.strip().lower()
        value = value.strip().strip('"').strip()
        if key == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            params[key] = value
    return MediaRange(mime, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by preference (q, then order); an absent or empty header means `*/*`."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


@dataclass(frozen=True, slots=True)
class RetrieveChoice:
    multipart: bool
    transfer_syntax: str | None  # None or "*": as stored
    zip: bool = False


def choose_retrieve(header: str | None, *, single_instance: bool) -> RetrieveChoice:
    """Pick a representation for instance/series/study retrieve (PS3.18 8.7.3, Table 8.7.3-2)."""
    offered = []
    for r in parse_accept(header):
        if r.mime in ("*/*", "multipart/*"):
            return RetrieveChoice(True, None)
        if r.mime == "multipart/related":
            if r.type_param in (None, "application/dicom", "application/*", "*/*"):
                return RetrieveChoice(True, r.transfer_syntax)
            offered.append(f"multipart/related; type={r.type_param}")
        elif r.mime in ("application/dicom", "application/*"):
            if single_instance:
                return RetrieveChoice(False, r.transfer_syntax)
            offered.append("application/dicom (a single instance only)")
        elif r.mime == "application/zip":
            return RetrieveChoice(False, r.transfer_syntax, zip=True)
        else:
            offered.append(r.mime)
    raise NotAcceptable(
        "cannot produce "
        + (", ".join(offered) or "the requested media type")
        + '; use multipart/related; type="application/dicom", application/zip'
        + (" or application/dicom" if single_instance else "")
    )


def if_none_match(header: str | None, etag: str | None) -> bool:
    """Whether If-None-Match names `etag`, compared weakly (RFC 9110 13.1.2: a W/ tag matches)."""
    if not header or not etag:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag.removeprefix("W/") in tags or "*" in tags


def accepts_json(header: str | None) -> bool:
    for r in parse_accept(header):
        if r.mime in ("*/*", "application/*", "application/dicom+json", "application/json"):
            return True
    return False


def choose_bulk(header: str | None, *, parts: int) -> bool:
    """True for multipart/related; type=application/octet-stream, False for a single part."""
    for r in parse_accept(header):
        if r.mime in ("*/*", "multipart/*"):
            return True
        if r.mime == "multipart/related" and r.type_param in (
            None,
            "application/octet-stream",
            "*/*",
        ):
            return True
        if r.mime in ("application/octet-stream", "application/*") and parts == 1:
            return False
    raise NotAcceptable(
        'bulk data is served as multipart/related; type="application/octet-stream"'
        + (" or, for a single value, application/octet-stream" if parts == 1 else "")
    )


def choose_frames(header: str | None) -> list[FrameTarget]:
    """Acceptable frame representations by preference (PS3.18 8.7.3.3, Table 8.7.3-5).

    `*/*`, `multipart/*` and a missing Accept mean frames as stored; `type=` may be unquoted.
    """
    targets: list[FrameTarget] = []
    offered: list[str] = []
    for r in parse_accept(header):
        ts = r.transfer_syntax
        if r.mime in ("*/*", "multipart/*"):
            targets.append(FrameTarget(True, None, ts))
        elif r.mime == "multipart/related":
            kind = r.type_param
            if kind in (None, "*/*"):
                targets.append(FrameTarget(True, None, ts))
            elif kind == "application/*":
                targets.append(FrameTarget(True, "application/octet-stream", ts))
            elif kind in ("image/*", "video/*") or known_media_type(kind):
                targets.append(FrameTarget(True, kind, ts))
            else:
                offered.append(f"multipart/related; type={kind}")
        elif r.mime in ("application/octet-stream", "application/*"):
            targets.append(FrameTarget(False, "application/octet-stream", ts))
        elif r.mime in ("image/*", "video/*") or known_media_type(r.mime):
            targets.append(FrameTarget(False, r.mime, ts))
        else:
            offered.append(r.mime)
    if not targets:
        raise NotAcceptable(
            "cannot produce "
            + (", ".join(offered) or "the requested media type")
            + ' for frames; use multipart/related; type="application/octet-stream" (with '
            "transfer-syntax=* for frames as stored), a compressed frame media type such as "
            "image/jpeg or image/jp2, or application/octet-stream for a single frame"
        )
    return targets
