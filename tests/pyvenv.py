"""Runs a test script with its PyPI packages: in this interpreter if they
import already, else inside a virtual environment it creates and fills on
first use, by re-running the script there (shared by resp_clients.py and
grpc_interop.py).

Exit code 3 means the packages could not be installed (no python3-venv, no
PyPI access): the Rust test that runs the script says so.
"""

import os
import subprocess
import sys

DEPS_FAILED = 3


def imports(probe):
    """None if `probe` (Python import statements) runs here, else why not."""
    try:
        exec(probe, {})
    except ImportError as e:
        return str(e)
    return None


def ensure(name, venv, packages, probe):
    """Makes `packages` importable for the calling script `name`, whose
    check is the import statements `probe`; may re-exec the script."""
    if imports(probe) is None:
        return
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        install(name, sys.executable, packages)
        missing = imports(probe)
        if missing is not None:
            fail(name, packages, missing)
        return
    venv_python = os.path.join(venv, "bin", "python")
    if not os.path.exists(venv_python):
        print(f"{name}: creating virtual environment {venv}", flush=True)
        r = subprocess.run([sys.executable, "-m", "venv", venv])
        if r.returncode != 0 or not os.path.exists(venv_python):
            fail(name, packages, f"`{sys.executable} -m venv {venv}` failed")
    if subprocess.run([venv_python, "-c", probe], capture_output=True).returncode != 0:
        install(name, venv_python, packages)
    sys.stdout.flush()
    script = os.path.abspath(sys.argv[0])
    os.execv(venv_python, [venv_python, script] + sys.argv[1:])


def install(name, python, packages):
    print(f"{name}: pip install {' '.join(packages)}", flush=True)
    try:
        r = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + packages,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        fail(name, packages, "pip install took over 15 minutes")
    if r.returncode != 0:
        fail(name, packages, f"pip install exited with {r.returncode}")


def fail(name, packages, message):
    print(f"{name}: cannot install the Python dependencies: {message}", file=sys.stderr)
    print(
        f"{name}: needs python3 with the venv module (Debian: python3-venv) and "
        f"PyPI access for: {' '.join(packages)}",
        file=sys.stderr,
    )
    sys.exit(DEPS_FAILED)
