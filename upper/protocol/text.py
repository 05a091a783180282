"""The text rule: how a line's bytes are uppercased, and how text is encoded on the wire.

Lines are UTF-8. Bytes that are not valid UTF-8 travel unchanged: decoding with
``surrogateescape`` turns each into a lone surrogate that ``str.upper()`` leaves
alone and encoding turns back into the same byte. Everything in the project
that turns text into protocol bytes or back goes through ``encode_text`` and
``decode_text``, so invalid bytes survive every path.
"""

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def encode_text(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


def decode_text(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def uppercase(data: bytes) -> bytes:
    """Uppercase complete text the way the server does.

    Unicode full case mapping of the UTF-8 text (``straße`` -> ``STRASSE``); bytes
    that are not valid UTF-8 pass through unchanged.
    """
    if data.isascii():
        return data.upper()
    return encode_text(decode_text(data).upper())
