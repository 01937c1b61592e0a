"""Train the CPU recipe on the lesion phantom and score held-out lesions; print JSON.

For each loss (default: the plan's ``ce-dice-trs`` and plain ``ce-dice`` beside it), in its own working
folder on one shared phantom (``clinix phantom --kind lesion``, CT-sized): ``plan --device cpu
--train-minutes M``, preprocess, train fold ``all`` (every training case, no final validation), predict the
test cases (mirror TTA, the default) and score them. The losses after the first train the first one's
epochs (the same iterations, so the comparison does not depend on the machine's load at planning).

Scores, computed here from the written label maps with NumPy and SciPy (not with ``clinix evaluate``):

- ``lesion_dsc``: the mean over the test cases of the lesion DSC, where a case without a lesion counts 1
  when nothing is predicted and 0 otherwise (the recipe's bar: ≥ 0.6);
- ``lesion_recall``: reference lesions (26-connected components) overlapped by the prediction, pooled over
  the cases (bar: ≥ 0.7), and ``false_positives_per_case``: predicted components touching no lesion;
- ``train_minutes``: the wall time of ``train_fold`` (bar: ≤ 20), and the predict seconds per case;
- ``bf16_vs_fp32``: where the predictions ran in bf16, the first test case predicted again in fp32: the
  share of voxels whose label agrees, and the lesion DSC between the two label maps.

    python bench/cpu_recipe.py [--minutes 20 | --epochs N] [--cases 12] [--test-cases 6]
                               [--losses ce-dice-trs,ce-dice] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def score(pred_dir: Path, ref_dir: Path) -> dict[str, Any]:
    """Lesion DSC per case (empty cases: 1 for an empty prediction), lesion recall and FP per case."""
    structure = np.ones((3, 3, 3), dtype=bool)
    dscs, found, reference, false_positives, cases = [], 0, 0, 0, {}
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        ref, pred = read(ref_path) == 1, read(pred_dir / ref_path.name) == 1
        if ref.any():
            dsc = 2 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred))
        else:
            dsc = float(not pred.any())
        ref_lesions, n_ref = ndimage.label(ref, structure)
        pred_lesions, n_pred = ndimage.label(pred, structure)
        hit = ref & pred
        n_found = len(np.unique(ref_lesions[hit]))
        n_fp = n_pred - len(np.unique(pred_lesions[hit]))
        dscs.append(dsc)
        found, reference, false_positives = found + n_found, reference + n_ref, false_positives + n_fp
        cases[ref_path.name.split(".")[0]] = {"dsc": round(dsc, 4), "lesions": n_ref, "found": n_found, "fp": n_fp}
    return {
        "lesion_dsc": round(float(np.mean(dscs)), 4),
        "lesion_recall": round(found / reference, 4) if reference else None,
        "false_positives_per_case": round(false_positives / len(dscs), 3),
        "cases": cases,
    }


def run_recipe(
    data: Path, fingerprint: Path | None, work: Path, loss: str, minutes: float, epochs: int | None
) -> dict[str, Any]:
    from clinix.infer import predict_folder
    from clinix.io.atomic import write_json
    from clinix.plan import plan_experiment
    from clinix.preprocess import preprocess_dataset
    from clinix.train import train_fold

    work.mkdir(parents=True)
    if fingerprint is not None:
        shutil.copy(fingerprint, work / "fingerprint.json")
    plan, path = plan_experiment(data, work, device="cpu", loss=loss, train_minutes=None if epochs else minutes)
    if epochs:
        plan = dataclasses.replace(plan, epochs=epochs)
        write_json(path, plan.to_json())
    preprocess_dataset(work)
    start = time.perf_counter()
    train_fold(work, "all", device="cpu", echo=False)
    train_seconds = time.perf_counter() - start
    out = work / "predictions"
    summary = predict_folder(work, data / "imagesTs", out, folds="all", device="cpu")
    agreement = compare_with_fp32(work, data, out) if summary.precision == "bf16" else None
    return {
        "loss": loss,
        "spacing": plan.target_spacing,
        "patch": plan.patch_size,
        "crop": plan.crop,
        "epochs": plan.epochs,
        "iterations_per_epoch": plan.iterations_per_epoch,
        "foreground_oversampling": plan.foreground_oversampling,
        "train_minutes": round(train_seconds / 60, 2),
        "predict_seconds_per_case": round(float(np.mean(summary.seconds)), 1),
        "precision": summary.precision,
        "bf16_vs_fp32": agreement,
        **score(out, data / "labelsTs"),
    }


def compare_with_fp32(work: Path, data: Path, bf16_dir: Path) -> dict[str, float]:
    """The first test case again in fp32: voxel agreement and lesion DSC against its bf16 prediction."""
    from clinix.infer import predict_folder

    first = sorted((data / "imagesTs").glob("*_0000.nii.gz"))[0]
    fp32_dir = work / "predictions_fp32"
    predict_folder(work, first, fp32_dir, folds="all", device="cpu", precision="fp32")
    name = first.name.replace("_0000", "")
    bf16, fp32 = read(bf16_dir / name), read(fp32_dir / name)
    both = np.count_nonzero((bf16 == 1) & (fp32 == 1))
    total = np.count_nonzero(bf16 == 1) + np.count_nonzero(fp32 == 1)
    return {
        "case": name.split(".")[0],
        "voxel_agreement": round(float(np.mean(bf16 == fp32)), 6),
        "lesion_dsc_between": round(2 * both / total, 4) if total else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=6)
    parser.add_argument("--losses", default="ce-dice-trs,ce-dice")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of --minutes' worth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here (kept) instead of a temporary folder")
    args = parser.parse_args()
    from clinix.data.lesion import write_lesion_dataset

    root = args.keep or Path(tempfile.mkdtemp(prefix="clinix-recipe-"))
    data = write_lesion_dataset(root / "data", args.cases, args.seed, args.test_cases)
    results, fingerprint = [], None
    for loss in args.losses.split(","):
        epochs = results[0]["epochs"] if results else args.epochs
        result = run_recipe(data, fingerprint, root / loss, loss, args.minutes, epochs)
        fingerprint = root / loss / "fingerprint.json"
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print(json.dumps({"minutes": args.minutes, "cases": args.cases, "test_cases": args.test_cases, "runs": results}))
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
