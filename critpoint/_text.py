"""Text that can be shown: file names that are not UTF-8 become replacement characters."""

from __future__ import annotations


def printable(text: str) -> str:
    r"""``text`` with every lone surrogate replaced by U+FFFD.

    Python decodes a file name that is not valid UTF-8 with surrogate escapes
    (byte ``0xff`` becomes ``"\\udcff"``); such a string cannot be encoded to
    UTF-8 for a terminal or an HTML page. The bytes are decoded again with
    replacement characters, so the name shows as ``"\\ufffd"`` where it was
    not text.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        Encodable as UTF-8; unchanged when it already was.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode(
            "utf-8", "surrogateescape" if _escaped(text) else "surrogatepass"
        )
        return raw.decode("utf-8", "replace")
    return text


def _escaped(text: str) -> bool:
    """Whether every surrogate in ``text`` is a surrogate escape (U+DC80..U+DCFF)."""
    return all(
        not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text
    )
