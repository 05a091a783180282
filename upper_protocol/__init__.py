"""The UPPER line protocol, sans I/O: bytes in, reply bytes out, and whether the session ended.

Nothing here touches a socket, so the server, the client, the load tests and the
unit tests all share this one definition of what the server answers.
"""

from upper_protocol.session import (
    KEYWORD,
    KeywordScanner,
    UpperSession,
    ends_session,
    uppercase,
)

__all__ = ["KEYWORD", "KeywordScanner", "UpperSession", "ends_session", "uppercase"]
