"""Start-up cost of the ``latentlit`` command: time from the command to its first work.

Each point runs in a fresh Python process (what a user pays on every run), ``--repeats`` times;
the median and the range of the wall time are printed, and the median CPU time (user + system of
the process), which a busy machine distorts less than the wall time:

* ``import latentlit.cli``: the module the console script imports;
* ``latentlit --help`` and ``latentlit predict --help``: to the help text, with its line count;
* a parser error: ``latentlit predict --config CONFIG --n_sample 8`` (a misspelt option) to its error line;
* ``predict`` to the first ``predict_step``: ``latentlit predict --config CONFIG`` (default the
  quickstart MC-dropout job) into a fresh output directory, timed until the first batch of
  questions reaches the model (the process then exits, so no sampling cost is included).

    python scripts/bench_startup.py [--repeats 5] [--config configs/quickstart/predict_dropout.yaml]
        [--root OTHER_CHECKOUT ...]

With ``--root`` (repeatable) the same points are measured for other checkouts of latentlit (e.g.
an older commit unpacked with ``git archive``), interleaved repeat by repeat so that they share
the machine's load. Timings depend on the machine and its load; compare numbers of one run only.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentlit.cli.scripts import ScriptParser, run

ROOT = Path(__file__).resolve().parents[1]

# Patches predict_step in the child so that it reports the time of the first batch and exits.
FIRST_WORK = """
import os, sys, time
t0 = float(os.environ["BENCH_T0"])
import latentlit.lit.predictor as predictor
def first_batch(self, *args, **kwargs):
    sys.stdout.write(f"BENCH_FIRST_WORK {time.time() - t0:.4f} {time.time() - t1:.4f} {time.process_time() - c1:.4f}\\n")
    sys.stdout.flush(); os._exit(0)
predictor.TTSPredictor.predict_step = first_batch
from latentlit.cli import main
t1, c1 = time.time(), time.process_time()  # Lightning and latentlit imported: latentlit's own start-up from here
main(sys.argv[1:])
"""


def _env(root: Path = ROOT) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("LATENTLIT_DEBUG", None)
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv: list[str], root: Path = ROOT, status: int = 0) -> tuple[tuple[float, float], str]:
    """(wall, CPU) seconds of ``argv`` in a fresh process (run in checkout ``root``), and its stdout (its stderr when
    the expected exit ``status`` is not 0)."""
    start, cpu = time.perf_counter(), _cpu()
    out = subprocess.run(argv, capture_output=True, text=True, env=_env(root), cwd=root)
    took = (time.perf_counter() - start, _cpu() - cpu)
    if status:
        if out.returncode != status or not out.stderr.startswith("latentlit: error:"):
            raise RuntimeError(f"{argv} exited {out.returncode}, expected {status}: {out.stderr[-2000:]}")
        return took, out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"{argv} exited {out.returncode}: {out.stderr[-2000:]}")
    return took, out.stdout


def time_first_work(config: str, workdir: Path, root: Path = ROOT) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) seconds from starting ``latentlit predict --config config`` to its first
    predict_step, and (wall, CPU) from the end of the imports to it (latentlit's own start-up:
    parsing, building the objects, loading the backbone and the problems)."""
    env = _env(root)
    cpu = _cpu()
    env["BENCH_T0"] = repr(time.time())
    argv = [sys.executable, "-c", FIRST_WORK, "predict", "--config", config,
            "--model.init_args.output_dir", str(workdir / "out"), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_FIRST_WORK"):
            total, after_imports, after_imports_cpu = map(float, line.split()[1:])
            return (total, _cpu() - cpu), (after_imports, after_imports_cpu)
    raise RuntimeError(f"no first batch reached (exit {out.returncode}): {out.stderr[-2000:]}")


def _line(name: str, values: list[tuple[float, float]], extra: str = "") -> str:
    wall, cpu = [v[0] for v in values], [v[1] for v in values]
    return (f"{name:<44} wall median {statistics.median(wall):6.2f} s (min {min(wall):.2f}, max {max(wall):.2f}); "
            f"CPU median {statistics.median(cpu):6.2f} s{extra}")


def main() -> None:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="configs/quickstart/predict_dropout.yaml")
    parser.add_argument("--root", action="append", default=[], help="another checkout to measure (repeatable)")
    args = parser.parse_args()
    roots = [ROOT] + [Path(r).resolve() for r in args.root]
    latentlit = [sys.executable, "-m", "latentlit.cli"]
    names = ["import latentlit.cli", "latentlit --help", "latentlit predict --help", "latentlit predict --n_sample 8",
             "predict: command to first batch", "predict: imports done to first batch"]
    rows = {(root, name): [] for root in roots for name in names}
    lines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for root in roots:
                rows[root, names[0]].append(time_command([sys.executable, "-c", "import latentlit.cli"], root)[0])
                for name, extra in ((names[1], ["--help"]), (names[2], ["predict", "--help"])):
                    took, out = time_command(latentlit + extra, root)
                    rows[root, name].append(took)
                    lines[root, name] = len(out.splitlines())
                took, _ = time_command(latentlit + ["predict", "--config", args.config, "--n_sample", "8"], root, status=2)
                rows[root, names[3]].append(took)
                total, own = time_first_work(args.config, Path(tmp) / f"{i}-{roots.index(root)}", root)
                rows[root, names[4]].append(total)
                rows[root, names[5]].append(own)
    print(f"predict runs {args.config}")
    for root in roots:
        print(f"== {root}")
        for name in names:
            print(_line(name, rows[root, name], f"  {lines[root, name]} lines" if (root, name) in lines else ""))


if __name__ == "__main__":
    run(main)
