"""The compression report: one Markdown table and one figure with a row / point per stage (teacher,
student, each pruning step after recovery, int8 variants, exported files), plus a table of the
pruning steps (what each removed, and validation accuracy before, just after and after recovery)."""
from __future__ import annotations

from pathlib import Path

from curridistill.evaluate.measure import ROUNDS
from curridistill.io import atomic_write, write_text

COLUMNS = ("stage", "runtime", "accuracy", "params", "MFLOPs", "size KB", "latency ms", "speed-up", "size ratio")


def _row_cells(row: dict, base: dict | None) -> list[str]:
    speed = base["latency_ms"] / row["latency_ms"] if base and row.get("latency_ms") else None
    size = base["size_bytes"] / row["size_bytes"] if base and row.get("size_bytes") else None
    return [row["stage"], row["runtime"], f"{row['accuracy']:.4f}", f"{row['params']:,}",
            f"{row['flops'] / 1e6:.3g}" if row.get("flops") is not None else "-", f"{row['size_bytes'] / 1024:.1f}",
            f"{row['latency_ms']:.3f}", f"{speed:.2f}x" if speed else "-", f"{size:.2f}x" if size else "-"]


def stages_table(rows: list[dict]) -> str:
    """A Markdown row per stage; speed-up and size ratio are against the distilled student (before pruning)."""
    base = next((r for r in rows if r["stage"].startswith("student")), rows[0] if rows else None)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_row_cells(r, base)) + " |" for r in rows])


def steps_table(steps: list[dict]) -> str:
    """A Markdown row per pruning step: channels removed, weights gone (sparsity), costs, validation accuracy."""
    lines = ["| lesson | kind | importance | target | removed | sparsity | params | MFLOPs | latency ms | val before | "
             "val pruned | val BN re-estimated | val recovered | recovery teacher |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in steps:
        rec = s.get("recovered", {}).get("val_accuracy")
        raw = s["pruned"].get("val_accuracy_raw")  # present when BatchNorm statistics were re-estimated
        pruned, recal = (s["pruned"]["val_accuracy"], None) if raw is None else (raw, s["pruned"]["val_accuracy"])
        sparsity = f"{s['sparsity']:.3f}" if "sparsity" in s else "-"
        # the ship stage's interleaved timings when it ran, else those taken one at a time during training
        latency = s.get("latency_interleaved_ms") or (s["before"]["latency_ms"], s["pruned"]["latency_ms"])
        lines.append(f"| {s['lesson']} | {s['kind']} | {s['importance']} | {s['target']:.2f} | {s['achieved']:.3f} | {sparsity} | "
                     f"{s['before']['params']:,} -> {s['pruned']['params']:,} | "
                     f"{s['before']['flops'] / 1e6:.3g} -> {s['pruned']['flops'] / 1e6:.3g} | "
                     f"{latency[0]:.3f} -> {latency[1]:.3f} | "
                     f"{s['before']['val_accuracy']:.4f} | {pruned:.4f} | {'-' if recal is None else f'{recal:.4f}'} | "
                     f"{'-' if rec is None else f'{rec:.4f}'} | {s['recovery_teacher']} |")
    return "\n".join(lines)


def markdown(rows: list[dict], steps: list[dict], notes: list[str] = ()) -> str:
    """compression.md: the stages table, the pruning-steps table and the notes."""
    lines = ["# Compression report", "",
             "Accuracy on the test split; latency: median batch-1 forward on this CPU (the stages timed in turn, "
             f"median of {ROUNDS} rounds); size: serialized weights "
             "(state_dict for PyTorch, the file for exports); ratios against the distilled student.", "",
             stages_table(rows)]
    if steps:
        lines += ["", "## Pruning steps", "",
                  "Validation accuracy before the step, just after pruning, after re-estimating BatchNorm statistics "
                  "on a few training batches (prune.recalibrate_bn), and after its distillation recovery; latency "
                  "before -> after the cut from the stage timings above (a model's latency depends on its widths, "
                  "not its weights, so the just-pruned model times as its recovered row).", "",
                  steps_table(steps)]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: str | Path) -> Path:
    """Accuracy against latency (left) and against size (right): a numbered point per stage, the legend
    below names them (circles: PyTorch fp32, squares: int8 or another runtime)."""
    import matplotlib

    matplotlib.use("Agg")  # headless; loaded here so that importing the API does not pay for matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2 + 0.18 * ((len(rows) + 2) // 3)))
    for ax, key, label, scale in ((axes[0], "latency_ms", "batch-1 CPU latency (ms, log)", 1.0),
                                  (axes[1], "size_bytes", "size (KB, log)", 1 / 1024)):
        for i, r in enumerate(rows):
            x = r[key] * scale
            ax.scatter([x], [r["accuracy"]], color=f"C{i % 10}", s=40, zorder=3,
                       marker="o" if r["runtime"] == "pytorch" else "s", label=f"{i + 1}  {r['stage']} ({r['runtime']})")
            ax.annotate(str(i + 1), (x, r["accuracy"]), fontsize=8, xytext=(5, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_title("accuracy vs latency", fontsize=9)
    axes[1].set_title("accuracy vs size", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07 + 0.045 * ((len(rows) + 2) // 3), 1, 1))
    try:
        return atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def write(out_dir: str | Path, rows: list[dict], steps: list[dict], notes: list[str] = ()) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"markdown": write_text(out_dir / "compression.md", markdown(rows, steps, notes)),
            "plot": plot(rows, out_dir / "compression.png")}
