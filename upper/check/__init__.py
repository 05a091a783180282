"""``upper-check``: does a running server speak the UPPER protocol?

Points at any server, in any language, on any address, and runs one named
check per rule and example of ``docs/protocol.md``, the classroom's two steps
first. Expected replies come from ``upper.protocol`` (the server's own
definition), so there is no second implementation of the rules here.

- ``target``: where the server is, and the one place connections are opened;
- ``matching``: the reply stream compared with the expected one, as it arrives;
- ``conversation``: one connection of a check, its bytes both ways and how it ended;
- ``outcome``: a check's result, and the evidence of a failure;
- ``checks``: the table of checks;
- ``runner``: runs them, each bounded in time, none able to crash the tool;
- ``report``: the text and JSON output;
- ``cli``: the command line, ``exits`` its exit statuses.

For the classroom (docs/classroom.md):

- ``levels``: ``--level basic`` (the classroom's two steps) or ``full``;
- ``student_server``: starting a server (``--start``), waiting for its port, stopping it;
- ``started``: one run against a server the checker started, and what became of it;
- ``grading``: a class file, a run per student, their reports and the summary;
- ``junit``: the JUnit XML report;
- ``classroom_cli``: the options of all these.
"""

from upper.check.checks import CHECKS, Check
from upper.check.outcome import Result, Status
from upper.check.runner import Settings, run_checks
from upper.check.target import Target

__all__ = ["CHECKS", "Check", "Result", "Settings", "Status", "Target", "run_checks"]
