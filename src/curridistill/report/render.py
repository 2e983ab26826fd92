"""Turn a run directory into plots, a Markdown report and a self-contained HTML report.

``write_report(run_dir)`` reads ``report.json`` (required), ``metrics.jsonl`` and ``aggregate.json`` (optional),
draws the figures into ``run_dir/plots/`` and writes ``report.md`` (linking the PNGs) and ``report.html`` (PNGs
embedded as base64 data URIs, inline CSS: one file you can mail or open offline).
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curridistill.errors import UserError
from curridistill.evaluate.evaluation import read_report
from curridistill.evaluate.stats import format_p
from curridistill.io import write_text
from curridistill.multirun import read_aggregate
from curridistill.report import plots
from curridistill.train.metrics_log import read_metrics

# (key, label) of the scalar metrics shown in the main table, in display order
SCALAR_METRICS = (
    ("accuracy", "accuracy"), ("top5", "top-5 accuracy"), ("f1_macro", "F1 (macro)"), ("f1_weighted", "F1 (weighted)"),
    ("loss", "test loss"), ("params", "parameters"), ("flops", "FLOPs"), ("weights_bytes", "weights (bytes)"),
    ("latency_ms", "latency (ms, batch 1)"), ("throughput", "throughput (samples/s)"), ("train_seconds", "train time (s)"),
    ("agreement", "agreement with teacher"), ("kl_teacher_student", "KL(teacher ‖ model)"), ("entropy", "entropy"),
    ("mutual_information", "mutual information"), ("selected", "selected epoch"),
)
# metrics summarised across seeds in the report (aggregate.json holds them all)
AGGREGATE_METRICS = ("accuracy", "f1_macro", "loss", "agreement", "latency_ms", "train_seconds")
_INT_KEYS = {"params", "flops", "weights_bytes", "selected"}


# ------------------------------------------------------------------------------------------- document model
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    title: str
    path: Path


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (paragraph) | list[str] (bullets) | Table | Image


# ------------------------------------------------------------------------------------------------ formatting
def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (key in _INT_KEYS and isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"
    return str(value)


def _label(key: str) -> str:
    return key.replace("_", " ")


# -------------------------------------------------------------------------------------------------- reading
def _seed_values(aggregate: dict) -> dict[str, list[float]]:
    per_seed = aggregate.get("per_seed")
    if isinstance(per_seed, dict):
        return {str(k): list(v) for k, v in per_seed.items() if isinstance(v, list)}
    return {}


# ------------------------------------------------------------------------------------------------- sections
def _overview(run_dir: Path, report: dict, metrics: list[dict]) -> Section:
    items = [f"run directory: `{run_dir}`"]
    if report.get("selection"):
        note = report.get("selection_note")
        items.append(f"checkpoint selection: {report['selection']}" + (f" ({note})" if note else ""))
    data = report.get("data")
    if isinstance(data, dict) and data:
        items.append("data: " + ", ".join(f"{k}={_fmt(v)}" for k, v in data.items() if not isinstance(v, (dict, list))))
    for key in ("seed", "device"):
        if report.get(key) is not None:
            items.append(f"{key}: {report[key]}")
    if isinstance(report.get("classes"), list):
        items.append(f"classes: {len(report['classes'])}")
    if metrics:
        models = plots._ordered(str(r.get("model", "?")) for r in metrics)
        items.append(f"training log: {len(metrics)} epoch records ({', '.join(models)})")
    else:
        items.append("training log: no metrics.jsonl records (models loaded, or training not logged)")
    return Section("Run", [items])


def _fmt_selected(value: Any) -> str:
    """report.json's ``selected``: ``{lesson, epoch, val_accuracy}`` (0-based, as in metrics.jsonl) or an epoch."""
    if isinstance(value, dict):
        parts = [f"epoch {value['epoch']}" if "epoch" in value else None,
                 f"lesson {value['lesson']}" if "lesson" in value else None]
        text = ", ".join(p for p in parts if p) or "–"
        extra = [f"{_label(k)} {_fmt(v)}" for k, v in value.items() if k not in ("epoch", "lesson")]
        return text + (f" ({', '.join(extra)})" if extra else "")
    return _fmt(value, "selected")


def num_classes(entries: list[tuple[str, dict]], classes: list[str]) -> int | None:
    """The class count: report.json's classes, else the side of a confusion matrix."""
    if classes:
        return len(classes)
    sides = [len(m["confusion"]) for _, m in entries if isinstance(m.get("confusion"), list) and m["confusion"]]
    return max(sides) if sides else None


def _metrics_section(entries: list[tuple[str, dict]], classes: list[str] | None = None) -> Section:
    names = [n for n, _ in entries]
    k = num_classes(entries, list(classes or []))
    rows = []
    for key, label in SCALAR_METRICS:
        if key == "top5" and k is not None and k <= 5:
            continue  # with 5 classes or fewer every label is in the top 5: always 1.0, meaningless
        if key == "selected" and any(isinstance(m.get(key), dict) for _, m in entries):
            rows.append([label] + [_fmt_selected(m.get(key)) for _, m in entries])
        elif any(key in m for _, m in entries):
            rows.append([label] + [_fmt(m.get(key), key) for _, m in entries])
    extra = []  # other scalar metrics the trainer may add later
    known = {k for k, _ in SCALAR_METRICS}
    for _, m in entries:
        for k, v in m.items():
            if k not in known and k not in extra and isinstance(v, (int, float)) and not isinstance(v, bool):
                extra.append(k)
    for k in extra:
        rows.append([_label(k)] + [_fmt(m.get(k), k) for _, m in entries])
    reused = [f"{n}: reused from `{m['reused_from']}`" for n, m in entries if m.get("reused_from")]
    blocks: list[Any] = [Table(["metric"] + names, rows)]
    if reused:
        blocks.append(reused)
    return Section("Test metrics", blocks)


def _per_class_section(entries: list[tuple[str, dict]], classes: list[str]) -> Section | None:
    with_f1 = [(n, m) for n, m in entries if isinstance(m.get("f1"), list)]
    if not with_f1:
        return None
    k = max(len(m["f1"]) for _, m in with_f1)
    labels = [str(c) for c in classes] if len(classes) == k else [str(i) for i in range(k)]
    headers = ["class"]
    for n, _ in with_f1:
        headers += [f"{n} precision", f"{n} recall", f"{n} F1"]
    rows = []
    for i, c in enumerate(labels):
        row = [c]
        for _, m in with_f1:
            for key in ("precision", "recall", "f1"):
                vals = m.get(key)
                row.append(_fmt(vals[i]) if isinstance(vals, list) and i < len(vals) else "–")
        rows.append(row)
    return Section("Per-class precision, recall and F1", [Table(headers, rows)])


def _comparison_section(report: dict) -> Section:
    comp = report.get("comparison")
    if not isinstance(comp, dict) or not comp:
        return Section("Comparison", ["no comparison in report.json (needs a teacher or a baseline)"])
    rows = [[_label(k), f"{v:+.4f}" if "minus" in k and isinstance(v, float) else _fmt(v)]
            for k, v in comp.items() if not isinstance(v, (dict, list))]
    blocks: list[Any] = [Table(["comparison", "value"], rows)]
    if "student_minus_baseline_accuracy" in comp:
        blocks.append("A positive student-minus-baseline accuracy is the distillation gain on this seed; "
                      "one seed is not evidence: aggregate several seeds to get a confidence interval and a p-value.")
    return Section("Comparison", blocks)


def _aggregate_section(aggregate: dict) -> Section:
    models = aggregate.get("models")
    if not isinstance(models, list):
        models = [k for k, v in aggregate.items() if isinstance(v, dict) and isinstance(v.get("accuracy"), dict)]
    blocks: list[Any] = []
    n_runs = aggregate.get("n_runs")
    if n_runs is not None:
        blocks.append(f"{n_runs} runs (seeds: {', '.join(str(s) for s in aggregate.get('seeds') or []) or 'unknown'}). "
                      "Intervals are Student-t on the mean; p-values are two-sided Welch t-tests.")
    rows = []
    for name in models:
        summ = aggregate.get(name)
        if not isinstance(summ, dict):
            continue
        for key in AGGREGATE_METRICS:
            s = summ.get(key)
            if not isinstance(s, dict):
                continue
            conf = s.get("confidence", 0.95)
            ci = "–" if s.get("ci_low") is None else f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] ({conf:.0%})"
            rows.append([name, key, str(s.get("n", "–")), _fmt(s.get("mean")), _fmt(s.get("std")), ci,
                         f"{_fmt(s.get('min'))} – {_fmt(s.get('max'))}"])
    if rows:
        blocks.append(Table(["model", "metric", "n", "mean", "std", "confidence interval", "range"], rows))
    comps = aggregate.get("comparisons")
    if isinstance(comps, dict) and comps:
        crow = []
        for key, c in comps.items():
            if not isinstance(c, dict):
                continue
            a, b = c.get("a", key), c.get("b", "")
            diff = c.get("mean_diff")
            crow.append([f"{a} − {b}", c.get("metric", "accuracy"), "–" if diff is None else f"{diff:+.4f}",
                         _fmt(c.get("t")), _fmt(c.get("df")), format_p(c.get("p_value"), missing="– (needs ≥ 2 runs per model)")])
        blocks.append(Table(["comparison", "metric", "mean difference", "t", "df (Welch)", "p-value"], crow))
    if not blocks:
        blocks.append("aggregate.json has no summaries")
    return Section("Across seeds", blocks)


# ------------------------------------------------------------------------------------------------ renderers
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, sections: list[Section], run_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if isinstance(block, str):
                lines += [block, ""]
            elif isinstance(block, list):
                lines += [f"- {item}" for item in block] + [""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(block.headers))) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif isinstance(block, Image):
                rel = block.path.relative_to(run_dir).as_posix()
                lines += [f"### {block.title}", "", f"![{block.title}]({rel})", "", f"[{rel}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f4f6f8}tr:nth-child(even) td{background:#fafafa}
code{background:#f2f2f2;padding:0 .25em;border-radius:3px}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
""".strip()


def _inline(text: str) -> str:
    """Escape for HTML, turning `code` spans into <code>."""
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _to_html(title: str, sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if isinstance(block, str):
                out.append(f"<p>{_inline(block)}</p>")
            elif isinstance(block, list):
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block) + "</ul>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                               for row in block.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(block.title)} ({html.escape(block.path.name)})</figcaption>"
                           "</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------- entry
def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Plots into ``run_dir/plots/``, then ``report.md`` and a self-contained ``report.html``.

    Returns ``{name: path}`` of every file written (``report.md``, ``report.html`` and one entry per plot).
    """
    run_dir = Path(run_dir)
    report_path, metrics_dir = run_dir / "report.json", run_dir
    if not report_path.is_file() and (run_dir / "aggregate.json").is_file():
        # a multi-seed / cross-validation parent: curves and models of its first child, spread of all
        children = sorted(p.parent for p in run_dir.glob("*/report.json"))
        if children:
            report_path, metrics_dir = children[0] / "report.json", children[0]
    if not report_path.is_file():
        raise UserError(f"no report.json in {run_dir}; is this a run directory? run `curridistill run CONFIG` first")
    # everything read is checked first: a malformed file is one line naming it, and nothing is drawn or written
    report = read_report(report_path, f"restore it, or delete it and run `curridistill run --resume "
                                      f"{report_path.parent}` (the trained models are evaluated again)")
    metrics = read_metrics(metrics_dir / "metrics.jsonl")
    aggregate = (read_aggregate(run_dir / "aggregate.json", f"delete it; `curridistill run --resume {run_dir}` writes "
                                                            f"it again from the runs' reports")
                 if (run_dir / "aggregate.json").is_file() else None)

    plot_dir = run_dir / "plots"
    entries = plots.model_entries(report)
    classes = [str(c) for c in report.get("classes") or []]
    written: dict[str, Path] = {}
    images: dict[str, list[Image]] = {"training": [], "models": [], "seeds": []}

    if metrics:
        written["curves"] = plots.plot_curves(metrics, plot_dir / "curves.png")
        images["training"].append(Image("Cross-entropy (training, validation) and validation accuracy", written["curves"]))
        written["schedules"] = plots.plot_schedules(metrics, plot_dir / "schedules.png")
        images["training"].append(Image("Schedules used per epoch", written["schedules"]))
    if entries:
        written["pareto"] = plots.plot_pareto(report, plot_dir / "pareto.png")
        images["models"].append(Image("Accuracy vs size and latency", written["pareto"]))
    matrices = [(name, m["confusion"]) for name, m in entries if isinstance(m.get("confusion"), list) and m["confusion"]]
    if matrices:  # one figure, side by side: one per model stacked up mostly white space
        written["confusion"] = plots.plot_confusions(matrices, classes, plot_dir / "confusion.png")
        images["models"].append(Image("Confusion matrices (test split)", written["confusion"]))
    seed_values = _seed_values(aggregate) if aggregate else {}
    if seed_values:
        written["seed_spread"] = plots.plot_seed_spread(seed_values, plot_dir / "seed_spread.png")
        images["seeds"].append(Image("Accuracy across seeds", written["seed_spread"]))

    sections = [_overview(run_dir, report, metrics)]
    if entries:
        sections.append(_metrics_section(entries, classes))
    else:
        sections.append(Section("Test metrics", ["report.json holds no model metrics"]))
    sections.append(_comparison_section(report))
    per_class = _per_class_section(entries, classes)
    if per_class:
        sections.append(per_class)
    if aggregate:
        sec = _aggregate_section(aggregate)
        sec.blocks += images["seeds"]
        sections.append(sec)
    if images["training"]:
        sections.append(Section("Training", images["training"]))
    if images["models"]:
        sections.append(Section("Models", images["models"]))

    title = f"curridistill report: {run_dir.resolve().name}"
    written["report.md"] = write_text(run_dir / "report.md", _to_markdown(title, sections, run_dir))
    written["report.html"] = write_text(run_dir / "report.html", _to_html(title, sections))
    return written
