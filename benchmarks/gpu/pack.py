"""What the GPU machine needs and cannot make (it has no warp-lang to simulate studies, and no
network): the studies and their truth packed small, and the tests' tube cine.

    python -m benchmarks.gpu.pack pack   [--presets ...]   # here: benchmarks/.cache -> .gpu/pack/
    python -m benchmarks.gpu.pack unpack                  # there: .gpu/pack/ -> .gpu/cache/sim/<preset>/

Frames travel as float16 (half the bytes; the line integrals are ≤ ~2 with noise of ~3e-3, so the
rounding, ≤ 1e-3 relative, is below the noise); unpacked, they are float32 study folders again.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

PACK = Path(".gpu/pack")
CACHE = Path(".gpu/cache")


def pack(presets: list[str], src: Path) -> None:
    from pinngs.io import load_study

    PACK.mkdir(parents=True, exist_ok=True)
    for name in presets:
        st = load_study(src / "sim" / name)
        doc = json.loads((src / "sim" / name / "study.json").read_text())
        np.savez_compressed(PACK / f"{name}.npz", frames=np.stack([f.image for f in st.frames]).astype(np.float16),
                            view=np.array([f.view for f in st.frames]), t_s=np.array([f.t_s for f in st.frames]),
                            doc=json.dumps(doc))
        shutil.copytree(src / "sim" / name / "truth", PACK / f"{name}.truth", dirs_exist_ok=True)
        print(f"{name}: {(PACK / f'{name}.npz').stat().st_size / 2 ** 20:.1f} MiB")
    sys.path.insert(0, "tests")
    from conftest import tube_cine_study

    study, occ, lo = tube_cine_study()
    np.savez_compressed(PACK / "tube_cine.npz", frames=np.stack([f.image for f in study.frames]),
                        view=np.array([f.view for f in study.frames]), t_s=np.array([f.t_s for f in study.frames]),
                        views=json.dumps([v.__dict__ | {"pixel_spacing_mm": list(v.pixel_spacing_mm),
                                                        "principal_offset_mm": list(v.principal_offset_mm)}
                                          for v in study.views], default=str), occ=occ, lo=lo)


def unpack() -> None:
    from pinngs.io.study import load_study

    for z in sorted(PACK.glob("*.npz")):
        if z.stem == "tube_cine":
            continue
        d = np.load(z)
        doc = json.loads(str(d["doc"]))
        out = CACHE / "sim" / z.stem
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "frames").mkdir()
        import imageio.v3 as iio

        for k, fr in enumerate(doc["frames"]):
            iio.imwrite(out / fr["file"], d["frames"][k].astype(np.float32))
        (out / "study.json").write_text(json.dumps(doc))
        shutil.copytree(PACK / f"{z.stem}.truth", out / "truth")
        load_study(out)  # checks it
        print(f"unpacked {z.stem} -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["pack", "unpack"])
    ap.add_argument("--presets", nargs="*", default=["stenosis50-biplane", "tube-biplane"])
    ap.add_argument("--src", default="benchmarks/.cache")
    a = ap.parse_args()
    pack(a.presets, Path(a.src)) if a.what == "pack" else unpack()
