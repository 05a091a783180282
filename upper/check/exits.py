"""``upper-check``'s exit statuses, shared by its command line and its classroom runs."""

EXIT_PASSED, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
"""Every check passed; some check failed or was not run; a usage error, nothing
listening at the address, or a server that did not start."""
