"""VertebralFracture: find, segment and grade vertebral compression fractures in CT (3D Slicer module).

The module is thin: the analysis runs in a separate process (``PythonSlicer -m VertebralFractureLib
analyze … --progress json``) so that Slicer stays responsive, and the results are put into the scene
by :mod:`VertebralFractureLib.slicer_scene`.
"""

import json
import logging
import os
import pathlib
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Name of the demo CT in the Sample Data module.
SAMPLE_NAME = "VertebralFractureDemoCT"
#: File name stem of the shipped SynthSpine demo case (Resources/SampleData).
SAMPLE_STEM = "synthspine-demo"

#: Choices of the "Stages" option.
STAGES_FULL = "Find, segment and grade vertebrae"
STAGES_GRADE = "Grade a given vertebra segmentation"
#: Choices of the "Device" option and the command-line value of each.
DEVICES = {"auto": "auto", "CPU": "cpu", "GPU": "cuda"}
#: The pipeline's default fracture threshold (``AnalysisConfig.fracture_threshold``).
DEFAULT_FRACTURE_THRESHOLD = 0.5

#: Share of the progress bar per pipeline stage (normalised over the stages a run goes through).
STAGE_WEIGHTS = {"read": 3, "localize": 35, "segment": 35, "given-segmentation": 10, "grade": 12, "write": 15}
STAGE_ORDER = {
    STAGES_FULL: ("read", "localize", "segment", "grade", "write"),
    STAGES_GRADE: ("read", "given-segmentation", "grade", "write"),
}

#: Node attribute and reference role VertebralFractureLib.slicer_scene puts on result nodes (same values;
#: repeated here so that the GUI does not import the library on every update).
SOURCE_ATTRIBUTE = "VertebralFracture.Source"
INPUT_REFERENCE_ROLE = "VertebralFractureInputVolume"

#: Runs in progress (keeps each run and its polling timer alive when the caller drops it).
_ACTIVE_RUNS: set = set()

#: Packages Slicer ships: never installed or upgraded by this module (pinned while installing).
SLICER_PACKAGES = ("numpy", "scipy", "SimpleITK", "vtk", "pydicom", "torch")


def _moduleDir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent


def _libraryParent() -> pathlib.Path:
    """The folder holding the ``VertebralFractureLib`` package.

    Installed extension: beside this file (both in ``qt-scripted-modules``). Source tree (module
    added through "Additional module paths"): the repository root, one level up.
    """
    for candidate in (_moduleDir(), _moduleDir().parent):
        if (candidate / "VertebralFractureLib" / "__init__.py").is_file():
            return candidate
    raise RuntimeError(f"the VertebralFractureLib package was not found beside {_moduleDir()} or in its parent folder")


def _library(name: str = "") -> Any:
    """Import ``VertebralFractureLib`` (or one of its modules) on use, making it importable first."""
    import importlib

    parent = str(_libraryParent())
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return importlib.import_module("VertebralFractureLib" + (f".{name}" if name else ""))


def _resourcesDir(kind: str) -> pathlib.Path:
    """``Resources/<kind>`` of the installed extension (shared by its modules) or of the source tree."""
    for candidate in (_moduleDir() / "Resources" / kind, _moduleDir().parent / "Resources" / kind):
        if candidate.is_dir():
            return candidate
    return _moduleDir() / "Resources" / kind


#
# VertebralFracture
#


class VertebralFracture(ScriptedLoadableModule):
    """Module metadata. Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Vertebral Fracture")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["VertebralFracture contributors"]
        self.parent.helpText = _("""
Finds, segments and grades vertebral compression fractures in a CT of the spine.
<p>Select the CT and click <b>Analyze Spine</b>. The analysis runs in the background (Slicer stays usable;
<b>Cancel</b> stops it) in three stages:</p>
<ol>
<li><b>Localization</b>: a multi-scale spatial configuration network (M-SCN) finds and names the vertebral centroids.</li>
<li><b>Segmentation</b>: a U-Net on a crop around each centroid labels the vertebra as normal or fractured.</li>
<li><b>Grading</b>: six endplate keypoints on each vertebra's mid-sagittal plane give the anterior, middle and
posterior heights and the Genant grade (0 normal, 1 mild 20&ndash;25 %, 2 moderate 25&ndash;40 %, 3 severe &gt; 40 %) and type
(wedge, biconcave, crush).</li>
</ol>
<p>Results: a segmentation with one segment per vertebra (fractured red, normal white), the centroids and keypoints
as markups, the three height lines of each vertebra and a table; placed under the input's study.
<b>Grade a given vertebra segmentation</b> skips the first two stages and grades your own segmentation
(segments named like "L1" or "vertebrae L1").</p>
<p><b>Limits</b>: research software, not for diagnosis; every result must be checked by a qualified reader.
The networks are trained on synthetic spine CT (SynthSpine) built from real vertebra shapes; accuracy on real
scans is lower than on synthetic ones and may be poor with metal implants, severe scoliosis, very low bone
density, children, or a field of view that shows few vertebrae. Vertebrae cut by the field of view are not
graded. Normal lumbar wedging (L4/L5) is not a fracture. Genant grading here is morphometric (heights
only).</p>
<p>The extension's README describes the method, the command line and a Python-console batch example.</p>
""")
        self.parent.acknowledgementText = _("""
Method after Wang et al., "Spinal Vertebral Fracture Detection and Fracture Level Assessment Based on Deep
Learning" (2024), and Genant et al., J Bone Miner Res 1993 (semi-quantitative grading).
Data: the synthetic training and demo CT (SynthSpine) are built from real vertebra shapes and statistics of
VerSe (Sekuboyina et al., Medical Image Analysis 2021; L&ouml;ffler et al., Radiology: AI 2020; CC BY-SA),
the TPTBox sample (Apache-2.0), HealthiVert-GAN (MIT) and the MosMed-based vertebral fracture annotations of
neuro-ml (CC BY-NC 4.0); transfer to real scans was checked on LIDC-IDRI (TCIA, CC BY 3.0) and
Colorectal-Liver-Metastases (TCIA, CC BY 4.0) CT. Module layout after 3D Slicer's scripted-module
template; background processing after SlicerMONAIAuto3DSeg.
""")
        # Additional initialization step after application startup is complete
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Register sample data sets in Sample Data module
#


def sampleDataPaths() -> dict[str, pathlib.Path]:
    """The shipped SynthSpine demo case: ``ct``, ``seg`` (VerSe labels), ``ctd`` (centroids), ``genant``."""
    folder = _resourcesDir("SampleData")
    return {
        "ct": folder / f"{SAMPLE_STEM}_ct.nii.gz",
        "seg": folder / f"{SAMPLE_STEM}_seg-vert_msk.nii.gz",
        "ctd": folder / f"{SAMPLE_STEM}_ctd.json",
        "genant": folder / f"{SAMPLE_STEM}_genant.json",
    }


def registerSampleData():
    """Add the synthetic demo CT to the Sample Data module (a local file: no download needed)."""
    import hashlib

    import SampleData

    ct = sampleDataPaths()["ct"]
    if not ct.is_file():
        logging.warning(f"VertebralFracture: demo CT {ct} is missing; it is not offered in Sample Data")
        return
    digest = hashlib.sha256(ct.read_bytes()).hexdigest()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="VertebralFracture",
        sampleName=SAMPLE_NAME,
        sampleDescription=_("Synthetic spine CT"),
        thumbnailFileName=str(_moduleDir() / "Resources" / "Icons" / "VertebralFracture.png"),
        uris=ct.as_uri(),
        fileNames=f"{SAMPLE_STEM}-{digest[:8]}_ct.nii.gz",
        checksums=f"SHA256:{digest}",
        nodeNames=SAMPLE_NAME,
        loadFileType="VolumeFile",
    )


#
# VertebralFractureParameterNode
#


@parameterNodeWrapper
class VertebralFractureParameterNode:
    """The module's settings, saved with the scene.

    inputVolume - the CT to analyse (Hounsfield units).
    stages - run the whole pipeline, or grade a given vertebra segmentation.
    inputSegmentation - the segmentation to grade (stages = STAGES_GRADE).
    device - where the networks run: auto (GPU when available), CPU or GPU.
    fractureThreshold - a vertebra is "fractured" when its fracture probability reaches this value.
    showHeightLines - add the anterior, middle and posterior height lines of each vertebra.
    outputSegmentation, outputCentroids, outputKeypoints, outputTable - the latest results.
    exportFolder - where "Export" writes the result files.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    stages: Annotated[str, Choice([STAGES_FULL, STAGES_GRADE])] = STAGES_FULL
    inputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    fractureThreshold: Annotated[float, WithinRange(0.05, 0.95)] = DEFAULT_FRACTURE_THRESHOLD
    showHeightLines: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    outputCentroids: vtkMRMLMarkupsFiducialNode
    outputKeypoints: vtkMRMLMarkupsFiducialNode
    outputTable: vtkMRMLTableNode
    exportFolder: pathlib.Path


#
# VertebralFractureWidget
#


class VertebralFractureWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VertebralFracture.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # MRML widgets get the scene through the .ui file's mrmlSceneChanged connections.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = VertebralFractureLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.show3DButton.connect("clicked(bool)", self.onShow3DButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.outputTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputTableChanged)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onResultsTableClicked)
        self.ui.progressBar.hide()
        self.ui.cancelButton.enabled = False

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._run is not None and self._run.isRunning():
            self._run.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None and self._run.isRunning():
            self._run.cancel()  # its input nodes are going away
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if str(self._parameterNode.exportFolder) in ("", "."):
            self._parameterNode.exportFolder = pathlib.Path(slicer.app.defaultScenePath)

    def setParameterNode(self, inputParameterNode: "VertebralFractureParameterNode | None") -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # In the .ui file, a dynamic property "SlicerParameterName" connects each widget to a parameter.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Keep the buttons' enabled state and tooltips honest."""
        p = self._parameterNode
        running = self._run is not None and self._run.isRunning()
        grading = p is not None and p.stages == STAGES_GRADE
        self.ui.inputSegmentationLabel.visible = grading
        self.ui.inputSegmentationSelector.visible = grading
        if running:
            canApply, tip = False, _("An analysis is running; wait for it or click Cancel.")
        elif p is None or not p.inputVolume:
            canApply, tip = False, _("Select the CT volume to analyse.")
        elif grading and not p.inputSegmentation:
            canApply, tip = False, _("Select the segmentation whose vertebrae are to be graded.")
        elif grading:
            canApply, tip = True, _("Grade the vertebrae of the selected segmentation (runs in the background).")
        else:
            canApply, tip = True, _("Find, segment and grade the vertebrae of the selected CT (runs in the background).")
        self.ui.applyButton.enabled = canApply
        self.ui.applyButton.toolTip = tip
        self.ui.cancelButton.enabled = running
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.advancedCollapsibleButton.enabled = not running

        hasSegmentation = p is not None and p.outputSegmentation is not None
        self.ui.show3DButton.enabled = hasSegmentation
        self.ui.show3DButton.toolTip = (_("Show the vertebrae in 3D and centre the 3D view on them.") if hasSegmentation
                                        else _("Analyze a spine first."))
        source = self.logic.resultFolder(p.outputTable) if p is not None and p.outputTable else None
        self.ui.exportButton.enabled = bool(source) and not running
        self.ui.exportButton.toolTip = (
            _("Write the result files (segmentation, markups, analysis.json, report) into the export folder.")
            if source else _("The selected results have no result files; run Analyze Spine again."))

    def onOutputTableChanged(self, node) -> None:
        self.ui.resultsTableView.setMRMLTableNode(node)

    def onResultsTableClicked(self, index) -> None:
        """Centre the slice views on the centroid of the clicked row's vertebra."""
        p = self._parameterNode
        if p is None or p.outputTable is None or p.outputCentroids is None:
            return
        name = p.outputTable.GetCellText(index.row(), 0)
        self.logic.jumpToVertebra(p.outputCentroids, name)

    # -------------------------------------------------------------------------------- actions
    def onApplyButton(self) -> None:
        """Run the analysis in the background."""
        started = False
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to start the analysis."), waitCursor=True):
                if not self._ensureDependencies():
                    return
                p = self._parameterNode
                self.ui.progressBar.value = 0
                self.ui.progressBar.show()
                self.ui.statusLabel.text = _("Starting…")
                self._run = self.logic.process(
                    p.inputVolume,
                    device=p.device,
                    stages=p.stages,
                    inputSegmentation=p.inputSegmentation if p.stages == STAGES_GRADE else None,
                    fractureThreshold=p.fractureThreshold,
                    showHeightLines=p.showHeightLines,
                    waitForCompletion=False,
                    progressCallback=self._onProgress,
                    completedCallback=self._onCompleted,
                )
                started = True
        finally:
            if not started:
                self.ui.progressBar.hide()
                self.ui.statusLabel.text = ""
            self._checkCanApply()

    def _onProgress(self, fraction: float, stage: str, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = f"{stage}: {message}" if message else stage

    def _onCompleted(self, run) -> None:
        self.ui.progressBar.hide()
        try:
            if run.cancelled:
                self.ui.statusLabel.text = _("Cancelled.")
                return
            self.ui.statusLabel.text = _("Failed; see the error message.")
            with slicer.util.tryWithErrorDisplay(_("The analysis failed."), waitCursor=True):
                result = run.result()  # raises the run's error
                text = _("Done in {seconds:.0f} s: {summary}.").format(
                    seconds=run.elapsedSeconds(), summary=result.summary())
                if result.warnings:
                    text += "\n" + _("Warnings: {warnings}").format(warnings="; ".join(result.warnings))
                    logging.warning("VertebralFracture: " + "; ".join(result.warnings))
                self.ui.statusLabel.text = text
                self.logic.showResults(result)
                self.ui.resultsTableView.setMRMLTableNode(result.tableNode)
        finally:
            self._run = None
            self._checkCanApply()

    def onCancelButton(self) -> None:
        if self._run is not None:
            self.ui.statusLabel.text = _("Cancelling…")
            self._run.cancel()

    def onShow3DButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the results in 3D."), waitCursor=True):
            self.logic.show3D(self._parameterNode.outputSegmentation)

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to export the results."), waitCursor=True):
            p = self._parameterNode
            folder = self.logic.exportResults(p.outputTable, p.exportFolder)
            self.ui.statusLabel.text = _("Results written to {folder}").format(folder=folder)

    def _ensureDependencies(self) -> bool:
        """Install missing Python packages after asking; offer a restart when one is needed."""
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
            _("This module needs Python packages that are not installed yet:\n{packages}\n\n"
              "Install them now? This needs a network connection and may take several minutes "
              "(PyTorch is installed through the PyTorch extension).").format(packages=", ".join(missing)),
            _("Install Python packages"),
        ):
            return False
        self.ui.statusLabel.text = _("Installing Python packages…")
        slicer.app.processEvents()
        restartNeeded = self.logic.installDependencies()
        if restartNeeded:
            if slicer.util.confirmYesNoDisplay(
                _("The packages are installed. Slicer must be restarted before they can be used. Restart now?"),
                _("Restart needed"),
            ):
                slicer.util.restart()
            return False
        self.ui.statusLabel.text = _("Python packages installed.")
        return True


#
# Background run
#


class VertebralFractureResult:
    """What an analysis put into the scene (returned by ``process(…, waitForCompletion=True)``).

    Attributes:
        segmentationNode, centroidsNode, keypointsNode, tableNode: the output nodes (None when a stage
            did not produce that output).
        heightLineNodes: the line markups of the heights (three per graded vertebra).
        analysis: the :class:`VertebralFractureLib.analysis.Analysis` (per-vertebra results).
        outputFolder: the folder with the result files (ARCHITECTURE §3).
        warnings: messages of the analysis (field-of-view cuts, fallbacks, …).
    """

    def __init__(self, sceneNodes, analysis, outputFolder: pathlib.Path) -> None:
        scene = slicer.mrmlScene
        self.sceneNodes = sceneNodes
        self.segmentationNode = scene.GetNodeByID(sceneNodes.segmentation) if sceneNodes.segmentation else None
        self.centroidsNode = scene.GetNodeByID(sceneNodes.centroids) if sceneNodes.centroids else None
        self.keypointsNode = scene.GetNodeByID(sceneNodes.keypoints) if sceneNodes.keypoints else None
        self.heightLineNodes = [scene.GetNodeByID(i) for i in sceneNodes.height_lines]
        self.tableNode = scene.GetNodeByID(sceneNodes.table) if sceneNodes.table else None
        self.analysis = analysis
        self.outputFolder = outputFolder
        self.warnings = list(analysis.warnings)

    def summary(self) -> str:
        fractured = [v.name for v in self.analysis.vertebrae if v.status == "fractured"]
        text = _("{count} vertebrae").format(count=len(self.analysis.vertebrae))
        if fractured:
            text += ", " + _("fractured: {names}").format(names=", ".join(fractured))
        return text


class AnalysisRun:
    """One analysis in a ``PythonSlicer`` subprocess.

    Output lines are read on a thread into a queue; a QTimer polls the queue on the main thread,
    parses the JSON progress lines and reports them, so the GUI never blocks. ``cancel()`` kills the
    whole process tree. When the process has ended, ``finishedCallback(run)`` runs on the main thread.
    """

    POLL_INTERVAL_MS = 200

    def __init__(self, command: list[str], environment: dict[str, str], workingDirectory: str,
                 stageOrder: tuple[str, ...], progressCallback: "Callable | None" = None,
                 finishedCallback: "Callable | None" = None) -> None:
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.stageOrder = stageOrder
        self.progressCallback = progressCallback
        self.finishedCallback = finishedCallback
        self.process = None  # subprocess.Popen
        self.cancelled = False
        self.finished = False
        self.returnCode = None
        self.error = None  # one-line message of a failed run
        self.outputFolder = None
        self.logTail = deque(maxlen=20)
        self._lines: queue.Queue = queue.Queue()
        self._reader = None
        self._timer = None
        self._startTime = 0.0
        self._result = None
        self._resultError = None
        self.userData = {}

    # ------------------------------------------------------------------ process
    def start(self) -> None:
        logging.info("VertebralFracture: running " + " ".join(self.command))
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel kills launcher and children
        self._startTime = time.time()
        self.process = subprocess.Popen(
            self.command, env=self.environment, cwd=self.workingDirectory, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
            bufsize=1, **kwargs)
        self._reader = threading.Thread(target=self._readOutput, name="VertebralFractureOutput", daemon=True)
        self._reader.start()
        _ACTIVE_RUNS.add(self)

    def _readOutput(self) -> None:
        """Reader thread: queue every output line; None marks the end."""
        try:
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\r\n"))
        finally:
            self.process.wait()
            self._lines.put(None)

    def startPolling(self) -> None:
        """Report progress from the main thread with a QTimer until the process ends."""
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _poll(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._timer.stop()
                self._finish()
                return
            self._handleLine(line)

    def waitForCompletion(self) -> None:
        """Block until the process ends, reporting progress (batch use)."""
        while True:
            line = self._lines.get()
            if line is None:
                break
            self._handleLine(line)
        self._finish()

    def _handleLine(self, line: str) -> None:
        message = None
        if line.startswith("{"):
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = None
        if not isinstance(message, dict) or "stage" not in message:
            if line.strip():
                self.logTail.append(line)
                logging.info(f"VertebralFracture: {line}")
            return
        stage = str(message["stage"])
        text = str(message.get("message", ""))
        if stage == "error":
            self.error = text or _("the analysis failed")
        elif stage == "done":
            self.outputFolder = message.get("output")
            self._report(1.0, _("loading results"), "")
        else:
            self._report(self.overallFraction(stage, float(message.get("fraction", 0.0))), stage, text)

    def overallFraction(self, stage: str, fraction: float) -> float:
        """The progress bar position of a stage's own fraction."""
        order = self.stageOrder
        if stage not in order:
            return 0.0
        weights = [STAGE_WEIGHTS.get(s, 10) for s in order]
        k = order.index(stage)
        done = sum(weights[:k]) + weights[k] * min(1.0, max(0.0, fraction))
        return done / sum(weights)

    def _report(self, fraction: float, stage: str, message: str) -> None:
        if self.progressCallback is not None:
            try:
                self.progressCallback(fraction, stage, message)
            except Exception:  # noqa: BLE001 - a display error must not stop the analysis
                logging.exception("VertebralFracture: progress display failed")

    def _finish(self) -> None:
        self.finished = True
        _ACTIVE_RUNS.discard(self)
        self.returnCode = self.process.returncode if self.process is not None else None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if not self.cancelled and self.returnCode != 0 and self.error is None:
            tail = " | ".join(list(self.logTail)[-3:])
            self.error = _("the analysis process exited with code {code}").format(code=self.returnCode) + (
                f": {tail}" if tail else "")
        if self.finishedCallback is not None:
            self.finishedCallback(self)

    def isRunning(self) -> bool:
        return self.process is not None and not self.finished

    def elapsedSeconds(self) -> float:
        return time.time() - self._startTime

    def cancel(self) -> None:
        """Kill the process and all its children (the launcher starts the real Python as a child)."""
        if self.process is None or self.finished:
            return
        self.cancelled = True
        _killProcessTree(self.process)

    # ------------------------------------------------------------------ outcome
    def setResult(self, result=None, error=None) -> None:
        self._result, self._resultError = result, error

    def result(self) -> VertebralFractureResult:
        """The scene nodes of a finished run; raises the run's error."""
        if self.cancelled:
            raise RuntimeError(_("the analysis was cancelled"))
        if self._resultError is not None:
            raise self._resultError
        if self.error is not None:
            raise RuntimeError(self.error)
        if self._result is None:
            raise RuntimeError(_("the analysis has not finished"))
        return self._result


def _killProcessTree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(process.pid)
            for child in parent.children(recursive=True):
                child.kill()
        except psutil.Error:
            pass
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.kill()
    except OSError:
        pass


#
# VertebralFractureLogic
#


class VertebralFractureLogic(ScriptedLoadableModuleLogic):
    """The computation, usable without the GUI (no dialogs here).

    Batch example (Python console)::

        logic = slicer.util.getModuleLogic("VertebralFracture")  # or VertebralFracture.VertebralFractureLogic()
        result = logic.process(slicer.util.getNode("CT"), device="CPU", waitForCompletion=True)
        print(result.summary()); table = result.tableNode
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return VertebralFractureParameterNode(super().getParameterNode())

    # -------------------------------------------------------------------------------- dependencies
    @staticmethod
    def requirementsFile() -> pathlib.Path:
        """``Resources/requirements.txt`` (installed extension or source tree)."""
        for candidate in (_moduleDir() / "Resources" / "requirements.txt",
                          _moduleDir().parent / "Resources" / "requirements.txt"):
            if candidate.is_file():
                return candidate
        raise RuntimeError(f"Resources/requirements.txt not found beside {_moduleDir()}")

    def requirements(self) -> list[str]:
        lines = self.requirementsFile().read_text(encoding="utf-8").splitlines()
        return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]

    def missingDependencies(self) -> list[str]:
        """Requirements that are not installed (or too old): "torch" and lines of requirements.txt."""
        missing = [] if _installedVersion("torch") else ["torch (PyTorch extension)"]
        return missing + [r for r in self.requirements() if not _satisfied(r)]

    def installDependencies(self) -> bool:
        """Install torch through the PyTorch extension and the rest with pip, never touching the packages
        Slicer ships. Returns True when Slicer must be restarted before the packages can be used.

        Raises:
            RuntimeError: when the PyTorch extension is missing or an installation fails.
        """
        importedBefore = set(sys.modules)
        if not _installedVersion("torch"):
            try:
                import PyTorchUtils
            except ModuleNotFoundError as err:
                raise RuntimeError(_("This module needs the PyTorch extension: install 'PyTorch' from the "
                                     "Extensions Manager, restart Slicer and try again.")) from err
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1")
                if torch is None:
                    raise RuntimeError(_("PyTorch could not be installed through the PyTorch extension."))
        missing = [r for r in self.requirements() if not _satisfied(r)]
        if missing:
            constraints = pathlib.Path(slicer.util.tempDirectory("VertebralFracture")) / "constraints.txt"
            pins = [f"{name}=={version}" for name in SLICER_PACKAGES if (version := _installedVersion(name))]
            constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
            slicer.util.pip_install([*missing, "-c", str(constraints)])
        still = [r for r in self.requirements() if not _satisfied(r)]
        if still:
            raise RuntimeError(_("Installing {packages} failed; see the Python console.").format(packages=", ".join(still)))
        installedModules = {_topLevelName(r) for r in missing}
        return bool(installedModules & importedBefore)

    # -------------------------------------------------------------------------------- running
    @staticmethod
    def pythonSlicerExecutable() -> str:
        """Slicer's Python launcher, which runs Python with Slicer's environment."""
        for name in ("PythonSlicer", "PythonSlicer.exe"):
            found = shutil.which(name)
            if found:
                return found
        home = pathlib.Path(slicer.app.slicerHome)
        for candidate in (home / "bin" / "PythonSlicer", home / "bin" / "PythonSlicer.exe"):
            if candidate.is_file():
                return str(candidate)
        raise RuntimeError(_("PythonSlicer was not found in {home}/bin").format(home=home))

    def buildCommand(self, inputFile, outputFolder, device: str = "auto", segmentationFile=None,
                     fractureThreshold: float = DEFAULT_FRACTURE_THRESHOLD) -> list[str]:
        """The command line of one analysis (``analyze``, or ``grade`` with a segmentation)."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        command = [self.pythonSlicerExecutable(), "-m", "VertebralFractureLib"]
        if segmentationFile is not None:
            command += ["grade", str(inputFile), "--segmentation", str(segmentationFile)]
        else:
            command += ["analyze", str(inputFile)]
        command += ["-o", str(outputFolder), "--progress", "json", "--device", DEVICES[device]]
        if abs(float(fractureThreshold) - DEFAULT_FRACTURE_THRESHOLD) > 1e-9:
            if "--fracture-threshold" not in _commandLineOptions(command[3]):
                raise ValueError(_("This version of the analysis has no fracture threshold option; "
                                   "set the threshold back to {default}.").format(default=DEFAULT_FRACTURE_THRESHOLD))
            command += ["--fracture-threshold", f"{float(fractureThreshold):g}"]
        return command

    def process(self, inputVolume, device: str = "auto", stages: str = STAGES_FULL, inputSegmentation=None,
                fractureThreshold: float = DEFAULT_FRACTURE_THRESHOLD, showHeightLines: bool = True,
                waitForCompletion: bool = True, progressCallback: "Callable | None" = None,
                completedCallback: "Callable | None" = None):
        """Analyse a CT volume node and put the results into the scene.

        Args:
            inputVolume: the CT (``vtkMRMLScalarVolumeNode``, Hounsfield units).
            device: "auto", "CPU" or "GPU".
            stages: STAGES_FULL, or STAGES_GRADE to grade ``inputSegmentation``.
            inputSegmentation: a segmentation with vertebra segments ("L1", "vertebrae L1", …).
            fractureThreshold: fracture probability from which a vertebra is "fractured".
            showHeightLines: add the Genant height lines.
            waitForCompletion: block until done and return the result (batch use); otherwise return
                the :class:`AnalysisRun` at once and report through the callbacks.
            progressCallback: ``progressCallback(fraction, stage, message)``.
            completedCallback: ``completedCallback(run)``; ``run.result()`` gives the
                :class:`VertebralFractureResult` or raises the error.

        Returns:
            :class:`VertebralFractureResult` when waiting, else the running :class:`AnalysisRun`.

        Raises:
            ValueError: for a missing input or an unknown option.
            RuntimeError: when the analysis fails (waiting only).
        """
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("Select a CT volume with image data."))
        if stages not in STAGE_ORDER:
            raise ValueError(f"stages must be one of {list(STAGE_ORDER)}, got {stages!r}")
        if stages == STAGES_GRADE and inputSegmentation is None:
            raise ValueError(_("Grading needs a vertebra segmentation."))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")

        workFolder = pathlib.Path(slicer.util.tempDirectory("VertebralFracture"))
        inputFile = workFolder / "input.nrrd"
        _exportVolume(inputVolume, inputFile)
        segmentationFile = None
        if stages == STAGES_GRADE:
            sceneLib = _library("slicer_scene")
            labelmap, skipped = sceneLib.segmentation_to_labelmap(slicer.mrmlScene, inputSegmentation, inputVolume)
            if skipped:
                logging.info(f"VertebralFracture: segments that are not vertebrae were left out: {skipped}")
            segmentationFile = workFolder / "segmentation.nrrd"
            _library("io.readers").write_volume(labelmap, segmentationFile)
        outputFolder = workFolder / "results"
        command = self.buildCommand(inputFile, outputFolder, device, segmentationFile, fractureThreshold)
        environment = _subprocessEnvironment()

        run = AnalysisRun(command, environment, str(_libraryParent()), STAGE_ORDER[stages], progressCallback)
        run.userData = {"inputVolumeID": inputVolume.GetID(), "outputFolder": outputFolder,
                        "workFolder": workFolder, "showHeightLines": showHeightLines}

        def finished(finishedRun: AnalysisRun) -> None:
            self._loadRun(finishedRun)
            if completedCallback is not None:
                completedCallback(finishedRun)

        run.finishedCallback = finished
        run.start()
        if waitForCompletion:
            run.waitForCompletion()
            return run.result()
        run.startPolling()
        return run

    def _loadRun(self, run: AnalysisRun) -> None:
        """Main thread, after the process ended: put the results into the scene (or record why not)."""
        data = run.userData
        for temporary in (data["workFolder"] / "input.nrrd", data["workFolder"] / "segmentation.nrrd"):
            temporary.unlink(missing_ok=True)  # large copies of the input; the results stay for export
        if run.cancelled or run.error is not None:
            return
        try:
            volume = slicer.mrmlScene.GetNodeByID(data["inputVolumeID"])
            if volume is None:
                raise RuntimeError(_("the input volume was removed from the scene during the analysis"))
            outputFolder = pathlib.Path(run.outputFolder or data["outputFolder"])
            run.setResult(self.loadResults(outputFolder, volume, showHeightLines=data["showHeightLines"]))
        except Exception as err:  # noqa: BLE001 - reported through run.result()
            logging.exception("VertebralFracture: loading the results failed")
            run.setResult(error=err)

    def loadResults(self, outputFolder, inputVolume, showHeightLines: bool = True) -> VertebralFractureResult:
        """Put the result files of an analysis of ``inputVolume`` into the scene (replacing an earlier run's).

        Also loads a folder written by ``vertebral-fracture analyze`` outside Slicer for the same image.
        """
        sceneLib = _library("slicer_scene")
        outputFolder = pathlib.Path(outputFolder)
        reference = sceneLib.volume_from_node(inputVolume, copy_array=False)
        analysis = sceneLib.load_analysis(outputFolder, reference=reference)
        nodes = sceneLib.add_analysis_to_scene(slicer.mrmlScene, analysis, inputVolume,
                                               height_lines=showHeightLines, source=str(outputFolder))
        result = VertebralFractureResult(nodes, analysis, outputFolder)
        p = self.getParameterNode()
        with slicer.util.NodeModify(p):
            p.outputSegmentation = result.segmentationNode
            p.outputCentroids = result.centroidsNode
            p.outputKeypoints = result.keypointsNode
            p.outputTable = result.tableNode
        return result

    # -------------------------------------------------------------------------------- display, export
    def showResults(self, result: VertebralFractureResult) -> None:
        """Show the input in the slice views and the vertebrae in a centred 3D view."""
        volumeID = result.tableNode.GetNodeReferenceID(INPUT_REFERENCE_ROLE) if result.tableNode else None
        volume = slicer.mrmlScene.GetNodeByID(volumeID) if volumeID else None
        if volume is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        if result.segmentationNode is not None:
            self.show3D(result.segmentationNode)

    def show3D(self, segmentationNode) -> None:
        """Closed surfaces on, 3D visible, a layout with a 3D view, and the 3D view reset onto the spine."""
        if segmentationNode is None:
            raise ValueError(_("There is no segmentation to show."))
        segmentationNode.CreateClosedSurfaceRepresentation()
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.GetDisplayNode().SetVisibility(True)
        segmentationNode.GetDisplayNode().SetVisibility3D(True)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (batch or testing without GUI)
            return
        if layoutManager.threeDViewCount == 0 or not layoutManager.threeDWidget(0).isVisible():
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        slicer.util.resetThreeDViews()
        threeDView = layoutManager.threeDWidget(0).threeDView()
        threeDView.resetFocalPoint()

    @staticmethod
    def jumpToVertebra(centroidsNode, name: str) -> bool:
        """Centre the slice views on a vertebra's centroid ("L1"); False when it has none."""
        for i in range(centroidsNode.GetNumberOfControlPoints()):
            if centroidsNode.GetNthControlPointLabel(i) == name:
                slicer.modules.markups.logic().JumpSlicesToNthPointInMarkup(centroidsNode.GetID(), i, True)
                return True
        return False

    @staticmethod
    def resultFolder(tableNode) -> "pathlib.Path | None":
        """The result-files folder of a results table, when it still exists."""
        if tableNode is None:
            return None
        source = tableNode.GetAttribute(SOURCE_ATTRIBUTE)
        if not source or not pathlib.Path(source).is_dir():
            return None
        return pathlib.Path(source)

    def exportResults(self, tableNode, folder, name: "str | None" = None) -> pathlib.Path:
        """Copy the result files (ARCHITECTURE §3) of a results table into a new sub-folder of ``folder``.

        The sub-folder is ``name`` or, by default, named by date and time, never by the volume
        (whose name may hold patient data); an existing one is never overwritten ("-2", "-3", … are
        appended). DICOM SEG/SR export is planned.

        Returns:
            The folder written.
        """
        source = self.resultFolder(tableNode)
        if source is None:
            raise ValueError(_("The result files of these results are no longer available; run Analyze Spine again."))
        if not folder or str(folder) in ("", "."):
            raise ValueError(_("Choose an export folder."))
        stem = name or time.strftime("VertebralFracture-%Y%m%d-%H%M%S")
        target, k = pathlib.Path(folder) / stem, 1
        while target.exists():
            k += 1
            target = pathlib.Path(folder) / f"{stem}-{k}"
        shutil.copytree(source, target)
        return target


def _exportVolume(volumeNode, path: pathlib.Path) -> None:
    """Write a volume node (its local geometry) without changing the node's own storage settings."""
    if hasattr(slicer.util, "exportNode"):  # Slicer ≥ 5.4
        written = slicer.util.exportNode(volumeNode, str(path), {"useCompression": 0})
    else:
        written = slicer.util.saveNode(volumeNode, str(path), {"useCompression": 0})
    if not written or not path.is_file():
        raise RuntimeError(_("Could not write the input volume to {path}").format(path=path))


def _commandLineOptions(subcommand: str) -> set:
    """The option strings the library's command line accepts for a subcommand (e.g. "analyze")."""
    import argparse

    parser = _library("cli").build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and subcommand in action.choices:
            return set(action.choices[subcommand]._option_string_actions)
    return set()


def _subprocessEnvironment() -> dict[str, str]:
    """Slicer's startup environment, with the library importable and unbuffered output."""
    environment = dict(slicer.util.startupEnvironment())
    parent = str(_libraryParent())
    existing = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = parent + (os.pathsep + existing if existing else "")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def _installedVersion(distribution: str) -> "str | None":
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _satisfied(requirement: str) -> bool:
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    version = _installedVersion(req.name)
    return version is not None and (not req.specifier or req.specifier.contains(version, prereleases=True))


def _topLevelName(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.replace("-", "_").lower()


#
# VertebralFractureTest
#


class VertebralFractureTest(ScriptedLoadableModuleTest):
    """Self-test: the real pipeline on the shipped synthetic CT, on the CPU, checked against its truth.

    Uses ScriptedLoadableModuleTest base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_VertebralFracture_demoCT()

    def test_VertebralFracture_demoCT(self):
        import numpy as np

        self.delayDisplay("Loading the synthetic demo CT from Sample Data")
        self.assertTrue(sampleDataPaths()["ct"].is_file(), f"the demo CT {sampleDataPaths()['ct']} is missing")
        registerSampleData()
        import SampleData

        volume = SampleData.downloadSample(SAMPLE_NAME)
        self.assertIsNotNone(volume)
        truth = _sampleTruth(volume)

        logic = VertebralFractureLogic()
        if logic.missingDependencies():
            self.delayDisplay("Installing the Python packages the analysis needs")
            logic.installDependencies()

        self.delayDisplay("Analysing on the CPU (the real pipeline)")
        progress = []
        result = logic.process(volume, device="CPU", waitForCompletion=True,
                               progressCallback=lambda f, s, m: progress.append((f, s)))
        self.assertTrue(progress and max(fraction for fraction, stage in progress) == 1.0)

        # segments: every complete vertebra of the truth found, nothing that is not there; named,
        # coloured by fracture status, with SNOMED CT terminology
        sceneLib = _library("slicer_scene")
        anatomy = _library("anatomy")
        segmentation = result.segmentationNode.GetSegmentation()
        names = [segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()
                 for i in range(segmentation.GetNumberOfSegments())]
        self.assertTrue(set(truth["complete"]) <= set(names), f"missed vertebrae: {set(truth['complete']) - set(names)}")
        self.assertTrue(set(names) <= set(truth["names"]), f"vertebrae that are not there: {set(names) - set(truth['names'])}")
        self.assertEqual(names, [n for n in truth["names"] if n in names])  # cranial → caudal
        for i, name in enumerate(names):
            segment = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
            if name in truth["complete"]:
                expected = anatomy.FRACTURED_COLOR if name in truth["fractured"] else anatomy.NORMAL_COLOR
                self.assertTrue(np.allclose(segment.GetColor(), expected, atol=1e-3), f"{name} colour")
            tag = vtk.mutable("")
            self.assertTrue(segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag))
            self.assertIn(anatomy.vertebra(name).snomed_code, str(tag))
        self.assertEqual(result.segmentationNode.GetNodeReferenceID(
            result.segmentationNode.GetReferenceImageGeometryReferenceRole()), volume.GetID())

        # centroids within 5 mm of the truth (RAS)
        centroids = result.centroidsNode
        self.assertEqual(centroids.GetNumberOfControlPoints(), len(names))
        for i in range(centroids.GetNumberOfControlPoints()):
            name = centroids.GetNthControlPointLabel(i)
            position = np.array(centroids.GetNthControlPointPosition(i))
            self.assertLess(np.linalg.norm(position - truth["centroidsRAS"][name]), 5.0, f"{name} centroid")

        # keypoints of every graded vertebra, and the table: status and Genant grade (±1) per vertebra
        keypointLabels = {result.keypointsNode.GetNthControlPointLabel(i).split()[0]
                          for i in range(result.keypointsNode.GetNumberOfControlPoints())}
        self.assertTrue(truth["graded"] <= keypointLabels, f"no keypoints: {truth['graded'] - keypointLabels}")
        table = result.tableNode
        self.assertEqual(table.GetNumberOfRows(), len(names))
        column = {table.GetColumnName(c): c for c in range(table.GetNumberOfColumns())}
        for row in range(table.GetNumberOfRows()):
            name = table.GetCellText(row, column["Vertebra"])
            if name not in truth["complete"]:
                continue
            status = table.GetCellText(row, column["Status"])
            self.assertEqual(status, "fractured" if name in truth["fractured"] else "normal", f"{name} status")
            if name in truth["graded"]:
                grade = table.GetCellText(row, column["Genant grade"])
                self.assertTrue(grade, f"{name} not graded")
                self.assertLessEqual(abs(int(grade) - truth["grades"][name]), 1, f"{name} Genant grade")

        # running again replaces the nodes instead of adding more
        self.delayDisplay("Loading the results again: nodes are replaced, not duplicated")
        before = slicer.mrmlScene.GetNumberOfNodes()
        again = logic.loadResults(result.outputFolder, volume)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertEqual(again.tableNode.GetID(), result.tableNode.GetID())
        self.assertEqual(len(sceneLib.find_analysis_nodes(slicer.mrmlScene, volume)[sceneLib.ROLES[0]]), 1)
        self.delayDisplay("Test passed")


def _sampleTruth(volumeNode) -> dict[str, Any]:
    """The demo case's known truth (SynthSpine ``_ctd.json`` and ``_genant.json``).

    Returns:
        ``names`` (cranial → caudal), ``complete`` (not cut by the field of view), ``centroidsRAS``,
        ``fractured`` (Genant grade > 0, the generator's definition), ``grades`` and ``graded``
        (complete vertebrae with a grade, which get keypoints).
    """
    import numpy as np

    paths = sampleDataPaths()
    sceneLib = _library("slicer_scene")
    anatomy = _library("anatomy")
    reference = sceneLib.volume_from_node(volumeNode, copy_array=False)
    centroids = _library("io.verse").read_centroids(paths["ctd"], reference)
    names = [anatomy.name_of(label) for label in anatomy.cranio_caudal(centroids)]
    centroidsRAS = {anatomy.name_of(label): np.asarray(lps, dtype=float) * [-1.0, -1.0, 1.0]
                    for label, lps in centroids.items()}
    entries = json.loads(paths["genant"].read_text(encoding="utf-8"))
    if isinstance(entries, dict):
        entries = entries.get("vertebrae", [])
    grades, fractured, complete = {}, set(), set()
    for entry in entries:
        name = entry.get("name") or anatomy.name_of(int(entry["label"]))
        grade = entry.get("grade")
        if isinstance(entry.get("genant"), dict):
            grade = entry["genant"].get("grade", grade)
        if entry.get("complete", True):
            complete.add(name)
        if grade is not None:
            grades[name] = int(grade)
        if entry.get("status") == "fractured" or (entry.get("status") is None and grade is not None and int(grade) > 0):
            fractured.add(name)
    graded = {name for name in grades if name in complete}
    return {"names": names, "complete": [n for n in names if n in complete], "centroidsRAS": centroidsRAS,
            "fractured": fractured, "grades": grades, "graded": graded}
