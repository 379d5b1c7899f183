"""Running one input through the CLI and classifying the run.

Two executors with the same contract, ``execute(argv, sandbox, timeout) -> Outcome``:

* :class:`ForkServer`: the heavy modules are imported once; each run is an ``os.fork`` whose
  child sets ``RLIMIT_AS`` and an alarm, points fds 1/2 at files and calls
  ``medseg.cli.main(argv)``; an uncaught exception is printed as Python would print it (exit 1).
* :func:`run_fresh`: ``python -m medseg ...`` in a new process (the reference the fork server is
  validated against).

Classes (first match wins): crash, timeout, memory, traceback, phi, outside, left_behind,
invalid_json, nonsense, unclean_error (exit 2 without exactly one ``medseg: error:`` line), clean.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.fuzz.seeds import CANARIES, CANARY_VALUE

MEMORY_LIMIT = 3 * 2**30
TIMEOUT_S = 20.0
HEAVY_MODULES = ("medseg.cli", "medseg.io.read", "medseg.io.write", "medseg.io.dicom", "medseg.io.dicom_seg",
                 "medseg.io.nifti", "medseg.io.itk_formats", "medseg.io.microscopy", "pydicom", "nibabel",
                 "SimpleITK", "tifffile", "PIL.Image", "PIL.PngImagePlugin", "torch", "monai.data", "highdicom")
#: what a fresh interpreter's imports leave in $TMPDIR whatever the input (onnxruntime, imported by
#: MONAI, writes ``$TMPDIR/.ses``); the fork server has done those imports already
IMPORT_ARTEFACTS = frozenset({".ses"})
CLASSES = ("clean", "traceback", "crash", "timeout", "memory", "phi", "left_behind", "outside", "invalid_json",
           "nonsense", "unclean_error")


@dataclass
class Outcome:
    rc: int | None          # exit status, or None when killed by a signal
    signal: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


@dataclass
class Sandbox:
    """Folders of one run: ``cwd`` (working dir), ``tmp`` (TMPDIR), ``out`` (allowed output)."""

    root: Path
    cwd: Path = field(init=False)
    tmp: Path = field(init=False)
    out: Path = field(init=False)
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cwd, self.tmp, self.out = self.root / "cwd", self.root / "tmp", self.root / "out"
        self.home = self.root / "home"
        for p in (self.cwd, self.tmp, self.out, self.home):
            p.mkdir(parents=True, exist_ok=True)


def _vsize() -> int:
    """This process's virtual size in bytes (/proc/self/statm), 0 where unknown."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _limits(timeout: float, *, inherited: bool = False) -> None:
    """RLIMIT_AS, no core file, an alarm. ``inherited``: a forked child keeps its parent's address
    space (a test runner that imported torch, MONAI and a browser driver may already map 3 GiB), so
    it gets MEMORY_LIMIT on top of what it inherited; without this, whether an input "ran out of
    memory" depended on what the parent had imported before (a test-order race)."""
    limit = MEMORY_LIMIT + (_vsize() if inherited else 0)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.alarm(int(timeout) + 1)


def _child_env(sandbox: Sandbox) -> dict[str, str]:
    env = dict(os.environ)
    # HOME: a fresh interpreter's imports (matplotlib, onnxruntime) write caches there; that is
    # not the input's doing, so it has its own folder, outside the "written outside" check
    env.update(TMPDIR=str(sandbox.tmp), MEDSEG_PROGRESS="0", OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
               HOME=str(sandbox.home))
    return env


class ForkServer:
    """Imports medseg and its readers once, then forks one child per run."""

    def __init__(self) -> None:
        import importlib

        os.environ.setdefault("MEDSEG_PROGRESS", "0")
        for name in HEAVY_MODULES:
            importlib.import_module(name)
        import medseg.cli

        medseg.cli.build_parser()  # imports every command module

    def execute(self, argv: list[str], sandbox: Sandbox, timeout: float = TIMEOUT_S) -> Outcome:
        out_f, err_f = sandbox.root / "stdout.txt", sandbox.root / "stderr.txt"
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.setpgid(0, 0)
                fo = os.open(out_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                fe = os.open(err_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fo, 1)
                os.dup2(fe, 2)
                # fresh text streams on fds 1/2 (the parent's may be a test runner's capture)
                sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
                sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
                os.chdir(sandbox.cwd)
                import tempfile

                os.environ.update(_child_env(sandbox))
                tempfile.tempdir = None
                _limits(timeout, inherited=True)
                code = _child_main(argv)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        return _wait(pid, t0, timeout, out_f, err_f)


def _child_main(argv: list[str]) -> int:
    import traceback

    import medseg.cli

    try:
        return int(medseg.cli.main(argv) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - printed exactly as the interpreter would, exit 1
        traceback.print_exc()
        return 1


def _wait(pid: int, t0: float, timeout: float, out_f: Path, err_f: Path) -> Outcome:
    deadline = t0 + timeout + 5
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    secs = time.monotonic() - t0
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if sig == signal.SIGALRM:
        timed_out = True
    return Outcome(rc, sig, _read(out_f), _read(err_f), secs, timed_out)


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


#: a fresh interpreter first imports torch/MONAI/pydicom (seconds, more on a busy machine)
STARTUP_ALLOWANCE_S = 60.0


def run_fresh(argv: list[str], sandbox: Sandbox, timeout: float = TIMEOUT_S) -> Outcome:
    """The same run in a new interpreter: ``python -m medseg ARGV`` (the time limit is ``timeout``
    plus :data:`STARTUP_ALLOWANCE_S` for the imports the fork server has already done)."""
    t0 = time.monotonic()
    limit = timeout + STARTUP_ALLOWANCE_S
    proc = subprocess.Popen([sys.executable, "-m", "medseg", *argv], cwd=sandbox.cwd, env=_child_env(sandbox),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: (os.setpgid(0, 0), _limits(limit)))
    timed_out = False
    try:
        out, err = proc.communicate(timeout=limit + 5)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    secs = time.monotonic() - t0
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    if sig == signal.SIGALRM:
        timed_out = True
    return Outcome(None if sig else rc, sig, out.decode("utf-8", "replace")[: 1 << 20],
                   err.decode("utf-8", "replace")[: 1 << 20], secs, timed_out)


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of everything under ``root`` (links not followed)."""
    out: dict[str, tuple[int, int]] = {}
    skip_s = tuple(str(s) for s in skip)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.startswith(skip_s):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if p.startswith(skip_s):
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns)
    return out


#: keys whose values `medseg info` shows on purpose (they come from the header but identify a
#: series, not a patient); the value canary may appear there and nowhere else.
_SHOWN = ("series_description", "series_instance_uid", "path", "description", "selected")


def leaked(stream: str, *, info_json: bool) -> bool:
    # A series list (selection errors, warnings) quotes each SeriesDescription on purpose: those
    # quoted descriptions are shown by design, like info's series_description field.
    text = re.sub(r"(#\d+ |\] )'[^'\n]*'", r"\1''", stream)
    if info_json and CANARY_VALUE in text:
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if obj is not None:
            text = json.dumps(_scrub(obj))
    return any(c in text for c in CANARIES)


def _scrub(obj):
    if isinstance(obj, dict):
        return {k: ("" if k in _SHOWN else _scrub(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def _last_frame(stderr: str) -> str:
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', stderr)
    if not frames:
        return "?"
    f, fn = frames[-1]
    return f"{Path(f).name}:{fn}"


def _exception_type(stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        m = re.match(r"^([\w.]+(?:Error|Exception|Exit|Interrupt|Warning|error)\b)", line.strip())
        if m:
            return m.group(1)
    return "?"


def _nonsense_info(obj: dict) -> str | None:
    shape = obj.get("shape")
    if isinstance(shape, list) and any((not isinstance(s, int)) or s <= 0 for s in shape):
        return "zero_size_shape"
    if isinstance(shape, list) and obj.get("nonfinite_voxels") and obj.get("value_range") is None:
        return "all_nonfinite"
    sp = obj.get("spacing_mm")
    if isinstance(sp, list) and any((not isinstance(v, (int, float))) or not (v > 0) or v != v
                                    or v == float("inf") for v in sp):
        return "bad_spacing"
    return None


def _nonsense_output(path: Path) -> str | None:
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - an unreadable output is itself the finding
        return f"unreadable_output:{type(exc).__name__}"
    if data.size == 0 or 0 in data.shape:
        return "zero_size_output"
    if np.issubdtype(data.dtype, np.floating) and not np.any(np.isfinite(data)):
        return "all_nonfinite_output"
    if not np.all(np.isfinite(img.affine)):
        return "nonfinite_affine_output"
    return None


def classify(outcome: Outcome, *, command: str, sandbox: Sandbox, before: dict, parent_before: dict,
             parent: Path, output: Path | None) -> tuple[str, str]:
    """``(class, signature)`` of one run (see the module doc)."""
    err, out = outcome.stderr, outcome.stdout
    if outcome.timed_out:
        return "timeout", "timeout"
    if outcome.signal is not None:
        return "crash", f"signal{outcome.signal}"
    if "MemoryError" in err or "std::bad_alloc" in err or "Cannot allocate memory" in err:
        return "memory", f"{_exception_type(err)}@{_last_frame(err)}"
    if "Traceback (most recent call last)" in err or outcome.rc == 1:
        return "traceback", f"{_exception_type(err)}@{_last_frame(err)}"
    if leaked(err, info_json=False) or leaked(out, info_json=command == "info"):
        return "phi", "canary printed"
    after = snapshot(sandbox.root, skip=(sandbox.out, sandbox.home, sandbox.root / "stdout.txt",
                                         sandbox.root / "stderr.txt"))
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and not k.startswith(("tmp", "stdout", "stderr", "home")))
    parent_after = {k: v for k, v in snapshot(parent, skip=(sandbox.root,)).items()}
    if changed or parent_after.keys() != parent_before.keys() or Path("/tmp/abs_evil.dcm").exists():
        return "outside", "wrote outside the output folder"
    tmp_left = [p for p in sandbox.tmp.iterdir() if p.name not in IMPORT_ARTEFACTS]
    out_files = list(sandbox.out.iterdir())
    if tmp_left:
        return "left_behind", "temporary files left"
    if outcome.rc != 0 and out_files:
        return "left_behind", "output left after a failure"
    if command == "convert" and outcome.rc == 0 and [p for p in out_files if p != output]:
        return "left_behind", "extra files in the output folder"
    if outcome.rc == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("medseg: error:")]
        if len(lines) != 1:
            return "unclean_error", "exit 2 without exactly one error line"
        return "clean", ""
    if outcome.rc != 0:
        return "unclean_error", f"exit {outcome.rc}"
    if command == "info":
        try:
            obj = json.loads(out, parse_constant=_refuse_constant)
        except ValueError:
            return "invalid_json", "info --json printed invalid JSON"
        why = _nonsense_info(obj) if isinstance(obj, dict) else "not_an_object"
        if why:
            return "nonsense", why
    if command == "convert":
        if output is None or not output.exists():
            return "nonsense", "exit 0 without output"
        why = _nonsense_output(output)
        if why:
            return "nonsense", why
    return "clean", ""


def _refuse_constant(name: str):
    raise ValueError(f"JSON constant {name}")
