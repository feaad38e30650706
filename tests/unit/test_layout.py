"""The package layout keeps its promises: no shadowed stdlib, lazy CLI, one console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_operator_folder_never_shadows_the_standard_library() -> None:
    result = run_python(
        "import operator, frugal.operator, frugal.serving, frugal.compression, frugal.schema, frugal.storage; "
        "operator.itemgetter; import collections; print(operator.__file__)"
    )
    assert result.returncode == 0, result.stderr
    assert "lib/python" in result.stdout


def test_component_folders_are_namespace_portions() -> None:
    for folder in ("operator", "serving", "compression", "schema", "storage"):
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py would shadow or break the mapping"
        assert (ROOT / folder / "py.typed").exists()


def test_the_cli_imports_no_heavy_component_until_a_subcommand_runs() -> None:
    result = run_python(
        "import sys, frugal.operator.main as cli; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'kopf', 'kubernetes', 'frugal.compression.compress_command') if m in sys.modules]; "
        "print(heavy)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_console_script_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "frugal.operator.main", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for command in ("up", "validate", "compress", "serve", "operator"):
        assert command in result.stdout


def test_serve_help_needs_neither_torch_nor_the_operator() -> None:
    result = run_python(
        "import sys\n"
        "from frugal.operator.main import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'kopf', 'frugal.compression.compress_command') if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]")



def test_no_module_imports_itself_through_others() -> None:
    """File-level import cycles, lazy imports inside functions included (grimp is import-linter's
    import graph; networkx, which torch brings, finds the cycles)."""
    import grimp
    import networkx as nx

    graph = grimp.build_graph("frugal", cache_dir=None)
    imports = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if module.startswith("frugal.") and imported.startswith("frugal."):
                imports.add_edge(module, imported)
    assert imports.number_of_nodes() > 50  # the whole project was found
    cycles = [sorted(group) for group in nx.strongly_connected_components(imports) if len(group) > 1]
    assert cycles == []


def test_no_two_modules_share_a_file_name() -> None:
    """A file's name says what it holds: no commands.py, pods.py or cli.py in two places."""
    names: dict[str, list[str]] = {}
    for folder in ("operator", "serving", "compression", "schema", "storage"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name not in ("__init__.py", "__main__.py"):
                names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


def test_no_two_test_files_share_a_base_name() -> None:
    """pytest imports test files by base name (rootdir-relative, no packages): two test_x.py in two
    tiers make the whole run stop at collection."""
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


# Keys only a ModelDeployment's or BatchInference's status, or an artifact file, has: read them
# through operator.api.models or frugal.schema, never as raw dict keys.
STATUS_AND_ARTIFACT_KEYS = [
    "selected", "variants", "replan", "planAtLoad", "hardwareProfile", "throughputRps", "latencyP95Ms",
    "lastRolloverTime", "pipelineHash", "desiredReplicas", "capacityRps", "loadRps", "costPer1kRequests",
    "fromCostPer1kRequests", "sizeBytes", "sha256", "schemaVersion", "throughputPerS", "batch1Ms", "batchMs",
    "batchSpread", "servingBatchSize", "chosenAs", "speedupBatch", "sizeRatio", "meetsSlo",
    "joulesPerRequest", "energyPerRequestJoules", "perHour", "per1kRequests", "rowsPerSecond", "shardsDone",
    "shardsTotal", "rowsDone", "rowsTotal", "perMillionRows", "grpcEndpoint", "requestRate",
    "observedGeneration",
]
RAW_READS_ALLOWED = {
    # the labels a server is started with (--labels), not a status
    ("serving/server/service.py", "hardwareProfile"),
    # the batch aggregator's summary file: a contract of its own, not yet in frugal.schema
    ("operator/decision/batch_inference.py", "rowsPerSecond"),
}


def test_status_and_artifact_fields_are_read_only_through_their_models() -> None:
    import re

    read = re.compile(r'(?:\.get\(|\[)"(' + "|".join(STATUS_AND_ARTIFACT_KEYS) + r')"(?!\]\s*=[^=])')
    found = []
    for folder in ("operator", "serving", "compression"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            if where == "operator/api/models.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for match in read.finditer(line):
                    if (where, match.group(1)) not in RAW_READS_ALLOWED:
                        found.append(f"{where}:{number}: {line.strip()}")
    assert found == [], "read these through ModelDeploymentStatus / BatchInferenceStatus / frugal.schema:\n" + "\n".join(found)


# The decisions of a control loop; `frugal up` gets them from the operator's own classes.
LOOP_DECISIONS = frozenset(
    {"decide", "run_tick", "recommend", "replan", "replan_at_load", "plan_at_load", "decide_batch", "place"}
)


def test_frugal_up_runs_the_operators_loops_and_has_none_of_its_own() -> None:
    import ast

    found = []
    for path in sorted((ROOT / "operator" / "local").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in LOOP_DECISIONS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {called}()")
    assert found == [], "operator/local calls a loop's decision itself; run control/ against the store:\n" + "\n".join(
        found
    )
