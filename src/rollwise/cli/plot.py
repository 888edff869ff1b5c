"""The rollout timeline as a PNG (`rollwise history NAME --plot FILE.png`), drawn with matplotlib.

The picture is the one the dashboard draws, from the same answer of `GET /v1/deployments/{name}/
rollouts/{id}/timeline` (docs/api.md, "Rollout timeline"): on top, the ready routes of each revision as
step lines; below, each revision's share of the traffic in percent, also as steps; on both, every event
of the rollout as a vertical line, labelled in words (its kind, and for a rollback, an abort or an
error the start of its message). Time runs from the rollout's start, in seconds, minutes or hours.

matplotlib is an optional extra (`pip install 'rollwise[plot]'`): `have_matplotlib()` imports it (the
command needs it next anyway) and says whether that worked; `write_timeline_png` selects the Agg backend
(no display, no window). Nothing of matplotlib is imported by the other commands. Called by cli.history. Must not: talk to the server (it gets the timeline as JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

INSTALL_HINT = "--plot needs matplotlib: pip install 'rollwise[plot]' (or pip install 'matplotlib>=3.7')"

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
"""One colour per revision, in the order the revisions appear (old first)."""

EVENT_COLORS = {"started": "#555555", "completed": "#2ca02c", "rollback": "#d62728", "aborted": "#d62728",
                "error": "#d62728", "paused": "#9467bd", "promoted": "#1f77b4"}
"""Colours of the event marks; the kinds not named (wave, step) are light grey."""

LABELLED_MAX = 40
"""More events than this: waves and steps get a mark but no label (the words would overlap)."""

WORDY = ("rollback", "aborted", "error")
"""Kinds whose label also quotes the start of the message (why it rolled back)."""


def have_matplotlib() -> bool:
    """True when matplotlib can be imported (a broken or missing install: False)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _unit(span_seconds: float) -> tuple[str, float]:
    if span_seconds > 3 * 3600:
        return "h", 3600.0
    if span_seconds > 600:
        return "min", 60.0
    return "s", 1.0


def event_label(event: Mapping[str, Any]) -> str:
    """The words next to an event's mark: its kind, and for a rollback, an abort or an error why."""
    kind = str(event["kind"])
    if kind not in WORDY:
        return kind
    message = str(event["message"])
    return f"{kind}: {message[:48]}{'…' if len(message) > 48 else ''}"


def write_timeline_png(timeline: Mapping[str, Any], path: Path, *, title: str) -> None:
    """Draw `timeline` (the API's JSON) into the PNG file `path` (overwritten)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    samples: Sequence[Mapping[str, Any]] = timeline["samples"]
    events: Sequence[Mapping[str, Any]] = timeline["events"]
    start = _time(timeline["started_at"])
    times = [_time(s["at"]) for s in samples] + [_time(e["at"]) for e in events]
    end = _time(timeline["ended_at"]) if timeline.get("ended_at") else max(times, default=start)
    unit, size = _unit((end - start).total_seconds())

    def x(at: datetime) -> float:
        return (at - start).total_seconds() / size

    revisions = sorted({int(k) for s in samples for k in (*s["ready"], *s["weights"])})
    right = max(x(end), 1e-9) * 1.04  # a margin after the end, where the last state goes on
    # The first sample is the state the rollout started from (its first cycle saw it, a moment after
    # the start): drawn from the start. The last state lasts to the right edge.
    xs = [0.0] + [x(_time(s["at"])) for s in samples[1:]] + [right]
    fig, (ready_ax, share_ax) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5), dpi=100,
                                             gridspec_kw={"height_ratios": [3, 2]})
    try:
        for i, rev in enumerate(revisions):
            color = COLORS[i % len(COLORS)]
            ready = [int(s["ready"].get(str(rev), 0)) for s in samples]
            share = [int(s["weights"].get(str(rev), 0)) for s in samples]
            if samples:
                ready_ax.step(xs, ready + ready[-1:], where="post", color=color, linewidth=2, label=f"r{rev}")
                share_ax.step(xs, share + share[-1:], where="post", color=color, linewidth=2, label=f"r{rev}")
            if samples and i == len(revisions) - 1:
                ready_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        labelled = len(events) <= LABELLED_MAX
        marks: list[tuple[float, list[str], str]] = []  # (x, labels, colour): events at one place share one
        for e in events:
            kind = str(e["kind"])
            color = EVENT_COLORS.get(kind, "#bbbbbb")
            at = x(_time(e["at"]))
            for ax in (ready_ax, share_ax):
                ax.axvline(at, color=color, linewidth=1, linestyle="--", alpha=0.8, zorder=0)
            if not labelled and kind in ("wave", "step"):
                continue
            if marks and at - marks[-1][0] < right * 0.012:
                if event_label(e) not in marks[-1][1]:
                    marks[-1][1].append(event_label(e))
                if color != "#bbbbbb":
                    marks[-1] = (marks[-1][0], marks[-1][1], color)
            else:
                marks.append((at, [event_label(e)], color))
        for at, labels, color in marks:
            ready_ax.annotate(" / ".join(labels), xy=(at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                              va="top", ha="left", fontsize=7, color=color, xytext=(1, -3),
                              textcoords="offset points")
        top = max((int(v) for s in samples for v in s["ready"].values()), default=0)
        ready_ax.set_ylim(-0.05 * max(1, top), max(1, top) * 1.25 + 0.5)  # a line at 0 stays visible
        ready_ax.set_ylabel("ready routes")
        share_ax.set_ylim(-3, 105)
        share_ax.set_ylabel("traffic share (%)")
        share_ax.set_xlabel(f"time since the rollout started ({unit})")
        share_ax.set_xlim(0, right)
        for ax in (ready_ax, share_ax):
            ax.grid(True, alpha=0.3)
            if revisions:
                ax.legend(loc="center left", bbox_to_anchor=(1.005, 0.5), fontsize=8, frameon=False)
        if not samples:
            ready_ax.text(0.5, 0.5, "no samples recorded", transform=ready_ax.transAxes, ha="center", color="#777777")
        ready_ax.set_title(title, fontsize=11)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
