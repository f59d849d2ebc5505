"""The plan report: ``report.html`` (self-contained, PNGs inlined as base64) and ``report.md``
(PNGs beside it in ``figures/``).

Sections (each an ``<h2 id=...>`` in the HTML):

* ``loss`` — loss vs simulated wall-clock per policy, one panel per grid point (``--train`` only);
* ``vs-parameter`` — update rate, staleness (mean and p99) and the stable learning rate
  (or α* without a base rate/sharpness) against the first varied key;
* ``pareto`` — time to target (or time per update without ``--train``) against cluster
  size and (with ``cost_per_worker_hour``) cost, every row a dot, the Pareto front circled;
* ``table`` — the results table;
* ``warnings`` — where the stability criteria disagree, with the rows concerned.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from pathlib import Path
from typing import Any

from .._io import atomic_path, atomic_write_text

__all__ = ["write_report", "pareto_front", "SECTIONS"]

SECTIONS = {"loss": "Loss vs simulated wall-clock", "vs-parameter": "Speed, staleness and stable learning rate",
            "pareto": "Pareto front", "diloco-regions": "Stable regions of the DiLoCo rows",
            "table": "Results table", "warnings": "Stability criteria warnings"}

#: One colour per policy, fixed so every figure agrees (colour-blind-safe Okabe–Ito palette).
POLICY_COLORS = {"sync": "#000000", "async": "#E69F00", "backup": "#0072B2", "k_async": "#009E73",
                 "ssp": "#CC79A7", "round_robin": "#D55E00", "allreduce": "#56B4E9",
                 # the DiLoCo family (past the palette's eight: its yellow, then distinct darker hues)
                 "local_sgd": "#F0E442", "diloco": "#7F3C8D", "streaming_diloco": "#3969AC",
                 "async_diloco": "#A5AA99"}
POLICY_LABELS = {"sync": "S-SGD (sync)", "async": "A-SGD (async)", "backup": "backup workers",
                 "k_async": "K-async", "ssp": "SSP", "round_robin": "round robin",
                 "allreduce": "S-SGD (all-reduce)", "local_sgd": "local SGD", "diloco": "DiLoCo",
                 "streaming_diloco": "streaming DiLoCo", "async_diloco": "async DiLoCo"}
MAX_LOSS_PANELS = 12
MAX_ROWS_OF_PANELS = 4


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v == 0:
            return "0"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def pareto_front(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the points not dominated in (x, y), both minimised, sorted by x.

    A point is dominated when another is no worse in both and better in one."""
    idx = [i for i in range(len(xs)) if _finite(xs[i]) and _finite(ys[i])]
    idx.sort(key=lambda i: (xs[i], ys[i]))
    front, best = [], math.inf
    for i in idx:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    return front


# ------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    # the figures lay themselves out (tight_layout): bbox_inches="tight" would draw every
    # figure a second time to measure it (inlined for performance: half of a report's time)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def _policy_order(rows) -> list[str]:
    seen = []
    for r in rows:
        if r["policy"] not in seen:
            seen.append(r["policy"])
    return seen


#: human names (and units) of the keys a plan usually varies; {g}: the worker group's index
_HUMAN = {
    "workers.{g}.count": "workers", "workers.{g}.compute.mean": "compute time (s)",
    "workers.{g}.bandwidth_gbps": "NIC bandwidth (Gbit/s)", "workers.{g}.gpus_per_node": "GPUs per node",
    "workers.{g}.cost_per_hour": "price per worker-hour",
    "network.bandwidth_gbps": "NIC bandwidth (Gbit/s)", "network.server_bandwidth_gbps": "server link (Gbit/s)",
    "network.uplink_gbps": "rack uplink (Gbit/s)", "network.oversubscription": "uplink oversubscription",
    "network.racks": "racks", "network.intra_node_gbps": "NVLink per GPU (Gbit/s)", "network.sharing": "sharing",
    "model.parameters": "model parameters", "model.bytes_per_parameter": "bytes per parameter",
    "server.apply.value": "apply time (s)", "policy.aggregate": "K (aggregated)", "policy.k": "K",
    "policy.bound": "SSP bound", "policy.bucket_mb": "bucket (MB)", "policy.algorithm": "all-reduce algorithm",
    "n_workers": "workers", "speedup_throughput": "× baseline (gradients/s)",
    "stability_adjusted_speed": "× baseline (updates/s × lr)",
    "speedup_to_target": "× baseline (time to target)", "time_to_target": "time to target (s)",
    "cost_to_target": "cost to target", "alpha_star": "α* (conservative)", "staleness_mean": "τ mean",
    "gradient_rate": "gradients/s", "update_rate": "updates/s", "cost_per_hour": "cost per hour",
    "lr": "lr", "sim_time": "simulated time (s)", "alpha_star_lo": "α* 95 % low", "alpha_star_hi": "α* 95 % high",
    "lr_lo": "lr 95 % low", "lr_hi": "lr 95 % high",
}


def _human(key: str, short: bool = False) -> str:
    """A varied key as people name it (``workers.0.count`` -> ``workers``; units in brackets
    unless ``short``); an unknown key as it is."""
    parts = key.split(".")
    g = None
    if len(parts) > 2 and parts[0] == "workers" and parts[1].isdigit():
        g, parts = parts[1], ["workers", "{g}"] + parts[2:]
    name = _HUMAN.get(".".join(parts))
    if name is None:
        return key
    if short:
        name = name.split(" (")[0]
    if g is not None and g != "0":
        name = f"{name} g{g}" if short else f"{name}, group {g}"
    return name


def _point_label(values: dict[str, Any]) -> str:
    names = [_human(k, short=True) for k in values]
    # two worker groups varied: say which group each number is (workers g0=2, workers g1=4)
    names = [f"{n} g0" if k.startswith("workers.0.") and any(o.startswith("workers.") and o != k and
                                                             not o.startswith("workers.0.") for o in values)
             else n for n, k in zip(names, values)]
    units = [_unit(k) for k in values]
    return ", ".join(f"{n}={_fmt(v)}{' ' + u if u and v is not None else ''}"
                     for n, u, v in zip(names, units, values.values())) or "base"


def _unit(key: str) -> str:
    """The unit in a varied key's human name (``Gbit/s`` for a bandwidth), or ''."""
    long = _human(key)
    return long[long.index(" (") + 2:-1] if long.endswith(")") and " (" in long else ""


def _plain_log(ax) -> None:
    """A log y axis labelled 0.5, 1, 2, 5, 10 ... (not 5×10⁻¹), minor labels off."""
    import matplotlib.ticker as mt

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mt.LogLocator(subs=(1.0, 2.0, 5.0), numticks=8))
    ax.yaxis.set_major_formatter(mt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mt.NullFormatter())


def _fixed_layout(fig, nrow: int, ncol: int, *, left=0.75, right=0.25, bottom=0.6, top=0.55) -> None:
    """Margins in inches for a grid of panels (instead of tight_layout, which draws the whole
    figure to measure it: inlined for performance, it was most of a report's time)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=0.3 if ncol > 1 else 0.2, hspace=0.55 if nrow > 1 else 0.2)


def _loss_figure(rows, curves, vary_keys, target) -> bytes | None:
    plt = _plt()
    import matplotlib.ticker
    points = sorted({r["grid_point"] for r in rows})
    if not any(curves.get(r["key"]) for r in rows):
        return None
    shown = points[:MAX_LOSS_PANELS]
    ncol = min(3, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, gpi in zip(axes.flat, shown):
        here = [r for r in rows if r["grid_point"] == gpi]
        ytop = []
        for r in here:
            c = curves.get(r["key"]) or {}
            t, y = c.get("sim_time") or [], c.get("loss") or []
            pts = [(a, b) for a, b in zip(t, y) if _finite(a) and _finite(b) and b > 0]
            if not pts:
                continue
            lab = POLICY_LABELS.get(r["policy"], r["policy"])
            if r.get("diverged"):
                lab += " (diverged)"
            ax.plot(*zip(*pts), color=POLICY_COLORS.get(r["policy"]), lw=1.6, label=lab)
            ytop.append(max(b for _, b in pts))
            if _finite(r.get("time_to_target")):
                ax.plot([r["time_to_target"]], [target], "o", color=POLICY_COLORS.get(r["policy"]), ms=5)
        ax.axhline(target, color="grey", ls="--", lw=1)
        ax.set_yscale("log")
        # a few labelled decades, no minor ticks: readable, and log minor ticks over 300
        # decades are most of a report's drawing time
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=5))
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        # zoom on what matters: down to 1/100 of the target, and (when every policy got there)
        # up to 2.5x the slowest time to target -- a quadratic's loss can fall to 1e-300
        ymin = ax.get_ylim()[0]
        if ytop:
            ax.set_ylim(max(ymin, min(target * 1e-2, 0.5 * min(ytop))), 3 * max(ytop))
        ttts = [r.get("time_to_target") for r in here]
        if ttts and all(_finite(t) for t in ttts) and max(ttts) > 0:
            ax.set_xlim(0, min(ax.get_xlim()[1], 2.5 * max(ttts)))
        ax.set_title(_point_label({k: here[0].get(k) for k in vary_keys}), fontsize=10)
        ax.set_xlabel("simulated wall-clock (s)")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(f"Loss vs simulated wall-clock (dashed: target {target:g}; dot: target reached)", fontsize=11)
    _fixed_layout(fig, nrow, ncol, top=0.75)
    return _png(fig)


def _xvalues(rows, key):
    vals = []
    for r in rows:
        v = r.get(key)
        if v not in vals:
            vals.append(v)
    numeric = all(_finite(v) for v in vals)
    if numeric:
        vals = sorted(vals)
        return vals, (lambda v: v), True
    pos = {v: i for i, v in enumerate(vals)}
    return vals, (lambda v: pos[v]), False


def _vs_parameter_figure(rows, vary_keys, has_lr) -> bytes | None:
    plt = _plt()
    if not rows:
        return None
    policies = _policy_order(rows)
    if vary_keys:
        xkey, others = vary_keys[0], vary_keys[1:]
    else:
        xkey, others = "policy", []
    combos = list(dict.fromkeys(tuple(r.get(k) for k in others) for r in rows))[:MAX_ROWS_OF_PANELS]
    metrics = [("update_rate", "updates / s (log)", True),
               ("staleness", "staleness τ (mean; dotted: p99)", False),
               ("lr" if has_lr else "alpha_star", "stable learning rate" if has_lr else "α* (conservative)", True)]
    fig, axes = plt.subplots(len(combos), 3, figsize=(14, 3.6 * len(combos)), squeeze=False)
    for ri, combo in enumerate(combos):
        sub = [r for r in rows if tuple(r.get(k) for k in others) == combo]
        if xkey == "policy":
            xs_all = policies
            xmap, numeric = (lambda v: xs_all.index(v)), False
        else:
            xs_all, xmap, numeric = _xvalues(sub, xkey)
        for ci, (m, ylab, logy) in enumerate(metrics):
            ax = axes[ri][ci]
            for p in policies:
                pr = [r for r in sub if r["policy"] == p]
                pr.sort(key=lambda r: xmap(r.get(xkey) if xkey != "policy" else r["policy"]))
                xs = [xmap(r.get(xkey) if xkey != "policy" else r["policy"]) for r in pr]
                col = POLICY_COLORS.get(p)
                style = dict(color=col, marker="o", ms=4, lw=1.6) if xkey != "policy" else \
                    dict(color=col, marker="o", ms=7, lw=0)
                if m == "staleness":
                    ax.plot(xs, [r["staleness_mean"] for r in pr], label=POLICY_LABELS.get(p, p), **style)
                    ax.plot(xs, [r["staleness_p99"] for r in pr], ls=":", color=col, lw=1.2)
                else:
                    ys = [r.get(m) for r in pr]
                    ax.plot(xs, [y if _finite(y) else float("nan") for y in ys],
                            label=POLICY_LABELS.get(p, p), **style)
            if logy:
                _plain_log(ax)
            if not numeric:
                ax.set_xticks(range(len(xs_all)), [_fmt(v) for v in xs_all])
            ax.set_xlabel(_human(xkey))
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3, which="both")
        if others:
            axes[ri][0].set_title(_point_label(dict(zip(others, combo))), fontsize=10, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _fixed_layout(fig, len(combos), 3, top=0.8)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False)
    return _png(fig)


def _pareto_axes(rows, has_train, currency: str = "USD") -> list[tuple[str, str, str, str]]:
    """(xkey, xlabel, ykey, ylabel) of each Pareto panel: against cluster size, and against cost
    when the scenario has prices (in its ``currency``)."""
    # training: the measured time to target; otherwise the first-order estimate, the inverse of
    # the stability-adjusted speed (time per unit of progress, relative to the baseline's)
    ykey = "time_to_target" if has_train else "relative_time_per_progress"
    ylab = ("time to target, simulated (s)" if has_train
            else "time per unit of first-order progress (baseline = 1)")
    if not has_train:
        for r in rows:
            v = r.get("stability_adjusted_speed")
            r["relative_time_per_progress"] = 1.0 / v if _finite(v) and v > 0 else float("nan")
    panels = [("n_workers", "workers (cluster size)", ykey, ylab)]
    if any(_finite(r.get("cost_per_hour")) for r in rows):
        if has_train:
            panels.append(("cost_to_target", f"cost to reach the target ({currency})", ykey, ylab))
        else:
            panels.append(("cost_per_hour", f"cluster cost per hour ({currency})", ykey, ylab))
    return panels


def _front_label(row, vary_keys) -> str:
    return row["policy"] + (f" {_point_label({k: row.get(k) for k in vary_keys})}" if vary_keys else "")


def _pareto_figure(rows, vary_keys, has_train, currency: str = "USD"):
    """The figure (or None) and, per panel, ``(xkey, xlab, ykey, ylab, front indices)``."""
    plt = _plt()
    panels = []
    for xkey, xlab, ykey, ylab in _pareto_axes(rows, has_train, currency):
        xs = [r.get(xkey) for r in rows]
        ys = [r.get(ykey) for r in rows]
        panels.append((xkey, xlab, ykey, ylab, pareto_front(xs, ys)))
    if not any(_finite(r.get(p[0])) and _finite(r.get(p[2])) for r in rows for p in panels):
        return None, panels
    fig, axes = plt.subplots(1, len(panels), figsize=(7.2 * len(panels), 5), squeeze=False)
    for ax, (xkey, xlab, ykey, ylab, front) in zip(axes[0], panels):
        xs = [r.get(xkey) for r in rows]
        ys = [r.get(ykey) for r in rows]
        for p in _policy_order(rows):
            pts = [(x, y) for r, x, y in zip(rows, xs, ys) if r["policy"] == p and _finite(x) and _finite(y)]
            if pts:
                ax.scatter(*zip(*pts), color=POLICY_COLORS.get(p), label=POLICY_LABELS.get(p, p), s=36,
                           zorder=3, alpha=0.85)
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="grey", lw=1.2, zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="grey", zorder=4)
        for i in front:
            ax.annotate(_front_label(rows[i], vary_keys), (xs[i], ys[i]), textcoords="offset points",
                        xytext=(7, 5), fontsize=8, color="#333")
        ax.set_xlabel(xlab)
        ax.set_ylabel(ylab)
        fin = [y for y in ys if _finite(y) and y > 0]
        if fin and max(fin) / min(fin) > 20:
            _plain_log(ax)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Each dot a (grid point, policy); circled: the Pareto front (nothing beats it on both axes)",
                 fontsize=10)
    _fixed_layout(fig, 1, len(panels), top=0.6)
    return _png(fig), panels


# ------------------------------------------------------------------ text
def _regions_figure(rows, regions, vary_keys) -> bytes | None:
    """The DiLoCo rows' stable regions (asyncsim.stability.diloco): the largest stable outer lr
    against the inner learning rate (or α = a·η without a sharpness), one line per row, and the
    row's own (lr, outer lr) as a dot: a dot under its line is stable."""
    here = [r for r in rows if (regions or {}).get(r["key"])]
    if not here:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    use_eta = all(regions[r["key"]].get("eta") for r in here)
    styles = ["-", "--", ":", "-."]
    top = 0.0
    for i, r in enumerate(here):
        reg = regions[r["key"]]
        x = [float(v) for v in (reg["eta"] if use_eta else reg["alpha"])]
        y = [float("nan") if v is None else float(v) for v in reg["outer_lr_max"]]
        lab = POLICY_LABELS.get(r["policy"], r["policy"]) + (f" ({_point_label({k: r.get(k) for k in vary_keys})})"
                                                              if vary_keys else "")
        color = POLICY_COLORS.get(r["policy"])
        ax.plot(x, y, styles[i % 4], color=color, label=lab, lw=1.5)
        top = max([top] + [v for v in y if _finite(v)])
        own = r.get("lr") if use_eta else r.get("alpha_star")
        if _finite(own) and _finite(reg.get("outer_lr")):
            ax.plot([own * (1.0 if use_eta else 0.5)], [reg["outer_lr"]], "o", color=color, ms=5)
            top = max(top, float(reg["outer_lr"]))
    ax.set_xlabel("inner learning rate η" if use_eta else "inner α = a·η")
    ax.set_ylabel("largest stable outer learning rate")
    lows = [float(v) for r in here for v in regions[r["key"]]["outer_lr_max"] if _finite(v) and v > 0]
    if lows and top > 20 * min(lows):  # (async rows' bounds can sit orders of magnitude below the others)
        ax.set_yscale("log")
        _plain_log(ax)
    else:
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("DiLoCo rows: stable below each line (dot: the row's lr and outer lr)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _warnings(rows, vary_keys) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for r in rows:
        for w in filter(None, (r.get("warnings") or "").split(" | ")):
            groups.setdefault(w, []).append(f"{r['policy']} at {_point_label({k: r.get(k) for k in vary_keys})}")
    return list(groups.items())


#: the columns a decision reads first, in this order (after the varied keys), when present
DECISION_COLUMNS = ("policy", "speedup_throughput", "stability_adjusted_speed", "speedup_to_target", "time_to_target",
                    "cost_to_target", "lr", "lr_lo", "lr_hi",
                    "alpha_star", "alpha_star_lo", "alpha_star_hi", "staleness_mean", "gradient_rate", "update_rate",
                    "cost_per_hour")


def _table_columns(rows, vary_keys) -> list[str]:
    """Varied keys, the decision columns, then everything else (what results.parquet holds)."""
    from .store import column_order

    skip = {"key", "warnings", "grid_point", "relative_time_per_progress"}
    cols = [c for c in column_order(rows, vary_keys) if c not in skip]
    lead = [c for c in vary_keys if c in cols] + [c for c in DECISION_COLUMNS if c in cols]
    return lead + [c for c in cols if c not in lead]


def _html_table(rows, cols) -> str:
    """The table, sortable by clicking a header (numbers as numbers; a few lines of inline
    script, nothing loaded from the network)."""
    head = "".join(f"<th title='{html.escape(c)}' onclick='sortBy(this)'>{html.escape(_human(c))}</th>"
                   for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            key = f" data-v='{float(v)!r}'" if num and math.isfinite(float(v)) else ""
            cells.append(f"<td class='{'num' if num else 'txt'}'{key}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table id='results'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></div><script>{_SORT_JS}</script>")


_SORT_JS = """
function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
up=th.dataset.dir!=='up';th.dataset.dir=up?'up':'down';const b=t.tBodies[0];
const key=td=>td.dataset.v!==undefined?parseFloat(td.dataset.v):(td.textContent==='–'?NaN:td.textContent);
[...b.rows].sort((x,y)=>{const a=key(x.cells[i]),c=key(y.cells[i]);
if(typeof a==='number'&&typeof c==='number'){if(isNaN(a))return 1;if(isNaN(c))return -1;return up?a-c:c-a;}
return up?String(a).localeCompare(String(c)):String(c).localeCompare(String(a));}).forEach(r=>b.appendChild(r));}
"""


def _md_table(rows, cols) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em;line-height:1.45}
h1{font-size:1.6em} h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
img{max-width:100%;border:1px solid #eee} .scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.82em} th,td{padding:.25em .6em;border-bottom:1px solid #eee}
th{background:#f6f6f6;position:sticky;top:0;text-align:left;cursor:pointer} td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:0 .25em} .note{color:#555} ul.warn li{margin-bottom:.4em}
"""


def decision_lines(meta: dict[str, Any], vary_keys: list[str]) -> list[str]:
    """The answers to ``--deadline`` and ``--budget``, one sentence each."""
    d = meta.get("decision") or {}
    cur = meta.get("currency") or "USD"
    out = []
    for key, label in (("cheapest_within_deadline", f"Cheapest within the {meta.get('deadline')} s deadline"),
                       ("fastest_within_budget", f"Fastest within the budget of {meta.get('budget')} {cur}")):
        if key not in d:
            continue
        r = d[key]
        if r is None:
            out.append(f"{label}: no configuration reaches the target.")
            continue
        where = _point_label({k: r.get(k) for k in vary_keys})
        cost = f", {_fmt(r.get('cost_to_target'))} {cur}" if r.get("cost_to_target") is not None else ""
        out.append(f"{label}: {POLICY_LABELS.get(r['policy'], r['policy'])}"
                   f"{' at ' + where if where else ''}, target in {_fmt(r['time_to_target'])} s{cost}.")
    return out


def write_report(out_dir: str | Path, rows: list[dict[str, Any]], curves: dict[str, dict], *,
                 vary_keys: list[str], meta: dict[str, Any], regions: dict[str, dict] | None = None) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` under ``out_dir``; return their paths."""
    out = Path(out_dir)
    rows = [dict(r) for r in rows]  # (the figures add derived values; the caller's rows stay as they are)
    has_train = meta.get("train") is not None
    has_lr = any(_finite(r.get("lr")) for r in rows)
    target = meta.get("target")
    figs: dict[str, bytes | None] = {}
    figs["loss"] = _loss_figure(rows, curves, vary_keys, target) if has_train else None
    figs["vs-parameter"] = _vs_parameter_figure(rows, vary_keys, has_lr)
    figs["pareto"], panels = _pareto_figure(rows, vary_keys, has_train, str(meta.get("currency") or "USD"))
    figs["diloco-regions"] = _regions_figure(rows, regions, vary_keys)
    paths: dict[str, Path] = {}
    for name, png in figs.items():
        if png is not None:
            p = out / "figures" / f"{name}.png"
            with atomic_path(p) as tmp:
                tmp.write_bytes(png)
            paths[name] = p

    cols = _table_columns(rows, vary_keys)
    warns = _warnings(rows, vary_keys)
    plan_warns = list(meta.get("warnings") or [])  # plan-level: e.g. a varied key that changed nothing
    crits = list(meta.get("criteria") or ["mean", "mean-square", "trace"])
    title = f"asyncsim plan: {meta.get('scenario_name', 'scenario')}"
    grid_desc = (", ".join(f"<code>{html.escape(k)}</code> ∈ {{{', '.join(_fmt(v) for v in vals)}}}"
                           for k, vals in meta.get("vary", {}).items()) or "the scenario as given")
    intro = (f"<p>Scenario <code>{html.escape(str(meta.get('scenario')))}</code>; grid: {grid_desc}; policies: "
             f"{', '.join(html.escape(POLICY_LABELS.get(p, p)) for p in meta.get('policies', []))}; "
             f"seed {meta.get('seed')} for every point (common random numbers); "
             f"{meta.get('n_rows', len(rows))} rows. "
             + (f"Learning rate: {meta.get('lr_fraction')} × α*/a with a = {_fmt(meta.get('sharpness'))}. "
                if has_lr else "No --base-lr or --sharpness: α* only, no learning rate. ")
             + (f"Training: <code>{html.escape(str(meta.get('train')))}</code> to loss {target:g}." if has_train
                else "") + "</p>"
             + "".join(f"<p class='warn'>Warning: {html.escape(w)}.</p>" for w in plan_warns)
             + "".join(f"<p><b>{html.escape(x)}</b></p>" for x in decision_lines(meta, vary_keys)))

    def img(name, alt):
        png = figs.get(name)
        if png is None:
            return "<p class='note'>(nothing to plot)</p>"
        return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"

    sec = []
    if has_train:
        sec.append(f"<h2 id='loss'>{SECTIONS['loss']}</h2><p>Each policy's replay of its own trace at its "
                   f"recommended learning rate; the x axis is the simulated cluster's clock.</p>"
                   + img("loss", "loss vs simulated wall-clock"))
    else:
        sec.append(f"<h2 id='loss'>{SECTIONS['loss']}</h2><p class='note'>Run with <code>--train DATASET/MODEL "
                   f"--target LOSS</code> to replay each trace and plot loss against simulated time.</p>")
    sec.append(f"<h2 id='vs-parameter'>{SECTIONS['vs-parameter']}</h2>"
               + img("vs-parameter", "update rate, staleness and stable learning rate vs the varied parameter"))
    fronts_html = []
    for xkey, xlab, ykey, ylab, front in panels:
        items = "".join(f"<li>{html.escape(POLICY_LABELS.get(rows[i]['policy'], rows[i]['policy']))} at "
                        f"{html.escape(_point_label({k: rows[i].get(k) for k in vary_keys}))}: {html.escape(ylab)} "
                        f"{_fmt(rows[i].get(ykey))}, {html.escape(xlab)} {_fmt(rows[i].get(xkey))}</li>"
                        for i in front)
        fronts_html.append(f"<p>Front of {html.escape(ylab)} against {html.escape(xlab)}:</p><ul>{items}</ul>"
                           if items else f"<p class='note'>No row has both {html.escape(ylab)} and "
                           f"{html.escape(xlab)} (e.g. no policy reached the target).</p>")
    sec.append(f"<h2 id='pareto'>{SECTIONS['pareto']}</h2>" + img("pareto", "Pareto front") + "".join(fronts_html))
    if figs.get("diloco-regions") is not None:
        sec.append(f"<h2 id='diloco-regions'>{SECTIONS['diloco-regions']}</h2><p>The outer recursion of each "
                   f"local SGD / DiLoCo row, driven by its trace: the largest stable outer learning rate at each "
                   f"inner one (<code>asyncsim stability --trace</code> gives the same per trace).</p>"
                   + img("diloco-regions", "stable regions of the DiLoCo rows"))
    sec.append(f"<h2 id='table'>{SECTIONS['table']}</h2><p class='note'>Also in <code>results.parquet</code>. "
               f"speedup_throughput: gradient rate ÷ the baseline's ({html.escape(str(meta.get('baseline')))}) "
               f"at the same grid point"
               + ("; speedup_to_target: the baseline's time to target ÷ this row's" if has_train else "")
               + ".</p>" + _html_table(rows, cols))
    if warns:
        items = "".join(f"<li>{html.escape(w)}<br><span class='note'>rows: {html.escape('; '.join(where))}"
                        f"</span></li>" for w, where in warns)
        sec.append(f"<h2 id='warnings'>{SECTIONS['warnings']}</h2><ul class='warn'>{items}</ul>")
    else:
        sec.append(f"<h2 id='warnings'>{SECTIONS['warnings']}</h2><p>No warnings: the criteria computed "
                   f"({html.escape(', '.join(crits))}) agree at every row.</p>")
    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{intro}{''.join(sec)}"
           f"<p class='note'>asyncsim {html.escape(str(meta.get('version', '')))}</p></body></html>\n")
    html_path = out / "report.html"
    atomic_write_text(html_path, doc)

    # ---------------------------------------------------------------- markdown
    md = [f"# {title}", "",
          f"Scenario `{meta.get('scenario')}`; grid: "
          + (", ".join(f"`{k}` ∈ {{{', '.join(_fmt(v) for v in vals)}}}" for k, vals in meta.get("vary", {}).items())
             or "the scenario as given")
          + f"; policies: {', '.join(meta.get('policies', []))}; seed {meta.get('seed')} for every point.", ""]
    md += [f"## {SECTIONS['loss']}", ""]
    md += ["![loss vs simulated wall-clock](figures/loss.png)" if "loss" in paths else
           "_Run with `--train DATASET/MODEL --target LOSS` for loss curves._", ""]
    md += [f"## {SECTIONS['vs-parameter']}", "", "![update rate, staleness and stable LR](figures/vs-parameter.png)"
           if "vs-parameter" in paths else "_(nothing to plot)_", ""]
    md += [f"## {SECTIONS['pareto']}", ""]
    if "pareto" in paths:
        md += ["![Pareto front](figures/pareto.png)", ""]
    for xkey, xlab, ykey, ylab, front in panels:
        md += [f"Front of {ylab} against {xlab}:", ""]
        md += [f"- {r['policy']} at {_point_label({k: r.get(k) for k in vary_keys})}: {ylab} {_fmt(r.get(ykey))}, "
               f"{xlab} {_fmt(r.get(xkey))}" for r in (rows[i] for i in front)] or ["- _no row has both numbers_"]
        md += [""]
    if "diloco-regions" in paths:
        md += [f"## {SECTIONS['diloco-regions']}", "", "![stable regions](figures/diloco-regions.png)", ""]
    md += ["", f"## {SECTIONS['table']}", "", _md_table(rows, cols), ""]
    md += [f"## {SECTIONS['warnings']}", ""]
    md += [f"- **{w}**" for w in plan_warns]
    md += [f"- {x}" for x in decision_lines(meta, vary_keys)]
    md += ([f"- {w} (rows: {'; '.join(where)})" for w, where in warns] if warns else
           [f"No warnings: the criteria computed ({', '.join(crits)}) agree at every row."])
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return {"html": html_path, "md": md_path, **{f"figure_{k}": v for k, v in paths.items()}}
