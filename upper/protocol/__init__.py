"""The UPPER line protocol, sans I/O: bytes in, reply bytes out, and whether the session ended.

Nothing here touches a socket, a command line or the environment, so the
server, the client, the checker, the load tests and the unit tests all share
this one definition of what the server answers (``docs/protocol.md``).

- ``text``: the uppercase rule and the text encoding;
- ``keyword``: the DESCONEXION line, found in a stream that arrives in pieces;
- ``session``: ``UpperSession``, one connection's bytes in and reply bytes out;
- ``address``: the default address and ``HOST:PORT`` text.
"""

from upper.protocol.keyword import KEYWORD, KeywordScanner, ends_session
from upper.protocol.session import SessionState, UpperSession, fast_reply
from upper.protocol.text import decode_text, encode_text, uppercase

__all__ = [
    "KEYWORD",
    "KeywordScanner",
    "SessionState",
    "UpperSession",
    "decode_text",
    "encode_text",
    "ends_session",
    "fast_reply",
    "uppercase",
]
