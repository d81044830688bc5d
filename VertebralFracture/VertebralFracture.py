"""VertebralFracture: find, segment and grade vertebral compression fractures in CT (3D Slicer module).

The module is thin: the analysis runs in a separate process (``PythonSlicer -m VertebralFractureLib
analyze … --progress json``, started and followed by :mod:`VertebralFractureLib.process`) so that
Slicer stays responsive, and the results are put into the scene by
:mod:`VertebralFractureLib.slicer_scene`.
"""

import json
import logging
import os
import pathlib
import shutil
import sys
import time
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

#: The stages each kind of run goes through (their progress-bar shares are in VertebralFractureLib.process).
STAGE_ORDER = {
    STAGES_FULL: ("read", "localize", "segment", "grade", "write"),
    STAGES_GRADE: ("read", "given-segmentation", "grade", "write"),
}
#: Stages of a run from the centroids in the scene ("Re-run from centroids": analyze --centroids).
STAGE_ORDER_CENTROIDS = ("read", "given-centroids", "segment", "grade", "write")
#: Stages of a lateral radiograph's analysis (a one-slice volume: ``vertebral-fracture radiograph``).
STAGE_ORDER_RADIOGRAPH = ("read", "detect", "classify", "fresh-vcf")
#: Opacity of the Grad-CAM overlay on a radiograph.
GRAD_CAM_OPACITY = 0.4

#: Node attribute and reference role VertebralFractureLib.slicer_scene puts on result nodes (same values;
#: repeated here so that the GUI does not import the library on every update).
SOURCE_ATTRIBUTE = "VertebralFracture.Source"
INPUT_REFERENCE_ROLE = "VertebralFractureInputVolume"
ACCURACY_ATTRIBUTE = "VertebralFracture.Accuracy"
NAMING_ATTRIBUTE = "VertebralFracture.Naming"
#: Set on a radiograph analysis' table only (``radiograph_scene``).
RADIOGRAPH_WARNINGS_ATTRIBUTE = "VertebralFracture.Radiograph.Warnings"

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
<li><b>Segmentation</b>: a U-Net on a crop around each centroid labels the vertebra as normal or fractured; the
outline shown is completed into the bone it touches (the posterior elements), except where a rib joins the vertebra.</li>
<li><b>Grading</b>: six endplate keypoints on each vertebra's mid-sagittal plane give the anterior, middle and
posterior heights and the Genant grade (0 normal, 1 mild 20&ndash;25 %, 2 moderate 25&ndash;40 %, 3 severe &gt; 40 %) and type
(wedge, biconcave, crush).</li>
</ol>
<p>Results: a segmentation with one segment per vertebra (fractured red, normal white, ochre when not assessable),
the centroids and keypoints as markups, the three height lines of each vertebra and a table; placed under the
input's study. The table says what fixed each level name (C2, a rib, the sacrum, or "not anchored": then the
names may be off by a level) and why a vertebra is "not assessable" (no call, no grade). The models' measured
accuracy is stated above the table.</p>
<p><b>Correcting</b>: drag or rename the centroids (point list "… centroids"), or move all names one level with
<b>Names &uarr;</b> / <b>Names &darr;</b>, then click <b>Re-run from centroids</b>: the vertebrae are segmented and
graded again around your points, under their names, and the results replace the current ones.</p>
<p><b>Grade a given vertebra segmentation</b> skips the first two stages and grades your own segmentation
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
        self.ui.shiftNamesUpButton.connect("clicked()", lambda: self.onShiftNames(-1))
        self.ui.shiftNamesDownButton.connect("clicked()", lambda: self.onShiftNames(+1))
        self.ui.rerunButton.connect("clicked(bool)", self.onRerunButton)
        self.ui.progressBar.hide()
        self.ui.cancelButton.enabled = False
        self._showNotes(None)

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
            canApply, tip = False, _("Select the CT volume (or a lateral radiograph) to analyse.")
        elif grading and not p.inputSegmentation:
            canApply, tip = False, _("Select the segmentation whose vertebrae are to be graded.")
        elif grading:
            canApply, tip = True, _("Grade the vertebrae of the selected segmentation (runs in the background).")
        elif self.logic.isRadiograph(p.inputVolume):
            canApply, tip = True, _("Find L1-L5 on the selected lateral radiograph and classify each as normal, old or "
                                    "fresh fracture, with Grad-CAM maps (runs in the background).")
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
        hasCentroids = p is not None and p.outputCentroids is not None
        for button in (self.ui.shiftNamesUpButton, self.ui.shiftNamesDownButton, self.ui.rerunButton):
            button.enabled = hasCentroids and not running
        if not hasCentroids:
            self.ui.rerunButton.toolTip = _("Analyze a spine first: its centroids appear as a point list.")
        elif running:
            self.ui.rerunButton.toolTip = _("An analysis is running; wait for it or click Cancel.")
        else:
            self.ui.rerunButton.toolTip = _(
                "Segment and grade again around the points of the centroid list, under their names "
                "(after dragging, renaming or shifting them). The results replace the current ones.")

        source = self.logic.resultFolder(p.outputTable) if p is not None and p.outputTable else None
        self.ui.exportButton.enabled = bool(source) and not running
        self.ui.exportButton.toolTip = (
            _("Write the result files (segmentation, markups, analysis.json, report) into the export folder.")
            if source else _("The selected results have no result files; run Analyze Spine again."))

    def onOutputTableChanged(self, node) -> None:
        self.ui.resultsTableView.setMRMLTableNode(node)
        self._showNotes(node)

    def _showNotes(self, tableNode) -> None:
        """Show the results' accuracy statement and naming caveat (kept on the table node) above the table."""
        accuracy = tableNode.GetAttribute(ACCURACY_ATTRIBUTE) if tableNode is not None else None
        naming = tableNode.GetAttribute(NAMING_ATTRIBUTE) if tableNode is not None else None
        self.ui.accuracyLabel.text = _("Accuracy: {note}").format(note=accuracy) if accuracy else ""
        self.ui.accuracyLabel.visible = bool(accuracy)
        radiograph = tableNode is not None and tableNode.GetAttribute(RADIOGRAPH_WARNINGS_ATTRIBUTE) is not None
        # a radiograph's caveat ends with its own advice (count from the sacrum); a CT can be re-run
        advice = "" if radiograph else _("Check the levels; if they are off, shift the names and re-run from the centroids.")
        self.ui.namingLabel.text = " ".join(part for part in (naming, advice) if part) if naming else ""
        self.ui.namingLabel.visible = bool(naming)

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
        p = self._parameterNode
        self._startRun(lambda: self.logic.process(
            p.inputVolume,
            device=p.device,
            stages=p.stages,
            inputSegmentation=p.inputSegmentation if p.stages == STAGES_GRADE else None,
            fractureThreshold=p.fractureThreshold,
            showHeightLines=p.showHeightLines,
            waitForCompletion=False,
            progressCallback=self._onProgress,
            completedCallback=self._onCompleted,
        ))

    def onRerunButton(self) -> None:
        """Segment and grade again around the (corrected) centroids, in the background."""
        p = self._parameterNode
        self._startRun(lambda: self.logic.rerunFromCentroids(
            p.outputCentroids,
            device=p.device,
            fractureThreshold=p.fractureThreshold,
            showHeightLines=p.showHeightLines,
            waitForCompletion=False,
            progressCallback=self._onProgress,
            completedCallback=self._onCompleted,
        ))

    def _startRun(self, start: Callable) -> None:
        started = False
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to start the analysis."), waitCursor=True):
                if not self._ensureDependencies():
                    return
                self.ui.progressBar.value = 0
                self.ui.progressBar.show()
                self.ui.statusLabel.text = _("Starting…")
                self._run = start()
                started = True
        finally:
            if not started:
                self.ui.progressBar.hide()
                self.ui.statusLabel.text = ""
            self._checkCanApply()

    def onShiftNames(self, step: int) -> None:
        """Rename every centroid one level up (-1) or down (+1); the analysis is not run again."""
        with slicer.util.tryWithErrorDisplay(_("The centroids were not renamed."), waitCursor=True):
            names = self.logic.shiftCentroidNames(self._parameterNode.outputCentroids, step)
            message = (_("Centroids renamed one level up: {names}.") if step < 0
                       else _("Centroids renamed one level down: {names}.")).format(names=", ".join(names))
            self.ui.statusLabel.text = message + " " + _(
                "The table and segments keep the old names until you click Re-run from centroids.")

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
                self._showNotes(result.tableNode)
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
        warnings: messages of the analysis (field-of-view cuts, fallbacks, …), without the accuracy statement.
        accuracy: the analysis' statement of the models' accuracy (plain sentences), or None.
        naming: which level names no landmark anchored (a sentence), or None.
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
        sceneLib = _library("slicer_scene")
        self.warnings = sceneLib.other_warnings(analysis.warnings)
        self.accuracy = sceneLib.accuracy_note(analysis.warnings)
        self.naming = sceneLib.naming_note(analysis)

    def summary(self) -> str:
        fractured = [v.name for v in self.analysis.vertebrae if v.status == "fractured"]
        unassessed = [v.name for v in self.analysis.vertebrae if v.status == "not assessable"]
        text = _("{count} vertebrae").format(count=len(self.analysis.vertebrae))
        if fractured:
            text += ", " + _("fractured: {names}").format(names=", ".join(fractured))
        if unassessed:
            text += ", " + _("not assessable: {names}").format(names=", ".join(unassessed))
        return text


class RadiographResult:
    """What a radiograph's analysis put into the scene: the image, the Grad-CAM overlays, a closed
    curve per vertebra and the table; ``data`` is ``radiograph.json``."""

    def __init__(self, sceneNodes, outputFolder: pathlib.Path) -> None:
        import json

        scene = slicer.mrmlScene
        self.sceneNodes = sceneNodes
        self.imageNode = scene.GetNodeByID(sceneNodes.image) if sceneNodes.image else None
        self.gradCamNode = scene.GetNodeByID(sceneNodes.grad_cam) if sceneNodes.grad_cam else None
        self.freshCamNode = scene.GetNodeByID(sceneNodes.fresh_cam) if sceneNodes.fresh_cam else None
        self.boxNodes = [scene.GetNodeByID(i) for i in sceneNodes.boxes]
        self.tableNode = scene.GetNodeByID(sceneNodes.table) if sceneNodes.table else None
        self.outputFolder = outputFolder
        self.data = json.loads((outputFolder / "radiograph.json").read_text(encoding="utf-8"))
        self.warnings = list(self.data.get("warnings", []))
        self.accuracy = None
        self.naming = None

    def summary(self) -> str:
        vertebrae = self.data["vertebrae"]
        text = ", ".join(f"{v['name']} {v['class'] or v['status']}" for v in vertebrae) or _("no lumbar vertebra found")
        fresh = self.data.get("fresh_vcf_probability_vertebrae")
        part = (_("fresh fracture in the image: p = {p:.2f} from the vertebrae").format(p=fresh) if fresh is not None
                else _("no vertebra assessed"))
        return text + "; " + part + "; " + _("whole-image network p = {p:.2f}").format(p=self.data["fresh_vcf_probability"])


class AnalysisRun:
    """One analysis in a ``PythonSlicer`` subprocess, followed without blocking the GUI.

    The library's :class:`VertebralFractureLib.process.ProcessRun` starts the process and reads its
    JSON-lines progress on a thread; here a QTimer polls it on the main thread, so the callbacks run
    there. ``cancel()`` kills the whole process tree. When the process has ended,
    ``finishedCallback(run)`` runs on the main thread.
    """

    POLL_INTERVAL_MS = 200

    def __init__(self, command: list, environment: dict, workingDirectory: str,
                 stageOrder: tuple, progressCallback: "Callable | None" = None,
                 finishedCallback: "Callable | None" = None) -> None:
        self.finishedCallback = finishedCallback
        self.userData = {}
        self._timer = None
        self._result = None
        self._resultError = None
        self._run = _library("process").ProcessRun(
            command, environment, workingDirectory, stageOrder,
            progress_callback=progressCallback, finished_callback=self._onFinished)

    # ------------------------------------------------------------------ the process
    @property
    def process(self):
        """The ``subprocess.Popen`` of the analysis, once started."""
        return self._run.process

    @property
    def cancelled(self) -> bool:
        return self._run.cancelled

    @property
    def error(self) -> "str | None":
        """Why the process failed (one line), None when it did not fail."""
        return self._run.error

    @property
    def returnCode(self) -> "int | None":
        return self._run.returncode

    @property
    def outputFolder(self) -> "str | None":
        return self._run.output_folder

    def start(self) -> None:
        self._run.start()
        _ACTIVE_RUNS.add(self)

    def startPolling(self) -> None:
        """Report progress from the main thread with a QTimer until the process ends."""
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._run.poll)
        self._timer.start()

    def waitForCompletion(self) -> None:
        """Block until the process ends, reporting progress (batch use)."""
        self._run.wait()

    def _onFinished(self, processRun) -> None:
        if self._timer is not None:
            self._timer.stop()
        _ACTIVE_RUNS.discard(self)
        if self.finishedCallback is not None:
            self.finishedCallback(self)

    def isRunning(self) -> bool:
        return self._run.is_running()

    def elapsedSeconds(self) -> float:
        return self._run.elapsed_seconds()

    def cancel(self) -> None:
        """Kill the process and all its children (the launcher starts the real Python as a child)."""
        self._run.cancel()

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
                     fractureThreshold: float = DEFAULT_FRACTURE_THRESHOLD, centroidsFile=None) -> list[str]:
        """The command line of one analysis: ``analyze``, ``analyze --centroids`` with a centroid
        point list, or ``grade`` with a segmentation."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        if segmentationFile is not None and centroidsFile is not None:
            raise ValueError("give a segmentation to grade or centroids to segment around, not both")
        command = [self.pythonSlicerExecutable(), "-m", "VertebralFractureLib"]
        if segmentationFile is not None:
            command += ["grade", str(inputFile), "--segmentation", str(segmentationFile)]
        else:
            command += ["analyze", str(inputFile)]
            if centroidsFile is not None:
                command += ["--centroids", str(centroidsFile)]
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
        if self.isRadiograph(inputVolume) and stages == STAGES_FULL:
            return self.processRadiograph(inputVolume, device, waitForCompletion, progressCallback, completedCallback)
        if stages not in STAGE_ORDER:
            raise ValueError(f"stages must be one of {list(STAGE_ORDER)}, got {stages!r}")
        if stages == STAGES_GRADE and inputSegmentation is None:
            raise ValueError(_("Grading needs a vertebra segmentation."))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")

        workFolder = pathlib.Path(slicer.util.tempDirectory("VertebralFracture"))
        segmentationFile = None
        if stages == STAGES_GRADE:
            sceneLib = _library("slicer_scene")
            labelmap, skipped = sceneLib.segmentation_to_labelmap(slicer.mrmlScene, inputSegmentation, inputVolume)
            if skipped:
                logging.info(f"VertebralFracture: segments that are not vertebrae were left out: {skipped}")
            segmentationFile = workFolder / "segmentation.nrrd"
            _library("io.readers").write_volume(labelmap, segmentationFile)
        return self._launch(inputVolume, workFolder, STAGE_ORDER[stages], device, fractureThreshold, showHeightLines,
                            waitForCompletion, progressCallback, completedCallback, segmentationFile=segmentationFile)

    @staticmethod
    def isRadiograph(volumeNode) -> bool:
        """A 2D image (one slice along some axis): a radiograph, analysed by ``vertebral-fracture radiograph``."""
        image = volumeNode.GetImageData() if volumeNode is not None else None
        return image is not None and sorted(image.GetDimensions())[0] == 1 and sorted(image.GetDimensions())[1] > 1

    def buildRadiographCommand(self, inputFile, outputFolder, device: str = "auto") -> list[str]:
        """The command line of a radiograph's analysis."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        return [self.pythonSlicerExecutable(), "-m", "VertebralFractureLib", "radiograph", str(inputFile),
                "-o", str(outputFolder), "--progress", "json", "--device", DEVICES[device]]

    def processRadiograph(self, inputVolume, device: str = "auto", waitForCompletion: bool = True,
                          progressCallback: "Callable | None" = None, completedCallback: "Callable | None" = None):
        """Analyse a lateral lumbar radiograph (a one-slice volume node; its pixel spacing is the
        volume's spacing): L1-L5 boxes as closed curves, normal / old / fresh in the table, Grad-CAM
        as a coloured overlay. Returns as :meth:`process` does (a :class:`RadiographResult`)."""
        if inputVolume is None or not self.isRadiograph(inputVolume):
            raise ValueError(_("Select a radiograph: a 2D image (one slice)."))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        workFolder = pathlib.Path(slicer.util.tempDirectory("VertebralFracture"))
        inputFile = workFolder / "input.nrrd"
        outputFolder = workFolder / "results"
        command = self.buildRadiographCommand(inputFile, outputFolder, device)
        _exportVolume(inputVolume, inputFile)
        userData = {"inputVolumeID": inputVolume.GetID(), "outputFolder": outputFolder, "workFolder": workFolder,
                    "radiograph": True}
        return self._run(command, STAGE_ORDER_RADIOGRAPH, userData, waitForCompletion, progressCallback,
                         completedCallback)

    def loadRadiographResults(self, outputFolder) -> "RadiographResult":
        """Put the files of ``vertebral-fracture radiograph`` into the scene (an earlier load of the same
        folder is updated in place)."""
        nodes = _library("radiograph_scene").add_radiograph_to_scene(slicer.mrmlScene, pathlib.Path(outputFolder))
        result = RadiographResult(nodes, pathlib.Path(outputFolder))
        self.getParameterNode().outputTable = result.tableNode
        return result

    def rerunFromCentroids(self, centroidsNode, inputVolume=None, device: str = "auto",
                           fractureThreshold: float = DEFAULT_FRACTURE_THRESHOLD, showHeightLines: bool = True,
                           waitForCompletion: bool = True, progressCallback: "Callable | None" = None,
                           completedCallback: "Callable | None" = None):
        """Segment and grade again around the points of a centroid point list (``analyze --centroids``).

        The reader corrects the centroids of an analysis (drags points, renames them, or shifts all
        names with :meth:`shiftCentroidNames`); the point list is written to a temporary ``.mrk.json``
        (LPS, in the CT's own frame) and the results replace the content of the CT's result nodes.

        Args:
            centroidsNode: a point list whose points are named after vertebrae ("L1").
            inputVolume: the CT; default: the one the point list's analysis was made for.
            device, fractureThreshold, showHeightLines, waitForCompletion, progressCallback,
                completedCallback: as :meth:`process`.

        Returns:
            As :meth:`process`.

        Raises:
            ValueError: no CT, or a point list that ``analyze`` would refuse (a point not named after a
                vertebra, a vertebra named twice, no placed point); checked before anything runs.
        """
        if centroidsNode is None:
            raise ValueError(_("There is no centroid point list to run from."))
        sceneLib = _library("slicer_scene")
        if inputVolume is None:
            inputVolume = centroidsNode.GetNodeReference(INPUT_REFERENCE_ROLE)
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("The CT these centroids belong to is not in the scene; select it and run Analyze Spine."))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        workFolder = pathlib.Path(slicer.util.tempDirectory("VertebralFracture"))
        centroidsFile = sceneLib.write_point_list_centroids(centroidsNode, workFolder / "centroids.mrk.json",
                                                            inputVolume)
        return self._launch(inputVolume, workFolder, STAGE_ORDER_CENTROIDS, device, fractureThreshold,
                            showHeightLines, waitForCompletion, progressCallback, completedCallback,
                            centroidsFile=centroidsFile)

    def processFolder(self, inputs, outputFolder, device: str = "auto", workers: int = 1) -> dict:
        """Analyse every study of a folder (or CSV list) and save a scene per study — batch use from
        the Python console; blocks until done.

        Runs ``vertebral-fracture batch INPUTS -o OUTPUT`` (resumable: studies done before are not
        analysed again), then, for each study it finished, clears the scene, loads the CT and its
        results as the module shows them, and saves the scene as ``OUTPUT/scenes/<study>/scene.mrml``.

        Returns:
            Study → the scene file written (studies that failed are in ``OUTPUT/batch.csv``).

        Raises:
            ValueError: for an unknown device.
            RuntimeError: when the batch itself could not run (its error message).
        """
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        command = [self.pythonSlicerExecutable(), "-m", "VertebralFractureLib", "batch", str(inputs),
                   "-o", str(outputFolder), "--progress", "json", "--device", DEVICES[device],
                   "--workers", str(int(workers))]
        run = _library("process").ProcessRun(command, _subprocessEnvironment())
        run.start()
        run.wait()
        if run.returncode not in (0, 6):  # 6: some studies failed, the others are done
            raise RuntimeError(run.error or f"batch ended with exit code {run.returncode}")

        def newScene():
            slicer.mrmlScene.Clear(0)
            return slicer.mrmlScene

        output = pathlib.Path(outputFolder)
        return _library("slicer_scene").scenes_from_batch(output, output / "scenes", newScene)

    @staticmethod
    def shiftCentroidNames(centroidsNode, step: int) -> list:
        """Rename every point of a centroid point list one level up (``step`` -1: L1 → T12) or down (+1).

        Only the names change; run :meth:`rerunFromCentroids` to segment and grade under the new names.

        Returns:
            The new names, in point order.

        Raises:
            ValueError: a point not named after a vertebra, or a shift past C1 or L6 (nothing is renamed).
        """
        if centroidsNode is None:
            raise ValueError(_("There is no centroid point list to rename."))
        return _library("slicer_scene").shift_point_list_names(centroidsNode, step)

    def _launch(self, inputVolume, workFolder: pathlib.Path, stageOrder: tuple, device: str,
                fractureThreshold: float, showHeightLines: bool, waitForCompletion: bool,
                progressCallback: "Callable | None", completedCallback: "Callable | None",
                segmentationFile=None, centroidsFile=None):
        """Write the CT, start the analysis process, and load its results into the scene when it ends."""
        inputFile = workFolder / "input.nrrd"
        outputFolder = workFolder / "results"
        command = self.buildCommand(inputFile, outputFolder, device, segmentationFile, fractureThreshold,
                                    centroidsFile=centroidsFile)
        _exportVolume(inputVolume, inputFile)
        userData = {"inputVolumeID": inputVolume.GetID(), "outputFolder": outputFolder,
                    "workFolder": workFolder, "showHeightLines": showHeightLines}
        return self._run(command, stageOrder, userData, waitForCompletion, progressCallback, completedCallback)

    def _run(self, command: list, stageOrder: tuple, userData: dict, waitForCompletion: bool,
             progressCallback: "Callable | None", completedCallback: "Callable | None"):
        """Start the analysis process and load its results into the scene when it ends."""
        run = AnalysisRun(command, _subprocessEnvironment(), str(_libraryParent()), stageOrder, progressCallback)
        run.userData = userData

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
            if data.get("radiograph"):
                run.setResult(self.loadRadiographResults(outputFolder))
            else:
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
        """Show the input in the slice views and the vertebrae in a centred 3D view (a radiograph: the
        image with its Grad-CAM overlay)."""
        if isinstance(result, RadiographResult):
            slicer.util.setSliceViewerLayers(background=result.imageNode, foreground=result.gradCamNode,
                                             foregroundOpacity=GRAD_CAM_OPACITY, fit=True)
            return
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
        # a vertebra the analysis calls "not assessable" gets no call; on this clean synthetic case
        # that may be the exception, not the rule
        unassessed = {v.name for v in result.analysis.vertebrae if v.status == "not assessable"}
        self.assertLessEqual(3 * len(unassessed & set(truth["complete"])), len(truth["complete"]),
                             f"not assessable: {sorted(unassessed)}")
        for i, name in enumerate(names):
            segment = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
            if name in unassessed:
                self.assertTrue(np.allclose(segment.GetColor(), sceneLib.NOT_ASSESSABLE_COLOR, atol=1e-3))
            elif name in truth["complete"]:
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
            if name in unassessed:
                self.assertEqual(status, "not assessable")
                self.assertTrue(table.GetCellText(row, column["Status reason"]), f"{name}: no reason given")
                self.assertEqual(table.GetCellText(row, column["Genant grade"]), "", f"{name} graded")
                continue
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

        # correcting: names one level down and back (refused past the end of the spine), a centroid
        # dragged 2 mm, run again from the point list: the same nodes, the dragged point kept
        self.delayDisplay("Re-running from corrected centroids")
        labels = [centroids.GetNthControlPointLabel(i) for i in range(centroids.GetNumberOfControlPoints())]
        shifted = logic.shiftCentroidNames(centroids, +1)
        self.assertEqual(len(shifted), len(labels))
        self.assertEqual(logic.shiftCentroidNames(centroids, -1), labels)
        first = centroids.GetNthControlPointLabel(0)
        centroids.SetNthControlPointLabel(0, "C1")
        with self.assertRaises(ValueError):
            logic.shiftCentroidNames(centroids, -1)
        centroids.SetNthControlPointLabel(0, first)
        middle = len(labels) // 2
        dragged = np.array(centroids.GetNthControlPointPosition(middle)) + [0.0, 0.0, 2.0]
        centroids.SetNthControlPointPosition(middle, *dragged)
        before = slicer.mrmlScene.GetNumberOfNodes()
        rerun = logic.rerunFromCentroids(centroids, device="CPU", waitForCompletion=True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertEqual(rerun.tableNode.GetID(), result.tableNode.GetID())
        self.assertEqual(rerun.centroidsNode.GetID(), centroids.GetID())
        self.assertEqual([centroids.GetNthControlPointLabel(i) for i in range(centroids.GetNumberOfControlPoints())],
                         labels)
        self.assertLess(np.linalg.norm(np.array(centroids.GetNthControlPointPosition(middle)) - dragged), 0.01)
        self.assertTrue(all(v.naming is None or v.naming.get("anchor") == "given"
                            for v in rerun.analysis.vertebrae if getattr(v, "naming", None) is not None))
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
