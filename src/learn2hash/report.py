"""Plots and HTML reports of run folders (matplotlib's Agg canvas only: headless, no pyplot state).

:func:`report_run` writes, into ``RUN/report/``:

- ``pr_curve.png`` — precision against recall, one point per Hamming radius 0..K (metrics.json);
- ``precision_at_n.png`` — precision of the first N returned items against N, for N from 1 to
  1,000 (:func:`precision_at_n_grid`), evaluated exactly with the run's tie policy;
- ``center_heatmap.png`` — Hamming distances between each class's center and database codes
  sampled per class and grouped by class (as in the CSQ paper's Fig. 8). Centers are the hasher's
  hash centers (``centers_``) when it has them, else the class means of the database codes (the
  sign of the mean ±1 code of the items carrying that class; a zero mean gives bit 1);
- ``retrievals.png`` — sample queries with their top-10 database items by Hamming distance (ties
  by database position, as :class:`~learn2hash.HammingIndex` breaks them), framed green when the
  item shares a label with the query and red when not; feature items are shown by their labels;
- ``training_curve.png`` — the per-epoch values logged in ``history.json`` (deep methods only);
- ``report.html`` — the run's configuration, its metrics table and the plots above that exist.

:func:`compare_runs` overlays the curves of several runs and adds P@H<=2 and mAP against the code
length. Every figure has a fixed pixel size (:data:`PLOT_SIZES`, :func:`retrieval_grid_size`).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from learn2hash.codes import Codes, hamming_distances
from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import HasCenters
from learn2hash.search import item_image  # noqa: F401  (its home; kept importable from here)

DPI = 100
#: pixel size (width, height) of each fixed-size figure
PLOT_SIZES: dict[str, tuple[int, int]] = {
    "pr_curve": (640, 480),
    "precision_at_n": (640, 480),
    "center_heatmap": (960, 480),
    "training_curve": (640, 480),
    "compare_pr_curve": (640, 480),
    "compare_precision_at_n": (640, 480),
    "compare_vs_bits": (960, 420),
}
#: retrieval grid: pixels per cell, and the extra width of the query column gap
GRID_CELL = 100
GRID_TITLE = 40
RELEVANT_COLOR = "#1a9641"
IRRELEVANT_COLOR = "#d7191c"


def retrieval_grid_size(n_queries: int, topn: int = 10) -> tuple[int, int]:
    """Pixel size (width, height) of ``retrievals.png`` for ``n_queries`` rows of ``topn`` results."""
    return GRID_CELL * (topn + 1) + GRID_CELL // 4, GRID_CELL * n_queries + GRID_TITLE


# --------------------------------------------------------------------------- figure plumbing
def _figure(size_px: tuple[int, int]):
    from matplotlib.figure import Figure

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)


def _save(fig, path: Path) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` (PNG, exactly the figure's pixel size), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from learn2hash._atomic import atomic_open

    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    os.chmod(path, 0o644)
    return path


# --------------------------------------------------------------------------- metric curves
def pr_points(metrics: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) arrays per Hamming radius from a metrics mapping (``pr_curve``)."""
    curve = metrics.get("pr_curve")
    if not isinstance(curve, dict) or "precision" not in curve or "recall" not in curve:
        raise Learn2HashError("metrics have no pr_curve with precision and recall; evaluate the run again")
    return np.asarray(curve["recall"], dtype=float), np.asarray(curve["precision"], dtype=float)


def precision_at_n_grid(n_database: int) -> list[int]:
    """The N of the P@N curve: 1, 5, 10, 20, 50, then 100..1000 in steps of 100, up to the database size."""
    grid = [1, 5, 10, 20, 50] + list(range(100, 1001, 100))
    return [n for n in grid if n <= n_database] or [n_database]


def precision_at_n_points(run, ties: str = "expected") -> tuple[np.ndarray, np.ndarray]:
    """(N, precision@N) over :func:`precision_at_n_grid`, evaluated exactly from the run's codes."""
    from learn2hash.metrics import evaluate

    ds = run.dataset()
    db = run.codes("database")
    grid = precision_at_n_grid(len(db))
    result = evaluate(run.codes("query"), ds.query.labels, db, ds.database.labels, ties=ties, precision_at=grid)
    pan = result["precision_at_n"]
    return np.array(sorted(pan), dtype=float), np.array([pan[n] for n in sorted(pan)], dtype=float)


def _run_label(run, others: Sequence[Any] = ()) -> str:
    label = f"{run.method} {run.bits} bits"
    if sum(1 for o in others if f"{o.method} {o.bits} bits" == label) > 1:
        label += f" ({run.folder.name})"
    return label


def run_styles(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Line styles for overlaid runs: one colour per method, one dash pattern per code length."""
    from matplotlib import colormaps

    methods = list(dict.fromkeys(r.method for r in runs))
    bits = sorted({r.bits for r in runs})
    dashes = ["-", "--", ":", "-."]
    colors = colormaps["tab10"]
    return [{"color": colors(methods.index(r.method) % 10), "linestyle": dashes[bits.index(r.bits) % len(dashes)]}
            for r in runs]


def _curves(lines: Sequence[tuple[str, Any, Any]], path: Path, size_key: str, styles: Sequence[dict[str, Any]] | None,
            xlabel: str, ylabel: str, title: str, xlim: tuple[float, float] | None = None) -> Path:
    """One figure of ``(label, x, y)`` curves, precision on the y axis (0 to 1), into ``path``."""
    fig = _figure(PLOT_SIZES[size_key])
    ax = fig.add_subplot(1, 1, 1)
    for j, (label, x, y) in enumerate(lines):
        ax.plot(x, y, marker=".", markersize=4, linewidth=1.5, label=label, **(styles[j] if styles else {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_pr_curves(curves: Sequence[tuple[str, dict[str, Any]]], path: Path, size_key: str,
                   styles: Sequence[dict[str, Any]] | None = None) -> Path:
    """Precision–recall curves (one per (label, metrics)) into ``path``."""
    lines = [(label, *pr_points(metrics)) for label, metrics in curves]
    return _curves(lines, path, size_key, styles, "recall", "precision",
                   "Precision–recall (one point per Hamming radius)", xlim=(0, 1.02))


def plot_precision_at_n(curves: Sequence[tuple[str, tuple[np.ndarray, np.ndarray]]], path: Path,
                        size_key: str, styles: Sequence[dict[str, Any]] | None = None) -> Path:
    """Precision of the first N returned items against N (one curve per (label, (N, precision)))."""
    return _curves([(label, n, p) for label, (n, p) in curves], path, size_key, styles,
                   "number of returned items N", "precision@N", "Precision of the top N")


# --------------------------------------------------------------------------- centers vs codes
def class_centers(run) -> tuple[Codes, str]:
    """Per-class reference codes: the hasher's hash centers when it has them
    (:class:`~learn2hash.methods.base.HasCenters`), else the sign of the class means of database codes.

    Returns ``(Codes [c, K], source)`` with ``source`` ``"hash centers"`` or ``"class means"``.
    """
    hasher = run.hasher()
    n_classes = run.dataset().database.n_classes
    if isinstance(hasher, HasCenters):
        codes = hasher.centers_.codes
        if len(codes) == n_classes and codes.bits == run.bits:
            return codes, "hash centers"
    signs = run.codes("database").to_signs(np.float64)
    labels = run.dataset().database.labels
    means = np.zeros((n_classes, run.bits))
    for k in range(n_classes):
        members = labels[:, k]
        if members.any():
            means[k] = signs[members].mean(axis=0)
    return Codes.from_signs(means), "class means"


def center_code_distances(run, per_class: int = 40, seed: int = 0) -> dict[str, Any]:
    """Hamming distances between each class center and database codes sampled per class.

    Up to ``per_class`` database items are drawn (seeded) from each class; an item is grouped under
    its first label. Returns ``distances int32[c, m]``, ``column_class int[m]`` (the group of each
    column, non-decreasing), ``column_ids`` (database positions), ``centers`` and ``source``.
    """
    centers, source = class_centers(run)
    labels = run.dataset().database.labels
    first = np.where(labels.any(axis=1), labels.argmax(axis=1), -1)
    rng = np.random.default_rng(seed)
    ids, groups = [], []
    for k in range(labels.shape[1]):
        members = np.flatnonzero(first == k)
        if members.size == 0:
            continue
        take = np.sort(rng.choice(members, size=min(per_class, members.size), replace=False))
        ids.append(take)
        groups.append(np.full(take.size, k))
    column_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    column_class = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    codes = run.codes("database")[column_ids]
    return {"distances": hamming_distances(centers, codes), "column_class": column_class,
            "column_ids": column_ids, "centers": centers, "source": source}


def plot_center_heatmap(run, path: Path, per_class: int = 40, seed: int = 0) -> Path:
    """Heat map of :func:`center_code_distances` (rows: class centers; columns: codes grouped by class)."""
    data = center_code_distances(run, per_class=per_class, seed=seed)
    names = _class_names(run)
    fig = _figure(PLOT_SIZES["center_heatmap"])
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data["distances"], aspect="auto", cmap="viridis_r", vmin=0, vmax=run.bits,
                   interpolation="nearest")
    cc = data["column_class"]
    bounds = np.flatnonzero(np.diff(cc)) + 0.5
    for b in bounds:
        ax.axvline(b, color="white", linewidth=0.8)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(cc)) + 1])
    ends = np.concatenate([starts[1:], [cc.size]])
    ax.set_xticks((starts + ends - 1) / 2.0)
    ax.set_xticklabels([names[k] for k in cc[starts]], rotation=30, ha="right", fontsize=7)
    ax.set_yticks(np.arange(data["distances"].shape[0]))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("database codes, grouped by class")
    ax.set_ylabel("hash centers" if data["source"] == "hash centers" else "class mean codes")
    ax.set_title(f"Hamming distance between {data['source']} and codes ({run.bits} bits)")
    fig.colorbar(im, ax=ax, label="Hamming distance")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- retrieved items
def top_results(run, query_ids: Sequence[int], topn: int = 10) -> dict[str, np.ndarray]:
    """The ``topn`` nearest database items of the given query items by Hamming distance, found by
    :func:`learn2hash.search.search` over an index of the database codes built in memory (the ids are
    database positions).

    Ties are broken as the index breaks them: by database position. Returns ``ids int64[q, topn]``,
    ``distances int64[q, topn]`` and ``relevant bool[q, topn]`` (shares a label with the query).
    """
    from learn2hash.search import search

    found = search(run, topn, positions=query_ids, index="memory")
    return {"ids": np.array([h.ids for h in found], dtype=np.int64).reshape(len(found), -1),
            "distances": np.array([h.distances for h in found], dtype=np.int64).reshape(len(found), -1),
            "relevant": np.array([h.relevant for h in found], dtype=bool).reshape(len(found), -1)}


def sample_queries(run, n: int, seed: int = 0) -> np.ndarray:
    """``n`` query positions (seeded), one from each class in turn where classes allow."""
    labels = run.dataset().query.labels
    rng = np.random.default_rng(seed)
    first = np.where(labels.any(axis=1), labels.argmax(axis=1), -1)
    classes = rng.permutation(np.unique(first))
    picks: list[int] = []
    pools = {c: list(rng.permutation(np.flatnonzero(first == c))) for c in classes}
    while len(picks) < min(n, labels.shape[0]):
        for c in classes:
            if pools[c] and len(picks) < n:
                picks.append(int(pools[c].pop()))
    return np.array(picks, dtype=np.int64)


def _class_names(run) -> list[str]:
    ds = run.dataset()
    names = getattr(ds, "class_names", None)
    return list(names) if names else [str(i) for i in range(ds.database.n_classes)]


def _label_text(labels_row: np.ndarray, names: Sequence[str]) -> str:
    return ", ".join(names[i] for i in np.flatnonzero(labels_row)) or "(no label)"


def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def _thumbnail(img: np.ndarray, box: int) -> np.ndarray:
    """``img`` scaled to fit a ``box`` x ``box`` square (nearest when enlarging), as RGB ``uint8``."""
    from PIL import Image, ImageOps

    pil = Image.fromarray(img).convert("RGB")
    method = Image.Resampling.NEAREST if max(pil.size) <= box else Image.Resampling.LANCZOS
    return np.asarray(ImageOps.contain(pil, (box, box), method=method))


def plot_retrievals(run, path: Path, n_queries: int = 6, topn: int = 10, seed: int = 0) -> Path:
    """Grid: one row per sample query, the query then its ``topn`` results framed green (relevant) or red.

    The grid is composed pixel by pixel (one cell of :data:`GRID_CELL` pixels per item) and drawn
    with ``figimage``, so items are never resampled by matplotlib.
    """
    ds = run.dataset()
    names = _class_names(run)
    qids = sample_queries(run, n_queries, seed)
    res = top_results(run, qids, topn)
    topn = res["ids"].shape[1]
    w, h = retrieval_grid_size(len(qids), topn)
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    fig = _figure((w, h))
    fig.text(0.5, 1 - 14 / h, f"Top {topn} by Hamming distance — {run.method}, {run.bits} bits, "
             f"{run.config.get('dataset')} (green: shares a label with the query, red: does not)",
             ha="center", va="center", fontsize=9)
    border, caption = 3, 16
    box = GRID_CELL - caption - 2 * border - 8
    for row, q in enumerate(qids):
        top = GRID_TITLE + GRID_CELL * row
        cells = [(0, ds.query.x[q], ds.query.labels[q], f"query {q}: {_label_text(ds.query.labels[q], names)}",
                  "#333333")]
        for col in range(topn):
            i = int(res["ids"][row, col])
            color = RELEVANT_COLOR if res["relevant"][row, col] else IRRELEVANT_COLOR
            cells.append((GRID_CELL // 4 + GRID_CELL * (col + 1), ds.database.x[i], ds.database.labels[i],
                          f"d={int(res['distances'][row, col])}", color))
        for left, x, labels_row, text, color in cells:
            x0, y0 = left + (GRID_CELL - box) // 2 - border, top + caption
            canvas[y0:y0 + box + 2 * border, x0:x0 + box + 2 * border] = _hex_rgb(color)
            canvas[y0 + border:y0 + border + box, x0 + border:x0 + border + box] = 244
            img = item_image(x)
            if img is not None:
                thumb = _thumbnail(img, box)
                ty, tx = y0 + border + (box - thumb.shape[0]) // 2, x0 + border + (box - thumb.shape[1]) // 2
                canvas[ty:ty + thumb.shape[0], tx:tx + thumb.shape[1]] = thumb
            else:
                fig.text((left + GRID_CELL / 2) / w, 1 - (y0 + border + box / 2) / h,
                         _label_text(labels_row, names).replace(", ", "\n"), ha="center", va="center", fontsize=7)
            fig.text((left + GRID_CELL / 2) / w, 1 - (top + caption / 2 + 1) / h, text, ha="center", va="center",
                     fontsize=6.5 if left else 6, clip_on=True)
    fig.figimage(canvas, xo=0, yo=0, origin="upper", zorder=0)
    return _save(fig, path)


# --------------------------------------------------------------------------- training curve
def plot_training_curve(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Every numeric per-epoch value of ``history`` (except epoch numbers and timings) against the epoch.

    Loss terms share the left axis; learning rates (keys ``lr``/``lr_*``) get their own axis on the right.
    """
    if not history:
        raise Learn2HashError("history is empty: nothing to plot")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = [k for k in dict.fromkeys(k for h in history for k in h)
            if k != "epoch" and "second" not in k and "time" not in k
            and all(isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) for h in history)]
    if not keys:
        raise Learn2HashError("history holds no numeric per-epoch values to plot")
    rates = [k for k in keys if k == "lr" or k.startswith("lr_")]
    values = [k for k in keys if k not in rates]
    fig = _figure(PLOT_SIZES["training_curve"])
    ax = fig.add_subplot(1, 1, 1)
    lines = []
    for k in values:
        lines += ax.plot(epochs, [float(h[k]) for h in history], marker=".", label=k)
    if rates:
        ax2 = ax.twinx() if values else ax
        for k in rates:
            lines += ax2.plot(epochs, [float(h[k]) for h in history], linestyle="--", color="0.45", label=k)
        ax2.set_ylabel("learning rate")
    ax.set_xlabel("epoch")
    if values:
        ax.set_ylabel("loss")
    ax.set_title("Training curve")
    ax.grid(True, alpha=0.3)
    ax.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f0f0f0}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, sections: Sequence[str], plots: Sequence[tuple[str, str]], folder: Path) -> Path:
    figs = "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                   for name, caption in plots if (folder / name).is_file())
    doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}{figs}</body></html>\n")
    from learn2hash._atomic import atomic_open

    path = folder / "report.html"
    with atomic_open(path, "wb") as fh:
        fh.write(doc.encode("utf-8"))
    os.chmod(path, 0o644)
    return path


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline numbers of a metrics mapping as (metric, value) rows."""
    from learn2hash.metrics import metric_name

    topk = metrics.get("topk")
    keys = ([f"map@{topk}"] if topk else []) + [
        "map@all", "precision_at_radius2", "recall_at_radius2", "n_query", "n_database", "ties", "train_seconds",
        "encode_seconds", "evaluate_seconds", "epochs"]
    return [{"metric": metric_name(key), "value": metrics[key]} for key in keys if metrics.get(key) is not None]


# --------------------------------------------------------------------------- entry points
def _open(run_or_dir):
    from learn2hash.runs import Run

    return run_or_dir if isinstance(run_or_dir, Run) else Run.open(run_or_dir)


def _metrics_of(run) -> dict[str, Any]:
    if (run.folder / "metrics.json").exists():
        return run.metrics()
    return run.evaluate()


def report_run(run_or_dir, out: str | os.PathLike | None = None, n_queries: int = 6, topn: int = 10,
               seed: int = 0) -> dict[str, Path]:
    """Write every plot of one run and ``report.html`` into ``out`` (default ``RUN/report``).

    Returns ``{name: path}`` of the files written (``training_curve`` only when the run has a
    ``history.json``). A run that was never evaluated is evaluated first.
    """
    run = _open(run_or_dir)
    run.require_labels("the report's plots")
    folder = Path(out) if out is not None else run.folder / "report"
    folder.mkdir(parents=True, exist_ok=True)
    metrics = _metrics_of(run)
    label = _run_label(run)
    written = {
        "pr_curve": plot_pr_curves([(label, metrics)], folder / "pr_curve.png", "pr_curve"),
        "precision_at_n": plot_precision_at_n([(label, precision_at_n_points(run, metrics.get("ties", "expected")))],
                                              folder / "precision_at_n.png", "precision_at_n"),
        "center_heatmap": plot_center_heatmap(run, folder / "center_heatmap.png", seed=seed),
        "retrievals": plot_retrievals(run, folder / "retrievals.png", n_queries=n_queries, topn=topn, seed=seed),
    }
    history = run.history()
    if history:
        written["training_curve"] = plot_training_curve(history, folder / "training_curve.png")
    c = run.config
    config_rows = [{"setting": k, "value": v} for k, v in
                   [("method", c.get("method")), ("bits", c.get("bits")), ("dataset", c.get("dataset")),
                    ("protocol", c.get("protocol")), ("seed", c.get("seed")),
                    ("run folder", str(run.folder))]]
    config_rows += [{"setting": k, "value": v} for k, v in (c.get("params") or {}).items()
                    if k not in ("bits", "seed")]
    sections = ["<h2>Metrics</h2>", _table(metric_rows(metrics), ["metric", "value"]),
                "<h2>Configuration</h2>", _table(config_rows, ["setting", "value"]), "<h2>Plots</h2>"]
    plots = [("pr_curve.png", "Precision–recall curve, one point per Hamming radius"),
             ("precision_at_n.png", "Precision of the first N returned items"),
             ("center_heatmap.png", "Hamming distances between class centers and codes grouped by class"),
             ("retrievals.png", f"Top {topn} results of sample queries (green: relevant, red: not)"),
             ("training_curve.png", "Training curve")]
    plots = [(name, cap) for name, cap in plots if name[:-4] in written]
    written["report"] = _page(f"{c.get('method')} · {c.get('bits')} bits · {c.get('dataset')}", sections,
                              plots, folder)
    return written


def plot_vs_bits(entries: Sequence[tuple[Any, dict[str, Any]]], path: Path) -> Path:
    """P@H<=2 and mAP@all against the code length, one line per (method, dataset)."""
    from learn2hash.metrics import metric_name

    fig = _figure(PLOT_SIZES["compare_vs_bits"])
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    datasets = {run.config.get("dataset") for run, _ in entries}
    for run, metrics in entries:
        key = run.method if len(datasets) == 1 else f"{run.method} ({run.config.get('dataset')})"
        groups.setdefault(key, []).append((run.bits, metrics))
    for key, pts in groups.items():
        pts.sort(key=lambda t: t[0])
        bits = [b for b, _ in pts]
        axes[0].plot(bits, [m.get("precision_at_radius2", np.nan) for _, m in pts], marker="o", label=key)
        axes[1].plot(bits, [m.get("map@all", np.nan) for _, m in pts], marker="o", label=key)
    all_bits = sorted({run.bits for run, _ in entries})
    for ax, what in zip(axes, (metric_name("precision_at_radius2"), metric_name("map@all"))):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_bits)
        ax.set_xticklabels([str(b) for b in all_bits])
        ax.minorticks_off()
        ax.set_xlabel("bits")
        ax.set_ylabel(what)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{what} against code length")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def compare_runs(run_dirs: Sequence[Any], out: str | os.PathLike) -> dict[str, Path]:
    """Overlay the PR and P@N curves of several runs, plot P@H<=2 and mAP against bits, write ``report.html``."""
    if len(run_dirs) < 1:
        raise Learn2HashError("compare needs at least one run folder")
    from learn2hash.runs import summary_row

    runs = [_open(d) for d in run_dirs]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = [_metrics_of(r) for r in runs]
    curves = [(_run_label(r, runs), m) for r, m in zip(runs, metrics)]
    styles = run_styles(runs)
    written = {
        "compare_pr_curve": plot_pr_curves(curves, folder / "compare_pr_curve.png", "compare_pr_curve", styles),
        "compare_precision_at_n": plot_precision_at_n(
            [(label, precision_at_n_points(r, m.get("ties", "expected"))) for (label, m), r in zip(curves, runs)],
            folder / "compare_precision_at_n.png", "compare_precision_at_n", styles),
        "compare_vs_bits": plot_vs_bits(list(zip(runs, metrics)), folder / "compare_vs_bits.png"),
    }
    rows = [summary_row(r) for r in runs]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    plots = [("compare_pr_curve.png", "Precision–recall curves"),
             ("compare_precision_at_n.png", "Precision of the first N returned items"),
             ("compare_vs_bits.png", "Precision within Hamming radius 2, and mAP, against code length")]
    written["report"] = _page(f"Comparison of {len(runs)} runs", ["<h2>Runs</h2>", _table(rows, columns)],
                              plots, folder)
    return written
