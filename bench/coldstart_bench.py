"""Cold start of the Lambda handlers and of `mwaactl` (issue 13), as ratios measured in one run.

    uv run --locked python -m bench.coldstart_bench [--rounds N] [--explain]

Handlers: each sample is a fresh interpreter that imports the handler module the way Lambda does
(the function's directory and the layer on sys.path, LAMBDA_TASK_ROOT and the template's environment
variables set, so Powertools and the X-Ray SDK take their Lambda code paths), timed inside the
process; the baseline is a fresh `import boto3` in the same environment. Samples are interleaved
round by round, so both sides see the same machine load. Target: median at most 1.3x boto3's.

Packages: every function and the layer this repository builds are built with their SAM `makefile`
recipes (what `sam build` runs) and zipped; a function's package is its own zip plus the layers it
ships from here (the public Powertools layer is AWS's). Target: under 5 MB, unzipped.

CLI: wall time of a fresh `mwaactl --help`, `mwaactl metadata --help` and an argument error,
against `python -c pass`. Target: under 0.5 s each.

`--explain` prints, per handler, what its import adds to boto3's (`python -X importtime`, self time
of the modules boto3 does not import, grouped by package): where to look when a ratio regresses.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import ast
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = ROOT / "layers" / "mwaa_control"
LAYER_PYTHON = LAYER_DIR / "python"
IMPORT_RATIO_TARGET = 1.3
PACKAGE_LIMIT_BYTES = 5 * 1024 * 1024
CLI_SECONDS_TARGET = 0.5

# Values for the template's intrinsic functions (!Ref, !GetAtt): only their shape matters here.
_PLACEHOLDERS = {
    "ACCOUNT_ID": "123456789012",
    "AWS_PARTITION": "aws",
    "DEPLOYMENT_ID": "mwaa-control-bench",
    "METADATA_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
    "PARTICIPANT_ACCOUNT_IDS": "",
}
# What the Lambda runtime sets before it imports the handler.
_LAMBDA_RUNTIME = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}
# Imports the module, then does what its first invocation does before its first AWS call (deferred
# imports in function bodies, its cached builders: settings and boto3 clients, the X-Ray SDK behind
# the tracer), each timed: a deferred import is not a saved one, and the table shows both.
_TIMED_IMPORT = """
import time
t = time.perf_counter()
import {module}
loaded = time.perf_counter()
for name in {deferred!r}:
    __import__(name)
for builder in ("settings", "state", "service"):
    if callable(getattr({module}, builder, None)):
        getattr({module}, builder)()
tracer = getattr({module}, "tracer", None)
if tracer is not None and hasattr(tracer, "get"):
    tracer.get()
print(loaded - t, time.perf_counter() - loaded)
"""


@dataclass(frozen=True)
class Handler:
    logical_id: str
    directory: Path
    module: str
    environment: dict[str, str]


def handlers() -> list[Handler]:
    sys.path[:0] = [str(ROOT)]
    from localcloud.template import functions, load_template  # noqa: PLC0415 - only this bench needs cfn parsing

    found = []
    for logical_id, spec in sorted(functions(load_template()).items()):
        env = {
            key: value if isinstance(value, str) else _PLACEHOLDERS.get(key, f"bench-{key.lower().replace('_', '-')}")
            for key, value in spec.environment.items()
        }
        env |= _LAMBDA_RUNTIME | {
            "AWS_LAMBDA_FUNCTION_NAME": logical_id,
            "LAMBDA_TASK_ROOT": str(spec.code_uri),
            "_HANDLER": spec.handler,
        }
        found.append(Handler(logical_id, spec.code_uri, spec.handler.rsplit(".", 1)[0], env))
    return found


def _environment(handler: Handler | None, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN"))}
    env |= base
    # The layer is unpacked under /opt/python on Lambda; here it is the source tree.
    path = [str(LAYER_PYTHON)] if handler is None else [str(handler.directory), str(LAYER_PYTHON)]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def deferred_imports(source: Path) -> list[str]:
    """Modules a handler imports inside its functions (loaded by its first invocation)."""
    tree = ast.parse(source.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    names.append(inner.module)
                elif isinstance(inner, ast.Import):
                    names.extend(alias.name for alias in inner.names)
    return sorted(set(names))


def _timed_import(
    module: str, env: dict[str, str], cwd: Path, deferred: list[str] | None = None
) -> tuple[float, float]:
    code = _TIMED_IMPORT.format(module=module, deferred=deferred or [])
    out = subprocess.run(  # noqa: S603 - our own interpreter and module names
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    import_seconds, first_call_seconds = out.stdout.strip().splitlines()[-1].split()
    return float(import_seconds), float(first_call_seconds)


def _wall_time(argv: list[str], env: dict[str, str]) -> float:
    import time  # noqa: PLC0415

    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False)  # noqa: S603 - fixed argv
    return time.perf_counter() - start


def measure_handlers(
    found: list[Handler], rounds: int
) -> tuple[list[float], dict[str, list[float]], dict[str, list[float]]]:
    """Per round: boto3's import, and each handler's import and what its first invocation adds."""
    base_env = _environment(None, found[0].environment if found else dict(_LAMBDA_RUNTIME))
    envs = {h.logical_id: _environment(h, h.environment) for h in found}
    deferred = {h.logical_id: deferred_imports(h.directory / f"{h.module}.py") for h in found}
    boto3: list[float] = []
    imports: dict[str, list[float]] = {h.logical_id: [] for h in found}
    first_calls: dict[str, list[float]] = {h.logical_id: [] for h in found}
    for h in found:  # warm the bytecode caches once, as a deployed package has them
        _timed_import(h.module, envs[h.logical_id], h.directory, deferred[h.logical_id])
    _timed_import("boto3", base_env, ROOT)
    for _ in range(rounds):
        boto3.append(_timed_import("boto3", base_env, ROOT)[0])
        for h in found:
            loaded, first_call = _timed_import(h.module, envs[h.logical_id], h.directory, deferred[h.logical_id])
            imports[h.logical_id].append(loaded)
            first_calls[h.logical_id].append(first_call)
    return boto3, imports, first_calls


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _zip_size(path: Path, into: Path) -> int:
    with zipfile.ZipFile(into, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                archive.write(p, p.relative_to(path))
    return into.stat().st_size


def _sam_makefile_build(source: Path, logical_id: str, artifacts: Path) -> None:
    artifacts.mkdir(parents=True)
    make = shutil.which("make") or "make"
    recipe = [make, "-s", "-C", str(source), f"build-{logical_id}", f"ARTIFACTS_DIR={artifacts}"]
    subprocess.run(recipe, check=True, capture_output=True)  # noqa: S603 - the template's own recipe


def package_sizes(found: list[Handler]) -> dict[str, tuple[int, int]]:
    """(unzipped, zipped) bytes per function: its own artifact plus the layer built here."""
    sizes: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="coldstart-bench-") as tmp:
        work = Path(tmp)
        layer = work / "MwaaControlLayer"
        _sam_makefile_build(LAYER_DIR, "MwaaControlLayer", layer)
        layer_sizes = (_dir_size(layer), _zip_size(layer, work / "layer.zip"))
        for h in found:
            artifact = work / h.logical_id
            _sam_makefile_build(h.directory, h.logical_id, artifact)
            own = (_dir_size(artifact), _zip_size(artifact, work / f"{h.logical_id}.zip"))
            sizes[h.logical_id] = (own[0] + layer_sizes[0], own[1] + layer_sizes[1])
    return sizes


def _mwaactl() -> list[str]:
    script = Path(sys.executable).parent / "mwaactl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mwaactl.main"]


CLI_CASES: dict[str, list[str]] = {
    "mwaactl --help": ["--help"],
    "mwaactl metadata --help": ["metadata", "--help"],
    "mwaactl metadata backup (argument error)": ["metadata", "backup"],
}


def measure_cli(rounds: int) -> tuple[list[float], dict[str, list[float]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONDONTWRITEBYTECODE")}
    env["COLUMNS"] = "100"
    bare: list[float] = []
    samples: dict[str, list[float]] = {name: [] for name in CLI_CASES}
    for args in CLI_CASES.values():
        _wall_time([*_mwaactl(), *args], env)
    for _ in range(rounds):
        bare.append(_wall_time([sys.executable, "-c", "pass"], env))
        for name, args in CLI_CASES.items():
            samples[name].append(_wall_time([*_mwaactl(), *args], env))
    return bare, samples


def _importtime(code: str, env: dict[str, str], cwd: Path) -> dict[str, int]:
    out = subprocess.run(  # noqa: S603 - our own interpreter and module names
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    self_us: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line.removeprefix("import time:").split("|")
        self_us[fields[2].strip()] = int(fields[0])
    return self_us


def explain(found: list[Handler], top: int = 12) -> None:
    base = _importtime("import boto3", _environment(None, found[0].environment), ROOT)
    for h in found:
        code = _TIMED_IMPORT.format(module=h.module, deferred=deferred_imports(h.directory / f"{h.module}.py"))
        own = _importtime(code, _environment(h, h.environment), h.directory)
        extra = {name: us for name, us in own.items() if name not in base}
        groups: collections.Counter[str] = collections.Counter()
        for name, us in extra.items():
            parts = name.split(".")
            groups[".".join(parts[:2]) if parts[0] in ("mwaa_control", "aws_lambda_powertools") else parts[0]] += us
        total = sum(extra.values()) / 1000
        print(f"\n{h.logical_id}: import and first call load {total:.0f} ms beyond boto3 (importtime self times)")
        for name, us in groups.most_common(top):
            print(f"  {us / 1000:7.1f} ms  {name}")


def _row(cells: list[Any], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    padded = (str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs)
    return "  ".join(padded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="fresh interpreters per measurement")
    parser.add_argument("--explain", action="store_true", help="show what each handler's import adds to boto3's")
    args = parser.parse_args(argv)
    found = handlers()
    missed: list[str] = []

    boto3, imports, first_calls = measure_handlers(found, args.rounds)
    sizes = package_sizes(found)
    base = statistics.median(boto3)
    widths = [27, 10, 8, 8, 13, 9, 11, 10, 7]
    print(f"Handler cold import, median of {args.rounds} fresh interpreters (target <= {IMPORT_RATIO_TARGET}x boto3)")
    print("'1st call +ms': what the first invocation then prepares (deferred imports, clients, X-Ray SDK), and import")
    print("plus first call against boto3: reported, not a target")
    header = ["", "import ms", "x boto3", "verdict", "1st call +ms", "x boto3", "package KB", "zipped KB", "verdict"]
    print(_row(header, widths))
    print(_row(["import boto3", f"{base * 1000:.0f}", "1.00", "", "", "", "", "", ""], widths))
    for h in found:
        median = statistics.median(imports[h.logical_id])
        first_call = statistics.median(first_calls[h.logical_id])
        ratio = median / base
        unzipped, zipped = sizes[h.logical_id]
        fast, small = ratio <= IMPORT_RATIO_TARGET, unzipped < PACKAGE_LIMIT_BYTES
        if not (fast and small):
            missed.append(h.logical_id)
        cells = [h.logical_id, f"{median * 1000:.0f}", f"{ratio:.2f}", "ok" if fast else "MISSED"]
        cells += [
            f"{first_call * 1000:.0f}",
            f"{(median + first_call) / base:.2f}",
            f"{unzipped / 1024:.0f}",
            f"{zipped / 1024:.0f}",
            "ok" if small else "MISSED",
        ]
        print(_row(cells, widths))

    bare, cli = measure_cli(args.rounds)
    widths = [40, 10, 14, 8]
    print(f"\nCLI wall time, median of {args.rounds} runs (target < {CLI_SECONDS_TARGET} s)")
    print(_row(["", "ms", "x python -c pass", "verdict"], widths))
    print(_row(["python -c pass", f"{statistics.median(bare) * 1000:.0f}", "1.0", ""], widths))
    for name, times in cli.items():
        median = statistics.median(times)
        ok = median < CLI_SECONDS_TARGET
        if not ok:
            missed.append(name)
        ratio = median / statistics.median(bare)
        print(_row([name, f"{median * 1000:.0f}", f"{ratio:.1f}", "ok" if ok else "MISSED"], widths))

    if args.explain:
        explain(found)
    if missed:
        print(f"\nmissed: {', '.join(missed)}")
        return 1
    print("\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
