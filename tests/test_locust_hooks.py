"""Each Locust behaviour that ``upper.loadtest.locust_hooks`` relies on (its
``USED_LOCUST_NAMES``), checked by what it does, in a fresh process each (the
hooks are process-wide, and importing Locust monkey-patches the standard library:
never in the test process). The end-to-end effects (workers dying with their master,
stalls in the exit code, hosts refused at start) are in test_locust_orphans.py,
test_locust_wrong_servers.py and test_locust.py."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
PROJECT_OPTIONS = ("--messages-per-connection", "--pipeline-depth", "--tls-cafile")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_every_listed_locust_name_exists_in_this_locust():
    """The behaviour of each is checked below; this catches a rename first."""
    done = python(
        "import importlib, sys\n"
        "from upper.loadtest.locust_hooks import USED_LOCUST_NAMES\n"
        "for name in USED_LOCUST_NAMES:\n"
        "    if not name.startswith('locust.'):\n"
        "        continue\n"
        "    parts = name.split('.')\n"
        "    for split in range(len(parts) - 1, 0, -1):\n"
        "        try:\n"
        "            target = importlib.import_module('.'.join(parts[:split]))\n"
        "        except ImportError:\n"
        "            continue\n"
        "        break\n"
        "    for part in parts[split:]:\n"
        "        target = getattr(target, part)\n"
        "    print(name)\n"
    )
    assert done.returncode == 0, done
    assert "locust.stats.bucket_response_time" in done.stdout.split(), done


def test_get_parser_fires_the_listener_and_its_parse_args_checks_the_host():
    done = python(
        "import upper.loadtest.tcp_user\n"
        "from locust.argument_parser import get_parser\n"
        "get_parser().parse_args(['--host', 'ftp://127.0.0.1:5000'])\n"
    )
    assert done.returncode == 2, done
    assert "argument -H/--host: invalid host 'ftp://127.0.0.1:5000'" in done.stderr, done
    assert "Traceback" not in done.stderr, done


def test_the_tls_options_are_checked_with_the_others(tmp_path):
    missing = tmp_path / "nowhere.pem"
    done = python(
        "import upper.loadtest.tcp_user\n"
        "from locust.argument_parser import get_parser\n"
        f"get_parser().parse_args(['--tls-cafile', {str(missing)!r}])\n"
    )
    assert done.returncode == 2, done
    assert "TLS: CA file" in done.stderr, done


def test_response_times_are_kept_to_a_hundredth_of_a_millisecond_below_10_ms():
    done = python(
        "import upper.loadtest.tcp_user\n"
        "from locust.stats import StatsEntry, RequestStats\n"
        "entry = StatsEntry(RequestStats(), 'upper', 'TCP')\n"
        "for ms in (0.234, 0.236, 0.5, 47.3, 147.0):\n"
        "    entry.log(ms, 10)\n"
        "print(sorted(entry.response_times), entry.get_response_time_percentile(0.5))\n"
    )
    assert done.returncode == 0, done
    assert done.stdout.split() == ["[0.23,", "0.24,", "0.5,", "47,", "150]", "0.5"], done


def test_locust_help_is_printed_before_the_locustfile_is_imported_so_use_its_own():
    """Where the project's options appear: not in ``locust -f ... --help`` (Locust prints
    it before importing the locustfile), but in ``python loadtest/locustfile.py --help``
    and the web UI. If Locust changes the first, docs/loadtest.md must say so."""
    locust = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    own = subprocess.run(
        [sys.executable, str(LOCUSTFILE), "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert locust.returncode == own.returncode == 0, (locust, own)
    assert "--headless" in locust.stdout and "--headless" in own.stdout
    for option in PROJECT_OPTIONS:
        assert option not in locust.stdout, option
        assert option in own.stdout, option
