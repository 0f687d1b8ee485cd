"""critpoint._text: names that are not UTF-8 can still be shown."""

import os

from critpoint._text import printable


def test_surrogate_escaped_names_become_replacement_characters():
    name = os.fsdecode(b"run-\xff\xfe.ckpt")  # a file name that is not UTF-8
    shown = printable(name)
    assert shown == "run-\ufffd\ufffd.ckpt"
    shown.encode("utf-8")  # encodable for a terminal or an HTML page
    assert printable("λ_min.json") == "λ_min.json"  # valid text is unchanged


def test_lone_surrogates_that_are_not_escapes():
    assert printable("a\ud800b") == "a\ufffd\ufffd\ufffdb"
