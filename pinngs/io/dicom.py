"""DICOM XA (X-Ray Angiographic Image) in and out, through pydicom.

Reading: one multi-frame XA file per imaging plane (a biplane run is two files). Geometry comes from
PositionerPrimaryAngle / PositionerSecondaryAngle (degrees), DistanceSourceToDetector (SID) and
DistanceSourceToPatient (SOD) in mm, ImagerPixelSpacing (row, col) in mm, Rows and Columns.
Rotational runs carry per-frame PositionerPrimaryAngleIncrement / PositionerSecondaryAngleIncrement;
we read them as each frame's offset from the base angle (the convention of public rotational-DSA
tooling), so frame k sits at PositionerPrimaryAngle + increment[k]. Timing: FrameTimeVector (ms
between consecutive frames, the first entry 0) or FrameTime (ms per frame); planes are aligned by
AcquisitionDateTime, the earliest first frame of the study being t = 0.

Pixels are raw detector intensities. The mask is the frame(s) named by MaskSubtractionSequence >
MaskFrameNumbers (averaged), else the first frame; the study keeps the other frames and the log
subtraction d = ln(I_mask) - ln(I) happens in ``Study.line_integrals``.

Cardiac timing, where the run carries it (the first plane that does): the ECG of WaveformSequence
(5400,0100) (its first channel, sensitivity applied; sample k at MultiplexGroupTimeOffset (0018,1068)
+ k / SamplingFrequency, taken relative to the plane's AcquisitionDateTime) into ``meta["ecg"]``; R
waves from RWavePointer (0028,6040) (frame numbers) or from the enhanced multi-frame functional groups
(PerFrameFunctionalGroupsSequence > CardiacSynchronizationSequence > NominalCardiacTriggerDelayTime
(0020,9153): each frame's time since its R wave) into ``meta["cardiac"]["r_peaks_s"]``; HeartRate
(0018,1088). ``io.ecg`` turns them into a cardiac phase per frame and gates the fit.

Writing (``write_xa``) produces the same layout, so tests run on real DICOM files written by pydicom.
Values are written as DICOM decimal strings (DS, 16 characters): geometry and times round-trip
exactly when they fit that (the simulator's do), and to 1e-12 relative otherwise.
"""
from __future__ import annotations

import datetime as _dt
import os
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..geometry import CArmView
from .study import Frame, Study, StudyError

XA_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.12.1"
REQUIRED = ("Rows", "Columns", "PositionerPrimaryAngle", "PositionerSecondaryAngle",
            "DistanceSourceToDetector", "DistanceSourceToPatient", "ImagerPixelSpacing", "PixelData")
_EPOCH = _dt.datetime(2000, 1, 1)


class DicomError(ValueError):
    """A DICOM file that cannot be read as an XA run; the message names the file and the tag."""


def _tag(ds, name: str, path: Path):
    from pydicom.datadict import tag_for_keyword

    if name not in ds or ds[name].value in (None, "", b""):
        t = tag_for_keyword(name)
        raise DicomError(f"{path}: missing required tag {name} ({t >> 16:04X},{t & 0xFFFF:04X})")
    return ds[name].value


def _num(v, name: str, path: Path) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: tag {name} is not a number: {v!r}") from None
    if not np.isfinite(x):
        raise DicomError(f"{path}: tag {name} is not finite: {v!r}")
    return x


def _times_s(ds, n: int, path: Path) -> list[Decimal]:
    """Frame times (s, exact decimals) relative to the plane's first frame."""
    if "FrameTimeVector" in ds and ds.FrameTimeVector not in (None, ""):
        v = ds.FrameTimeVector
        ftv = list(v) if hasattr(v, "__len__") and not isinstance(v, str) else [v]
        if len(ftv) != n:
            raise DicomError(f"{path}: FrameTimeVector has {len(ftv)} values for {n} frames")
        out, acc = [], Decimal(0)
        for k, v in enumerate(ftv):
            if k and Decimal(str(v)) < 0:
                raise DicomError(f"{path}: FrameTimeVector (0018,1065) entry {k} is {v} ms: frame times must not "
                                 "go backwards")
            acc += Decimal(str(v)) if k else Decimal(0)
            out.append(acc / 1000)
        return out
    if "FrameTime" in ds and ds.FrameTime not in (None, ""):
        ft = Decimal(str(ds.FrameTime))
        if not ft > 0 and n > 1:
            raise DicomError(f"{path}: FrameTime (0018,1063) is {ds.FrameTime} ms; it must be positive")
        return [ft * k / 1000 for k in range(n)]
    if n == 1:
        return [Decimal(0)]
    raise DicomError(f"{path}: missing required tag FrameTimeVector (0018,1065) or FrameTime (0018,1063) "
                     f"for a {n}-frame run")


def _cardiac(ds, times: list[Decimal], path: Path) -> dict:
    """The run's cardiac timing in its own clock (s from its first frame; module docstring): "ecg_t_s",
    "ecg_signal", "ecg_source", "r_frames" (0-based frame indices), "r_peaks_s", "heart_rate_bpm";
    only what it carries."""
    out: dict = {}
    if "WaveformSequence" in ds and len(ds.WaveformSequence):
        w = ds.WaveformSequence[0]
        try:
            fs = float(w.SamplingFrequency)
            sig = np.asarray(ds.waveform_array(0), float)
            sig = sig[:, 0] if sig.ndim == 2 else sig
            t0 = float(w.get("MultiplexGroupTimeOffset", 0.0) or 0.0) / 1000.0
        except Exception as err:  # pydicom raises several types for inconsistent waveform data
            raise DicomError(f"{path}: WaveformSequence (5400,0100) cannot be decoded ({err})") from None
        if not fs > 0:
            raise DicomError(f"{path}: SamplingFrequency (003A,001A) of the waveform is {fs}; it must be positive")
        label = ""
        try:
            ch = w.ChannelDefinitionSequence[0].ChannelSourceSequence[0]
            label = str(ch.get("CodeMeaning", "") or ch.get("CodeValue", ""))
        except (AttributeError, IndexError):
            pass
        out.update(ecg_t_s=t0 + np.arange(len(sig)) / fs, ecg_signal=sig,
                   ecg_source=f"ECG waveform{' (' + label + ')' if label else ''} of {path.name}")
    if "RWavePointer" in ds and ds.RWavePointer not in (None, ""):
        rw = ds.RWavePointer
        out["r_frames"] = [int(x) - 1 for x in (rw if hasattr(rw, "__len__") else [rw])]
        if any(not 0 <= k < len(times) for k in out["r_frames"]):
            raise DicomError(f"{path}: RWavePointer (0028,6040) {[k + 1 for k in out['r_frames']]} names frames "
                             f"outside 1..{len(times)}")
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if pf is not None and len(pf) == len(times):
        r = []
        for k, item in enumerate(pf):
            cs = item.get("CardiacSynchronizationSequence")
            if cs and "NominalCardiacTriggerDelayTime" in cs[0]:
                r.append(float(times[k]) - float(cs[0].NominalCardiacTriggerDelayTime) / 1000.0)
        if r:  # one R wave per beat: the frames of a beat agree to within a frame time
            r = np.sort(np.asarray(r))
            out["r_peaks_s"] = [float(g.mean()) for g in np.split(r, np.nonzero(np.diff(r) > 0.1)[0] + 1)]
    if "HeartRate" in ds and ds.HeartRate not in (None, ""):
        out["heart_rate_bpm"] = float(ds.HeartRate)
    return out


def _seconds(dtm: _dt.timedelta) -> Decimal:
    """A timedelta in seconds, exactly."""
    return Decimal(dtm.days * 86400 + dtm.seconds) + Decimal(dtm.microseconds) / Decimal(10**6)


def _increments(ds, name: str, n: int, path: Path) -> list[float] | None:
    if name not in ds or ds[name].value in (None, ""):
        return None
    v = ds[name].value
    vals = [float(x) for x in (v if hasattr(v, "__len__") and not isinstance(v, str) else [v])]
    if len(vals) != n:
        raise DicomError(f"{path}: {name} has {len(vals)} values for {n} frames")
    return vals


def _dec_sum(base: float, inc: list[float] | None, k: int) -> float:
    return float(Decimal(str(base)) + Decimal(str(inc[k]))) if inc else base


IDENTITY_TAGS = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")  # must agree across the files of a study


def read_xa(paths: list[str | os.PathLike] | str | os.PathLike, force_merge: bool = False) -> Study:
    """Read one plane (a file), a biplane pair (two files) or a folder of XA files into a Study.

    The files must belong to one patient, study and frame of reference (``IDENTITY_TAGS``, where
    present); files that differ are refused with both values named, unless ``force_merge``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        paths = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
    paths = [Path(x) for x in paths]
    if not paths:
        raise DicomError("read_xa: no DICOM files given")
    planes = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError) as err:
            raise DicomError(f"{path}: not a readable DICOM file ({err})") from None
        for name in REQUIRED:
            _tag(ds, name, path)
        try:
            n = int(ds.get("NumberOfFrames", 1))
        except (TypeError, ValueError):
            raise DicomError(f"{path}: NumberOfFrames (0028,0008) is not a number: {ds.get('NumberOfFrames')!r}") from None
        if n < 1:
            raise DicomError(f"{path}: NumberOfFrames (0028,0008) is {n}; an XA run needs at least 1 frame")
        try:
            pix = ds.pixel_array.astype(np.float32)
        except Exception as err:  # pydicom raises several types for inconsistent pixel data
            raise DicomError(f"{path}: PixelData (7FE0,0010) cannot be decoded ({err})") from None
        if pix.size != n * int(ds.Rows) * int(ds.Columns):
            raise DicomError(f"{path}: PixelData holds {pix.size} pixels, not NumberOfFrames × Rows × Columns = "
                             f"{n} × {int(ds.Rows)} × {int(ds.Columns)}")
        pix = pix.reshape(n, int(ds.Rows), int(ds.Columns))
        sp = [_num(x, "ImagerPixelSpacing", path) for x in ds.ImagerPixelSpacing]
        if len(sp) != 2:
            raise DicomError(f"{path}: ImagerPixelSpacing (0018,1164) needs 2 values, found {len(sp)}")
        geo = dict(sid_mm=_num(ds.DistanceSourceToDetector, "DistanceSourceToDetector", path),
                   sod_mm=_num(ds.DistanceSourceToPatient, "DistanceSourceToPatient", path),
                   rows=int(ds.Rows), cols=int(ds.Columns), pixel_spacing_mm=(sp[0], sp[1]))
        a0 = _num(ds.PositionerPrimaryAngle, "PositionerPrimaryAngle", path)
        b0 = _num(ds.PositionerSecondaryAngle, "PositionerSecondaryAngle", path)
        da = _increments(ds, "PositionerPrimaryAngleIncrement", n, path)
        db = _increments(ds, "PositionerSecondaryAngleIncrement", n, path)
        mask_idx = [0]
        if "MaskSubtractionSequence" in ds and len(ds.MaskSubtractionSequence):
            item = ds.MaskSubtractionSequence[0]
            if "MaskFrameNumbers" in item:
                mf = item.MaskFrameNumbers
                mask_idx = [int(x) - 1 for x in (mf if hasattr(mf, "__len__") else [mf])]
        if any(not 0 <= k < n for k in mask_idx) or len(mask_idx) >= n:
            raise DicomError(f"{path}: MaskFrameNumbers (0028,6110) {mask_idx} do not leave contrast frames in "
                             f"a {n}-frame run")
        acq = ds.get("AcquisitionDateTime", None)
        try:
            start = _dt.datetime.strptime(str(acq).split("+")[0].split("-")[0], "%Y%m%d%H%M%S.%f") if acq else None
        except ValueError:
            raise DicomError(f"{path}: AcquisitionDateTime (0008,002A) is not a DICOM DT: {acq!r}") from None
        planes.append(dict(path=path, pix=pix, geo=geo, a0=a0, b0=b0, da=da, db=db, mask=mask_idx,
                           times=(times := _times_s(ds, n, path)), start=start, cardiac=_cardiac(ds, times, path),
                           ids={t: str(ds.get(t, "")) for t in IDENTITY_TAGS}))
    if not force_merge:
        for t in IDENTITY_TAGS:
            seen = {p["ids"][t]: p["path"] for p in planes if p["ids"][t]}
            if len(seen) > 1:
                (a, pa), (b, pb) = list(seen.items())[:2]
                raise DicomError(f"read_xa: the files are of different studies: {t} is {a!r} in {pa} but {b!r} in "
                                 f"{pb}; read them separately, or pass --force-merge if they are one acquisition")
    starts = [p["start"] for p in planes]
    t0 = min(s for s in starts if s is not None) if any(s is not None for s in starts) else None
    rotational = any(p["da"] is not None or p["db"] is not None for p in planes)
    if rotational and len(planes) != 1:
        raise DicomError("read_xa: a rotational run must be read on its own (one file)")
    views, frames = [], []
    offsets = [Decimal(0) if t0 is None or p["start"] is None else _seconds(p["start"] - t0) for p in planes]
    for p, off in zip(planes, offsets):
        keep = [k for k in range(len(p["pix"])) if k not in p["mask"]]
        if not rotational:
            views.append(CArmView(p["a0"], p["b0"], **p["geo"]))
        for k in keep:
            if rotational:  # exact decimal sums of the DS strings
                views.append(CArmView(_dec_sum(p["a0"], p["da"], k), _dec_sum(p["b0"], p["db"], k), **p["geo"]))
            frames.append(Frame(p["pix"][k], len(views) - 1, float(off + p["times"][k])))
    masks = {}
    if rotational:
        m = planes[0]["pix"][planes[0]["mask"]].mean(0)
        masks = {vi: m for vi in range(len(views))}
    else:
        masks = {vi: p["pix"][p["mask"]].mean(0) for vi, p in enumerate(planes)}
    frames.sort(key=lambda f: f.t_s)
    mode = "rotational" if rotational else {1: "single", 2: "biplane"}.get(len(views), "multiview")
    meta = {"source": [str(p["path"]) for p in planes]}
    for p, off in zip(planes, offsets):  # the first plane that carries cardiac timing, in the study's clock
        c, o = p["cardiac"], float(off)
        if not c:
            continue
        if "ecg_t_s" in c:
            meta["ecg"] = {"t_s": [o + float(x) for x in c["ecg_t_s"]], "signal": [float(x) for x in c["ecg_signal"]],
                           "source": c["ecg_source"]}
        r, src = None, None
        if c.get("r_frames"):
            r, src = [o + float(p["times"][k]) for k in c["r_frames"]], f"RWavePointer (0028,6040) of {p['path'].name}"
        elif c.get("r_peaks_s"):
            r, src = [o + x for x in c["r_peaks_s"]], f"NominalCardiacTriggerDelayTime (0020,9153) of {p['path'].name}"
        if r is not None or "heart_rate_bpm" in c:
            meta["cardiac"] = {k: v for k, v in (("r_peaks_s", r), ("source", src),
                                                 ("heart_rate_bpm_tag", c.get("heart_rate_bpm"))) if v is not None}
        break
    study = Study(views, frames, mode, "raw", masks, meta)
    try:
        study.validate("read_xa")
    except StudyError as err:
        raise DicomError(str(err)) from None
    return study


# ------------------------------------------------------------------------------------------------
def _ds(x: float) -> str:
    """A float as a DICOM DS (≤ 16 characters), exact where it fits."""
    from pydicom.valuerep import format_number_as_ds

    s = repr(float(x)) if not isinstance(x, Decimal) else format(x.normalize(), "f")
    return s if len(s) <= 16 else format_number_as_ds(float(x))


def write_xa(study: Study, folder: str | os.PathLike, i0: float = 16000.0) -> list[Path]:
    """Write the study as multi-frame XA files (one per plane, or one rotational run) into ``folder``.

    Line-integral studies are stored as raw intensity I = i0·exp(-d) (uint16) with a mask frame of
    i0 prepended and named in MaskSubtractionSequence; raw studies keep their intensities and masks.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    study.validate("write_xa")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if study.mode == "rotational":
        groups = [list(range(len(study.frames)))]
    else:
        groups = [[k for k, f in enumerate(study.frames) if f.view == v] for v in range(len(study.views))]
    t_first = min(f.t_s for f in study.frames)
    study_uid, frame_of_reference_uid = generate_uid(), generate_uid()  # one study: every file shares them
    written = []
    for g, idx in enumerate(groups):
        idx = sorted(idx, key=lambda k: study.frames[k].t_s)
        v0 = study.views[study.frames[idx[0]].view]
        if study.intensity == "raw":
            mask = study.masks[study.frames[idx[0]].view]
            imgs = [mask] + [study.frames[k].image for k in idx]
        else:
            imgs = [np.full((v0.rows, v0.cols), i0, np.float32)] + [i0 * np.exp(-study.frames[k].image) for k in idx]
        arr = np.stack(imgs)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"write_xa: intensities must lie in [0, 65535] for uint16, found "
                             f"[{arr.min():.1f}, {arr.max():.1f}]; lower i0")
        arr = np.rint(arr).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = XA_SOP_CLASS
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = XA_SOP_CLASS, meta.MediaStorageSOPInstanceUID
        ds.Modality = "XA"
        ds.PatientName, ds.PatientID = "pinngs^simulated", "PINNGS0001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.Rows, ds.Columns, ds.NumberOfFrames = v0.rows, v0.cols, len(arr)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelIntensityRelationship = "LIN"
        ds.PositionerPrimaryAngle, ds.PositionerSecondaryAngle = _ds(v0.primary_deg), _ds(v0.secondary_deg)
        ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = _ds(v0.sid_mm), _ds(v0.sod_mm)
        ds.ImagerPixelSpacing = [_ds(v0.pixel_spacing_mm[0]), _ds(v0.pixel_spacing_mm[1])]
        # mask at the first contrast frame's time; then the real increments
        times = [Decimal(repr(study.frames[idx[0]].t_s))] + [Decimal(repr(study.frames[k].t_s)) for k in idx]
        ds.FrameTimeVector = ["0"] + [_ds((times[k] - times[k - 1]) * 1000) for k in range(1, len(times))]
        start = _EPOCH + _dt.timedelta(seconds=float(times[0]) - t_first)
        ds.AcquisitionDateTime = start.strftime("%Y%m%d%H%M%S.%f")
        item = Dataset()
        item.MaskOperation, item.MaskFrameNumbers = "AVG_SUB", [1]
        ds.MaskSubtractionSequence = Sequence([item])
        if study.mode == "rotational":
            base_a, base_b = v0.primary_deg, v0.secondary_deg
            def inc(angle, base):
                return _ds(Decimal(repr(angle)) - Decimal(repr(base)))

            inc_a = ["0"] + [inc(study.views[study.frames[k].view].primary_deg, base_a) for k in idx]
            inc_b = ["0"] + [inc(study.views[study.frames[k].view].secondary_deg, base_b) for k in idx]
            ds.PositionerPrimaryAngleIncrement = inc_a
            ds.PositionerSecondaryAngleIncrement = inc_b
        ecg = (study.meta or {}).get("ecg")
        if g == 0 and ecg and ecg.get("t_s") is not None:
            ds.WaveformSequence = Sequence([_ecg_item(ecg, float(times[0]))])
        ds.PixelData = arr.tobytes()
        path = out / (f"plane_{g}.dcm" if study.mode != "rotational" else "rotational.dcm")
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written


def _ecg_item(ecg: dict, plane_start_s: float):
    """A WaveformSequence item holding ``ecg`` ({"t_s", "signal"} in mV, evenly sampled), its first
    sample MultiplexGroupTimeOffset ms after the plane's first frame (at ``plane_start_s``)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    t, x = np.asarray(ecg["t_s"], float), np.asarray(ecg["signal"], float)
    fs = 1.0 / float(np.median(np.diff(t)))
    sens = max(float(np.abs(x).max()), 1e-9) / 30000.0  # mV per count: int16 with headroom
    w = Dataset()
    w.WaveformOriginality, w.NumberOfWaveformChannels, w.NumberOfWaveformSamples = "ORIGINAL", 1, len(x)
    w.SamplingFrequency = _ds(round(fs, 6))
    w.MultiplexGroupTimeOffset = _ds(round((t[0] - plane_start_s) * 1000.0, 6))
    w.WaveformBitsAllocated, w.WaveformSampleInterpretation = 16, "SS"
    ch, src, units = Dataset(), Dataset(), Dataset()
    src.CodeValue, src.CodingSchemeDesignator, src.CodeMeaning = "5.6.3-9-2", "SCPECG", "Lead II"
    units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "mV", "UCUM", "millivolt"
    ch.ChannelSourceSequence, ch.ChannelSensitivityUnitsSequence = Sequence([src]), Sequence([units])
    ch.ChannelSensitivity, ch.ChannelSensitivityCorrectionFactor = _ds(sens), "1"
    ch.ChannelBaseline, ch.WaveformBitsStored = "0", 16
    w.ChannelDefinitionSequence = Sequence([ch])
    w.WaveformData = np.rint(x / sens).astype("<i2").tobytes()
    return w
