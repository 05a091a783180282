"""Every default of the server, in one place: the command line's, ``UpperServer``'s and the
connections' (``upper.server.connection``, ``upper.server.tls``) all come from here."""

IDLE_TIMEOUT = 300.0
"""Seconds without a byte either way before a connection is closed (``--idle-timeout``)."""
SHUTDOWN_TIMEOUT = 10.0
"""Seconds connections get to finish at a graceful stop (``--shutdown-timeout``)."""
LINGER_TIMEOUT = 5.0
"""Seconds after our FIN that we keep reading, waiting for the peer to close."""
HIBERNATE_AFTER = 1.0
"""Seconds a connection waits for input before its greenlet is given back, to begin with:
each connection adapts its own wait (``Connection._wake``), up to ``HIBERNATE_AFTER_MAX``."""
HIBERNATE_AFTER_MAX = 8.0
"""The longest a connection's wait before hibernating grows, so that a connection that
falls silent still gives its greenlet back within seconds."""
PROXY_ALLOW_FROM = "127.0.0.1/32,::1/128"
"""Who may send a PROXY header (``--proxy-allow-from``)."""
PROXY_HEADER_TIMEOUT = 5.0
"""Seconds from the accept for a whole PROXY header (``--proxy-header-timeout``)."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TLS connection gets, from the accept, to complete its handshake."""
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""TLS 1.2's suites by default: Mozilla's "intermediate" profile, forward secret and AEAD
only. The standard library's default list also offers CBC suites (LUCKY13, as testssl.sh
reports); ``--tls-ciphers`` widens it. TLS 1.3's suites are all AEAD and not set here."""

RECV_SIZE = 64 * 1024
"""The server's one receive buffer (under glibc's mmap threshold); the drain after our FIN
reads into it too."""
READS_PER_TURN = 4
"""Full reads in a row (of ``RECV_SIZE`` each) before a busy connection lets the event loop
run everything else. 4 x 64 KiB is well under a millisecond of work, and costs a flooding
client nothing measurable (docs/performance.md, fairness)."""

SWEEP_INTERVAL = 0.5
"""Seconds between two rounds of the sweeper (shorter for a short idle timeout)."""
TRIM_INTERVAL = 1.0
"""After connections hibernate, freed memory is returned to the OS at most this often:
malloc_trim walks the heap (about 10 ms for a fragmented 120 MB one), so at most 1% of a
CPU even when connections hibernate all the time."""
