"""The Slicer module's files without a Slicer application: .ui ↔ module, CMake install lists,
requirements, icons, and the module's run handle over the library's process runner with a real
subprocess (the runner itself is tested in ``test_process.py``).

The module imports ``qt`` and Slicer's Python packages, which only exist inside Slicer; the tests
that run module code load it with small stand-ins for those (``module`` fixture), while the MRML
work itself is tested against real Slicer MRML in ``test_slicer_scene.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import py_compile
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "VertebralFracture"
MODULE_FILE = MODULE_DIR / "VertebralFracture.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "VertebralFracture.ui"
LIBRARY = REPO / "VertebralFractureLib"

#: Third-party packages 3D Slicer ships (never installed by the module) or the PyTorch extension provides.
PROVIDED_IN_SLICER = {"numpy", "scipy", "SimpleITK", "vtk", "vtkmodules", "pydicom", "slicer", "torch", "packaging"}
#: Library imports the module's analysis never reaches (training, optional analyses), with the reason.
NOT_NEEDED_IN_SLICER = {
    "radiomics": "seed-001 radiomics analysis, not run by the module",
    "sklearn": "optional classifiers and training metrics",
    "nibabel": "training data tools",
    "pylibjpeg": "DICOM decoding; the module passes the volume as NRRD",
    "openjpeg": "DICOM decoding; the module passes the volume as NRRD",
    "PIL": "icons and figures via matplotlib (a matplotlib dependency)",
    "highdicom": "DICOM SEG/SR output for DICOM input; the module passes the volume as NRRD",
    "ray": "batch on a cluster, the optional extra [cluster]",
}


def _module_source() -> str:
    return MODULE_FILE.read_text(encoding="utf-8")


def _ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)
    return {w.get("name"): w for w in tree.iter("widget")}


def _parameter_fields() -> dict[str, str]:
    """Parameter node field → annotation source, from the module's AST."""
    tree = ast.parse(_module_source())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "VertebralFractureParameterNode":
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    raise AssertionError("VertebralFractureParameterNode not found")


# ---------------------------------------------------------------------------------------- .ui ↔ module
def test_ui_has_every_widget_the_module_uses():
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", _module_source()))
    widgets = _ui_widgets()
    assert used, "the module should use widgets of its .ui file"
    assert not used - set(widgets), f"widgets used by the module but missing in the .ui: {sorted(used - set(widgets))}"
    for name in ("applyButton", "cancelButton", "progressBar", "resultsTableView", "show3DButton", "exportButton"):
        assert name in widgets
    assert widgets["applyButton"].find("property[@name='text']/string").text == "Analyze Spine"


def test_ui_parameter_bindings_fit_the_parameter_node():
    """Each SlicerParameterName names a parameter, on a widget type connectGui can bind to its type."""
    fields = _parameter_fields()
    compatible = {
        "qMRMLNodeComboBox": lambda a: a.startswith("vtkMRML"),
        "QComboBox": lambda a: "Choice(" in a,
        "ctkSliderWidget": lambda a: a.startswith("Annotated[float") and "WithinRange" in a,
        "QCheckBox": lambda a: a == "bool",
        "ctkDirectoryButton": lambda a: a == "pathlib.Path",
    }
    bound = {}
    for name, widget in _ui_widgets().items():
        prop = widget.find("property[@name='SlicerParameterName']/string")
        if prop is None:
            continue
        parameter, cls = prop.text, widget.get("class")
        assert parameter in fields, f"{name} binds to unknown parameter {parameter!r}"
        assert cls in compatible and compatible[cls](fields[parameter]), \
            f"{name} ({cls}) cannot show {parameter}: {fields[parameter]}"
        bound[parameter] = name
    for parameter in ("inputVolume", "stages", "device", "fractureThreshold", "outputTable", "exportFolder"):
        assert parameter in bound, f"parameter {parameter} has no widget"


def test_ui_gives_every_mrml_widget_the_scene():
    tree = ET.parse(UI_FILE)
    connected = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in _ui_widgets().items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert mrml and mrml <= connected, f"MRML widgets without the scene: {sorted(mrml - connected)}"


# ---------------------------------------------------------------------------------------- the module file
def test_module_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "module.pyc"), doraise=True)


def test_module_and_library_bridge_lint_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    files = [MODULE_FILE, LIBRARY / "slicer_scene.py", LIBRARY / "process.py", Path(__file__),
             REPO / "Testing" / "test_slicer_scene.py", REPO / "Testing" / "test_process.py"]
    result = subprocess.run([ruff, "check", "--no-cache", *map(str, files)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_does_not_import_torch_or_the_library_at_import():
    tree = ast.parse(_module_source())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & {"torch", "monai", "VertebralFractureLib", "SimpleITK", "numpy"}, top
    # and executing it (with stand-ins for Slicer's own modules) imports none of them either
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_module_files import load_module
        load_module()
        heavy = sorted(m for m in ("torch", "monai", "VertebralFractureLib", "SimpleITK") if m in sys.modules)
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at module import: {out.stdout.strip()}"


# ---------------------------------------------------------------------------------------- CMake
def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} …) not found"
    return [t for t in match.group(1).split() if not t.startswith("#")]


def test_cmake_installs_every_library_file():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(_cmake_list(text, "VertebralFractureLib_PYTHON_SCRIPTS"))
    package = {p.relative_to(REPO).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}
    missing, stale = sorted(package - listed), sorted(listed - package)
    assert not missing, "not installed into Slicer; run python Utilities/update_cmake_lists.py, or add:\n" + "\n".join(
        f"  {m}" for m in missing)
    assert not stale, f"CMakeLists.txt lists files that do not exist: {stale}"
    data = [p.relative_to(REPO).as_posix() for p in LIBRARY.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    resources = _cmake_list(text, "VertebralFractureLib_PYTHON_RESOURCES")
    assert not [d for d in data if d not in resources], "package data missing from the CMake resources"
    assert "Resources/requirements.txt" in resources
    assert "Resources/Models/*" in text and "Resources/SampleData/*" in text
    assert re.search(r"ctkMacroCompilePythonScript\(\s*TARGET_NAME VertebralFractureLib", text)
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text and "NO_INSTALL_SUBDIR" in text
    assert re.search(r"add_subdirectory\(VertebralFracture\)", text)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)


def test_module_cmake_lists_existing_module_files():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"set\(MODULE_NAME VertebralFracture\)", text)
    scripts = [s.replace("${MODULE_NAME}", "VertebralFracture") for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", "VertebralFracture") for s in _cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    assert scripts == ["VertebralFracture.py"]
    assert {"Resources/UI/VertebralFracture.ui", "Resources/Icons/VertebralFracture.png"} <= set(resources)
    for f in scripts + resources:
        assert (MODULE_DIR / f).is_file(), f
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "add_subdirectory(Testing/Python)" in text
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()
    # loose .py files in the module folder would be loaded as modules by Slicer
    assert sorted(p.name for p in MODULE_DIR.glob("*.py")) == ["VertebralFracture.py"]


# ---------------------------------------------------------------------------------------- requirements, icons
def _requirements() -> list[str]:
    lines = (REPO / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_requirements_cover_the_library_and_spare_slicers_packages():
    from packaging.requirements import Requirement

    names = {Requirement(r).name.lower().replace("-", "_") for r in _requirements()}
    assert not names & {p.lower() for p in PROVIDED_IN_SLICER}, "never reinstall packages Slicer ships"
    imported = set()
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported - set(sys.stdlib_module_names) if m not in ("VertebralFractureLib", "__future__")}
    uncovered = {m for m in third_party
                 if m not in PROVIDED_IN_SLICER and m not in NOT_NEEDED_IN_SLICER and m.lower() not in names}
    assert not uncovered, (f"the library imports {sorted(uncovered)}: add them to Resources/requirements.txt "
                           "(or to NOT_NEEDED_IN_SLICER with the reason)")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_icons_are_128_pixel_pngs():
    assert _png_size(REPO / "Resources" / "VertebralFracture.png") == (128, 128)
    assert _png_size(MODULE_DIR / "Resources" / "Icons" / "VertebralFracture.png") == (128, 128)


# ---------------------------------------------------------------------------------------- module code with stand-ins
def _stub_modules() -> dict[str, types.ModuleType]:
    """Minimal stand-ins for the Slicer/Qt modules VertebralFracture.py imports at module level."""

    class _Base:
        def __init__(self, *args, **kwargs):
            pass

    slicer = types.ModuleType("slicer")
    for name in ("vtkMRMLMarkupsFiducialNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.app = types.SimpleNamespace(connect=lambda *a: None)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    wrapper.parameterNodeWrapper = lambda cls: cls
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(scripted, name, type(name, (_Base,), {}))
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (_Base,), {})
    slicer.util, slicer.i18n = util, i18n
    qt = types.ModuleType("qt")
    qt.QTimer = type("QTimer", (_Base,), {})
    vtk = types.ModuleType("vtk")
    vtk.vtkCommand = types.SimpleNamespace(ModifiedEvent=33)
    vtk.mutable = lambda value: [value]
    return {"slicer": slicer, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": scripted, "slicer.util": util, "qt": qt, "vtk": vtk}


def load_module() -> types.ModuleType:
    """Execute VertebralFracture.py with the stand-ins; restores sys.modules afterwards."""
    stubs = _stub_modules()
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("VertebralFracture_under_test", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module


@pytest.fixture(scope="module")
def module():
    return load_module()


def _run_script(module, script: str, stages=None):
    progress = []
    command = [sys.executable, "-c", textwrap.dedent(script)]
    run = module.AnalysisRun(command, dict(os.environ), str(REPO), stages or module.STAGE_ORDER[module.STAGES_FULL],
                             progressCallback=lambda f, s, m: progress.append((f, s, m)))
    return run, progress


def test_module_run_handle_follows_the_library_runner(module, tmp_path):
    """The module's run handle: progress and outcome come from VertebralFractureLib.process."""
    run, progress = _run_script(module, f"""
        import json
        for stage, fraction in [("read", 1.0), ("given-centroids", 1.0), ("segment", 0.5)]:
            print(json.dumps({{"stage": stage, "fraction": fraction, "message": stage}}), flush=True)
        print(json.dumps({{"stage": "done", "fraction": 1.0, "message": "ok", "output": {str(tmp_path)!r}}}), flush=True)
    """, stages=module.STAGE_ORDER_CENTROIDS)
    finished = []
    run.finishedCallback = finished.append
    run.start()
    run.waitForCompletion()
    assert finished == [run] and run.returnCode == 0 and run.error is None and not run.isRunning()
    assert run.outputFolder == str(tmp_path) and run.elapsedSeconds() > 0
    fractions = [f for f, _, _ in progress]
    # no localization in a centroid run: half the segmentation is about a third of the bar
    assert len(fractions) == 4 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions[1] < 0.1 and 0.25 < fractions[2] < 0.45
    with pytest.raises(RuntimeError, match="not finished"):
        run.result()  # finished, but nothing was loaded into a scene
    run.setResult("the scene nodes")
    assert run.result() == "the scene nodes"


def test_module_run_handle_raises_the_error_line(module):
    run, _ = _run_script(module, """
        import json, sys
        print(json.dumps({"stage": "error", "fraction": 1.0, "message": "model not available: localization"}), flush=True)
        sys.exit(4)
    """)
    run.start()
    run.waitForCompletion()
    assert run.returnCode == 4 and run.error == "model not available: localization"
    with pytest.raises(RuntimeError, match="model not available"):
        run.result()


def test_module_run_handle_cancels(module):
    run, _ = _run_script(module, "import time; print('started', flush=True); time.sleep(120)")
    run.start()
    t0 = time.time()
    run.cancel()
    run.waitForCompletion()
    assert time.time() - t0 < 10 and run.cancelled and not run.isRunning()
    with pytest.raises(RuntimeError, match="cancelled"):
        run.result()


def test_module_leaves_processes_to_the_library():
    """Starting, reading and killing processes is the library's (VertebralFractureLib.process)."""
    tree = ast.parse(_module_source())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"subprocess", "threading", "queue", "signal", "psutil"}, imported
    assert '_library("process")' in _module_source()


def test_logic_builds_a_command_the_cli_accepts(module, monkeypatch, tmp_path):
    from VertebralFractureLib.cli import build_parser

    monkeypatch.setattr(module.VertebralFractureLogic, "pythonSlicerExecutable", staticmethod(lambda: "PythonSlicer"))
    logic = module.VertebralFractureLogic()
    ct, out, seg = tmp_path / "input.nrrd", tmp_path / "results", tmp_path / "segmentation.nrrd"
    command = logic.buildCommand(ct, out, "GPU")
    assert command[:3] == ["PythonSlicer", "-m", "VertebralFractureLib"]
    args = build_parser().parse_args(command[3:])
    assert (args.command, args.input, args.output, args.device, args.progress) == ("analyze", ct, out, "cuda", "json")

    args = build_parser().parse_args(logic.buildCommand(ct, out, "CPU", segmentationFile=seg)[3:])
    assert (args.command, args.segmentation, args.device) == ("grade", seg, "cpu")

    points = tmp_path / "centroids.mrk.json"
    args = build_parser().parse_args(logic.buildCommand(ct, out, "CPU", centroidsFile=points)[3:])
    assert (args.command, args.input, args.centroids, args.output) == ("analyze", ct, points, out)
    with pytest.raises(ValueError, match="not both"):
        logic.buildCommand(ct, out, "CPU", segmentationFile=seg, centroidsFile=points)

    with pytest.raises(ValueError, match="device"):
        logic.buildCommand(ct, out, "TPU")
    # a non-default threshold reaches the CLI, or is refused when the CLI has no such option
    try:
        command = logic.buildCommand(ct, out, "auto", fractureThreshold=0.3)
    except ValueError as err:
        assert "fracture threshold" in str(err)
    else:
        assert build_parser().parse_args(command[3:]).fracture_threshold == pytest.approx(0.3)


def test_logic_finds_requirements_and_the_library(module):
    logic = module.VertebralFractureLogic()
    assert logic.requirementsFile() == REPO / "Resources" / "requirements.txt"
    assert logic.requirements() == _requirements()
    assert module._libraryParent() == REPO  # source tree: the package is beside the module folder
    assert module.sampleDataPaths()["ct"].parent == REPO / "Resources" / "SampleData"
    assert module._satisfied("pytest>=1.0") and not module._satisfied("pytest>=999")
    assert not module._satisfied("surely-not-an-installed-package-xyz")


def test_sample_truth_reader_reads_synthspine_truth(module, tmp_path, monkeypatch):
    """The self-test's truth, from files written by SynthSpine's own writers (``write_verse_case``)."""
    from factories import make_analysis

    from VertebralFractureLib import slicer_scene
    from VertebralFractureLib.synth.generator import SynthCase, write_verse_case

    ref = make_analysis(labels=(19, 20, 21, 22), fractured=(20,))
    truth = [{"label": v.label, "name": v.name, "complete": v.label != 22,
              "grade": None if v.label == 19 else v.genant.grade, "type": v.genant.type}
             for v in ref.vertebrae]
    case = SynthCase(ct=ref.image, labelmap=ref.labelmap, fracture_map=ref.fracture_map, truth=truth,
                     centroids_lps={v.label: v.centroid_lps_mm for v in ref.vertebrae})
    written = write_verse_case(case, tmp_path, "sub-demo")
    paths = {"ct": written["ct"], "seg": written["vertebra_mask"], "ctd": written["centroids"],
             "genant": written["genant"]}
    monkeypatch.setattr(module, "sampleDataPaths", lambda: paths)
    monkeypatch.setattr(module, "_library", lambda name="": importlib.import_module(
        "VertebralFractureLib" + (f".{name}" if name else "")))
    monkeypatch.setattr(slicer_scene, "volume_from_node", lambda node, copy_array=True: ref.image)
    got = module._sampleTruth(object())
    assert got["names"] == ["T12", "L1", "L2", "L3"] and got["complete"] == ["T12", "L1", "L2"]
    assert got["fractured"] == {"L1"}
    assert got["grades"] == {"L1": 2, "L2": 0, "L3": 0} and got["graded"] == {"L1", "L2"}
    c = ref.vertebra("L1").centroid_lps_mm
    assert got["centroidsRAS"]["L1"] == pytest.approx([-c[0], -c[1], c[2]], abs=1e-3)


def test_module_constants_match_the_library(module):
    from VertebralFractureLib import slicer_scene
    from VertebralFractureLib.pipeline import (
        AnalysisConfig,
        GivenCentroids,
        GivenSegmentation,
        default_stages,
    )
    from VertebralFractureLib.process import STAGE_WEIGHTS

    assert module.SOURCE_ATTRIBUTE == slicer_scene.SOURCE_ATTRIBUTE
    assert module.INPUT_REFERENCE_ROLE == slicer_scene.INPUT_REFERENCE_ROLE
    assert module.ACCURACY_ATTRIBUTE == slicer_scene.ACCURACY_ATTRIBUTE
    assert module.NAMING_ATTRIBUTE == slicer_scene.NAMING_ATTRIBUTE
    from VertebralFractureLib import radiograph_scene

    assert module.RADIOGRAPH_WARNINGS_ATTRIBUTE == radiograph_scene.WARNINGS_ATTRIBUTE
    # the progress bar knows every stage a run goes through, named as the pipeline names them
    pipeline_stages = {s.name for s in default_stages()} | {GivenCentroids.name, GivenSegmentation.name}
    for order in [*module.STAGE_ORDER.values(), module.STAGE_ORDER_CENTROIDS]:
        assert set(order) <= set(STAGE_WEIGHTS) and set(order) - {"read", "write"} <= pipeline_stages, order
    assert module.STAGE_ORDER_CENTROIDS[1] == GivenCentroids.name
    assert module.DEFAULT_FRACTURE_THRESHOLD == AnalysisConfig().fracture_threshold
    assert set(module.DEVICES.values()) == {"auto", "cpu", "cuda"}


def test_module_annotations_run_on_slicers_python_39():
    """Slicer 5.8 ships Python 3.9: annotations evaluated at run time must not use ``X | Y``."""
    tree = ast.parse(_module_source())
    offending = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            annotations = [a.annotation for a in args if a.annotation] + ([node.returns] if node.returns else [])
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        offending += [f"line {node.lineno}: {ast.unparse(a)}" for a in annotations
                      if any(isinstance(x, ast.BinOp) for x in ast.walk(a))]
    assert not offending, offending
    assert "from __future__ import annotations" not in _module_source()  # parameterNodeWrapper reads real types


# ---------------------------------------------------------------------------------------- CMake, configured
_STUB_SLICER = r"""
# A stand-in for Slicer's CMake package: just enough to configure and install the extension.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
"""
_STUB_USE = r"""
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
# Modern CTK behaviour: each file is copied to DESTINATION_DIR/<its relative path> and, with
# NO_INSTALL_SUBDIR, installed to INSTALL_DIR/<its relative path>.
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  foreach(f IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS ${MY_SOURCE_DIR}/${f})
      message(FATAL_ERROR "${MY_TARGET_NAME}: ${f} does not exist")
    endif()
    get_filename_component(d ${f} DIRECTORY)
    install(FILES ${MY_SOURCE_DIR}/${f} DESTINATION ${MY_INSTALL_DIR}/${d})
  endforeach()
endmacro()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  ctkMacroCompilePythonScript(TARGET_NAME ${MY_NAME} SCRIPTS "${MY_SCRIPTS}" RESOURCES "${MY_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR} NO_INSTALL_SUBDIR)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_extension_installs_a_working_module_and_library(tmp_path):
    """Configure and install the extension against a stand-in Slicer; the installed tree must hold the
    module, its resources and an importable library that finds its models."""
    stub = tmp_path / "slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(_STUB_SLICER)
    (stub / "UseSlicer.cmake").write_text(_STUB_USE)
    (stub / "empty.cmake").write_text("")
    build, prefix = tmp_path / "build", tmp_path / "install"
    for cmd in (["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=OFF"],
                ["cmake", "--install", str(build), "--prefix", str(prefix)]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    modules = prefix / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    assert sorted(p.name for p in modules.glob("*.py")) == ["VertebralFracture.py"]  # one loose module file
    for f in ("Resources/UI/VertebralFracture.ui", "Resources/Icons/VertebralFracture.png",
              "Resources/requirements.txt", "Resources/radiomics_params.yaml", "Resources/Models/models.json"):
        assert (modules / f).is_file(), f
    installed = {p.relative_to(modules).as_posix() for p in (modules / "VertebralFractureLib").rglob("*.py")}
    source = {p.relative_to(REPO).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}
    assert installed == source
    for sample in (REPO / "Resources" / "SampleData").glob("*"):
        assert (modules / "Resources" / "SampleData" / sample.name).is_file()
    # -S: no site hooks, so the editable install of the source tree is not importable; only the installed copy
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import VertebralFractureLib.slicer_scene, "
              "VertebralFractureLib.cli; from VertebralFractureLib.models import models_dir; print(models_dir())")
    env = {k: v for k, v in os.environ.items() if k != "VF_MODELS_DIR"}
    out = subprocess.run([sys.executable, "-S", "-c", script, str(modules)], capture_output=True, text=True,
                         cwd=tmp_path, env={**env, "PYTHONPATH": _site_packages()})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == modules / "Resources" / "Models"


def _site_packages() -> str:
    """The folder holding numpy and the other third-party packages of this interpreter."""
    import numpy

    return str(Path(numpy.__file__).parent.parent)


def test_logic_sends_a_one_slice_image_to_the_radiograph_command(module, monkeypatch, tmp_path):
    """A 2D image (one slice) is a radiograph: the module runs ``radiograph`` on it, with the stages
    that command reports."""
    import types

    from VertebralFractureLib.cli import build_parser

    monkeypatch.setattr(module.VertebralFractureLogic, "pythonSlicerExecutable", staticmethod(lambda: "PythonSlicer"))
    logic = module.VertebralFractureLogic()
    command = logic.buildRadiographCommand(tmp_path / "input.nrrd", tmp_path / "results", "CPU")
    args = build_parser().parse_args(command[3:])
    assert (args.command, args.input, args.output, args.device, args.progress) == (
        "radiograph", tmp_path / "input.nrrd", tmp_path / "results", "cpu", "json")
    with pytest.raises(ValueError, match="device"):
        logic.buildRadiographCommand(tmp_path / "i.nrrd", tmp_path / "r", "TPU")

    def node(dims):
        return types.SimpleNamespace(GetImageData=lambda: types.SimpleNamespace(GetDimensions=lambda: dims))

    assert logic.isRadiograph(node((240, 320, 1))) and logic.isRadiograph(node((1, 240, 320)))
    assert not logic.isRadiograph(node((64, 64, 40))) and not logic.isRadiograph(node((1, 1, 40)))
    import inspect

    from VertebralFractureLib.radiograph_analysis import analyze_radiograph  # the stages it reports

    source = inspect.getsource(analyze_radiograph)
    assert all(f'report("{stage}"' in source for stage in module.STAGE_ORDER_RADIOGRAPH if stage != "read")
