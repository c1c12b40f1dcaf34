"""One self-contained HTML page about a training run, for people who look rather than read:
loss and quality curves, throughput, progress over wall time with every reclaim marked, and the
latest sample grid, from the run directory the trainer writes (stats.jsonl, metrics.jsonl,
events.jsonl, samples/), the job's status when it is at hand, and what Prometheus saw of the job
when one is named (the age of the newest checkpoint, checkpoint times, GPU memory and utilisation).

The charts are inline SVG and the grid an inline PNG: the file opens anywhere, offline, and can be
attached to a ticket.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT, MARGIN = 560, 240, 48
STOPPED = {"preempted": "#d62728", "failed": "#7f0000"}
RESTARTED = {"resumed": "#2ca02c"}


@dataclass
class RunRecord:
    """What the run directory says; empty lists where a file is missing."""

    stats: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    grid: Path | None = None

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist")
        grids = sorted((run_dir / "samples").glob("fakes-*.png"), key=_grid_nimg)
        record = cls(_jsonl(run_dir / "stats.jsonl"), _jsonl(run_dir / "metrics.jsonl"),
                     _jsonl(run_dir / "events.jsonl"), grids[-1] if grids else None)
        if not record.stats:
            raise ValueError(f"{run_dir / 'stats.jsonl'} has no reports yet: nothing to plot")
        return record


def _grid_nimg(path: Path) -> int:
    match = re.search(r"fakes-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a writer killed mid-line) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]


def line_chart(title: str, series: Sequence[Series], x_label: str, marks: Sequence[tuple[float, str, str]] = (),
               x_is_time: bool = False) -> str:
    """An SVG line chart; `marks` are vertical lines (x, colour, label), e.g. reclaims."""
    points = [p for s in series for p in s.points if math.isfinite(p[1])]
    if not points:
        return f'<figure><figcaption>{html.escape(title)}</figcaption><p class="empty">no data yet</p></figure>'
    xs = [p[0] for p in points] + [m[0] for m in marks]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def sx(x: float) -> float:
        return MARGIN + (x - x0) / (x1 - x0) * inner_w

    def sy(y: float) -> float:
        return HEIGHT - MARGIN - (y - y0) / (y1 - y0) * inner_h

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<rect x="{MARGIN}" y="{MARGIN}" width="{inner_w}" height="{inner_h}" fill="#fafafa" stroke="#ccc"/>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        x = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{MARGIN - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">{_number(y)}</text>')
        clock = "%H:%M:%S" if x1 - x0 < 600 else "%H:%M"
        tick = datetime.fromtimestamp(x, UTC).strftime(clock) if x_is_time else _number(x)
        parts.append(f'<text x="{sx(x):.1f}" y="{HEIGHT - MARGIN + 14}" text-anchor="middle" '
                     f'class="tick">{tick}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
                 f'class="axis">{html.escape(x_label)}</text>')
    for x, colour, label in marks:
        parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="{colour}" '
                     f'stroke-dasharray="4 3"><title>{html.escape(label)}</title></line>')
    breaks = sorted(x for x, colour, _ in marks if colour in STOPPED.values())
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        for segment in _segments([p for p in one.points if math.isfinite(p[1])], breaks):
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            if len(segment) == 1:
                parts.append(f'<circle cx="{sx(segment[0][0]):.1f}" cy="{sy(segment[0][1]):.1f}" r="3" '
                             f'fill="{colour}"/>')
        parts.append(f'<text x="{MARGIN + 6 + 130 * index}" y="{MARGIN - 8}" fill="{colour}" class="legend">'
                     f'{html.escape(one.label)}</text>')
    parts.append("</svg>")
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{"".join(parts)}</figure>'


def _segments(points: list[tuple[float, float]], breaks: Sequence[float]) -> list[list[tuple[float, float]]]:
    """The points as runs not joined across a stop: no line pretends training went on while it did not."""
    runs: list[list[tuple[float, float]]] = []
    for point in points:
        if runs and not any(runs[-1][-1][0] < stop < point[0] for stop in breaks):
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _number(value: float) -> str:
    if 1e3 <= abs(value) < 1e7:
        return f"{value:,.0f}"
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-2):
        return f"{value:.1e}"
    return f"{value:.3g}"


def _series(records: list[dict[str, Any]], x_key: str, keys: Sequence[str], labels: Sequence[str] | None = None
            ) -> list[Series]:
    out = []
    for key, label in zip(keys, labels or keys, strict=True):
        points = [(float(r[x_key]), float(r[key])) for r in records if key in r and x_key in r]
        if points:
            out.append(Series(label, points))
    return out


@dataclass(frozen=True)
class Observed:
    """What Prometheus saw of the job (ganforge.observability.observed): charts, or why there are none."""

    url: str
    charts: list[tuple[str, list[Series]]] = field(default_factory=list)
    problem: str | None = None


def render(record: RunRecord, title: str, status: dict[str, Any] | None = None,
           observed: Observed | None = None) -> str:
    """The page, as HTML text."""
    stops = [e for e in record.events if e.get("event") in STOPPED]
    restarts = [e for e in record.events if e.get("event") in RESTARTED]
    kimg_marks = [(float(e["kimg"]), STOPPED[e["event"]], f"{e['event']} at kimg {e['kimg']:.2f}") for e in stops]
    time_marks = ([(float(e["time"]), STOPPED[e["event"]], f"{e['event']} at kimg {e['kimg']:.2f}") for e in stops]
                  + [(float(e["time"]), RESTARTED[e["event"]], f"resumed from kimg {e['kimg']:.2f}") for e in restarts])
    quality_keys = sorted({k for m in record.metrics for k in m if k.startswith(("fd_", "kid_")) and "std" not in k})
    charts = [
        line_chart("Losses", _series(record.stats, "kimg", ["loss/G", "loss/D"], ["G", "D"]), "kimg", kimg_marks),
        line_chart("Quality (lower is better)", _series(record.metrics, "kimg", quality_keys), "kimg", kimg_marks),
        line_chart("D outputs", _series(record.stats, "kimg", ["d_output/real", "d_output/fake"], ["real", "fake"]),
                   "kimg", kimg_marks),
        line_chart("Gradient norms", _series(record.stats, "kimg", ["grad_norm/G", "grad_norm/D"], ["G", "D"]),
                   "kimg", kimg_marks),
        line_chart("Images per second", _series(record.stats, "time", ["timing/images_per_second"], ["img/s"]),
                   "wall time (UTC)", time_marks, x_is_time=True),
        line_chart("Progress (kimg) over wall time; red: a reclaim, green: the resume",
                   _series(record.stats, "time", ["kimg"]), "wall time (UTC)", time_marks, x_is_time=True),
    ]
    last = record.stats[-1]
    facts = [("kimg", f"{last['kimg']:.2f}"), ("img/s (last report)", f"{last.get('timing/images_per_second', 0):.0f}"),
             ("reclaims survived", str(len([e for e in stops if e["event"] == "preempted"]))),
             ("resumes", str(len(restarts)))]
    if status:
        facts = [("phase", str(status.get("phase", "?"))), *facts,
                 ("preemptions (status)", str(status.get("preemptions", 0))),
                 ("failures (status)", str(status.get("failures", 0)))]
    if record.metrics:
        facts += [(k, f"{v:.4g}") for k, v in sorted(record.metrics[-1].items())
                  if k in quality_keys and isinstance(v, (int, float))]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    grid = "<p class=\"empty\">no sample grid yet</p>"
    if record.grid is not None:
        encoded = base64.b64encode(record.grid.read_bytes()).decode()
        grid = (f'<figure><figcaption>Latest samples ({html.escape(record.grid.name)}, EMA generator on fixed '
                f'latents)</figcaption><img alt="latest sample grid" src="data:image/png;base64,{encoded}"/></figure>')
    prometheus = ""
    if observed is not None:
        shown = "".join(line_chart(name, series, "wall time (UTC)", time_marks, x_is_time=True)
                        for name, series in observed.charts)
        if observed.problem:
            shown = f'<p class="empty">{html.escape(observed.problem)}</p>'
        shown = shown or '<p class="empty">no series of this job in Prometheus</p>'
        prometheus = f"<section><h2>As Prometheus saw it ({html.escape(observed.url)})</h2>{shown}</section>"
    timeline = "".join(
        f"<li>{datetime.fromtimestamp(e['time'], UTC):%Y-%m-%d %H:%M:%S} UTC: {html.escape(str(e['event']))} at kimg "
        f"{e['kimg']:.2f} (world size {e.get('world_size', '?')})</li>" for e in record.events)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }}
h1 {{ font-size: 22px; }} figure {{ display: inline-block; margin: 8px; vertical-align: top; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }} table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; }} .tick, .axis, .legend {{ font-size: 11px; fill: #444; }}
.legend {{ font-weight: 600; }} .empty {{ color: #888; }} img {{ image-rendering: pixelated; width: 512px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{table}</table>
<section>{"".join(charts)}</section>
<section>{grid}</section>
{prometheus}
<section><h2>Run events</h2><ul>{timeline or "<li>none recorded</li>"}</ul></section>
</body></html>
"""
