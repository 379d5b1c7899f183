"""A pytest plugin (loaded by tests/conftest.py): at the end of a run, the skipped tests grouped by
reason, and the one command that installs the Debian tools they need (the list .ci/run installs).

Without the Debian tools (dciodvfy, dcmtk, Orthanc, chromium) `make test` skips their tests; this
says which ones and how to run them instead of letting them pass silently.
"""

from __future__ import annotations

import re

#: words in a skip reason -> the Debian package that provides the tool
DEBIAN_PACKAGES = {
    "dciodvfy": "dicom3tools",
    "dicom3tools": "dicom3tools",
    "dcmtk": "dcmtk",
    "storescu": "dcmtk",
    "dcmcjpls": "dcmtk",
    "orthanc": "orthanc",
    "orthanc-dicomweb": "orthanc-dicomweb",
    "chromium": "chromium",
    "openssl": "openssl",
    "dcm2niix": "dcm2niix",
}


def _reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ").strip()


def packages_for(reason: str) -> set[str]:
    """Debian packages a skip reason names (by tool or package name), else empty."""
    return {pkg for word, pkg in DEBIAN_PACKAGES.items()
            if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", reason, re.IGNORECASE)}


def summary_lines(reports) -> list[str]:
    """Lines for the terminal: one group per reason, then the install command (if any)."""
    groups: dict[str, list[str]] = {}
    for rep in reports:
        groups.setdefault(_reason(rep), []).append(rep.nodeid)
    lines, packages = [], set()
    for reason, ids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"{len(ids)} skipped: {reason}")
        lines.extend(f"    {nodeid}" for nodeid in ids)
        packages |= packages_for(reason)
    if packages:
        lines.append("")
        lines.append("to run the tests skipped for a missing tool, install it (as .ci/run does):")
        lines.append(f"    sudo apt-get install -y --no-install-recommends {' '.join(sorted(packages))}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "nodeid", "")]
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} skipped test(s)")
    for line in summary_lines(skipped):
        terminalreporter.write_line(line)
