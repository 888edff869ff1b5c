// The rollout timeline chart of the rollwise dashboard, drawn as SVG by this file alone (no library):
// from one answer of GET /v1/deployments/NAME/rollouts/ID/timeline, the ready routes per revision (step
// lines, one colour and one dash pattern per revision, a dot per sample) over the traffic share per
// revision (stacked, 0-100 %), both against the time since the rollout started, with the history events
// as marks (a vertical line and a glyph; its words in a tooltip and in the list app.js shows below).
// Used by app.js. Must not: fetch anything or keep state between two drawings.

import {clock, h, parseTime, revisionColour, revisionDash, seconds} from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
export const HEIGHT = 300;

/** Glyph and words of each event kind (the timeline contract's kinds; others are shown as "·"). */
export const EVENT_KINDS = {
  started: ["▶", "started"],
  wave: ["◆", "wave"],
  step: ["·", "step"],
  paused: ["‖", "paused"],
  promoted: ["⇪", "promoted"],
  rollback: ["↩", "rollback"],
  completed: ["✓", "completed"],
  aborted: ["✕", "aborted"],
  error: ["!", "error"],
};

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const num = (x) => Math.round(x * 10) / 10;

/** The revisions a timeline mentions, ascending. */
export function timelineRevisions(timeline) {
  const found = new Set();
  for (const sample of timeline.samples || []) {
    for (const key of Object.keys(sample.ready || {})) found.add(Number(key));
    for (const key of Object.keys(sample.weights || {})) found.add(Number(key));
  }
  for (const n of [timeline.from_revision, timeline.to_revision]) if (n !== null && n !== undefined) found.add(Number(n));
  return [...found].filter((n) => Number.isFinite(n)).sort((a, b) => a - b);
}

function niceStep(span, most) {
  for (const step of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]) {
    if (span / (step * 1000) <= most) return step * 1000;
  }
  return 86400000;
}

function relative(ms) {
  const total = Math.round(ms / 1000);
  const m = Math.floor(total / 60);
  return `${m}:${String(total % 60).padStart(2, "0")}`;
}

/** Spread labels (sorted by y) so that no two are closer than `gap`, within [top, bottom]. */
function spread(labels, gap, top, bottom) {
  labels.sort((a, b) => a.y - b.y);
  for (let i = 1; i < labels.length; i++) labels[i].y = Math.max(labels[i].y, labels[i - 1].y + gap);
  const over = labels.length ? labels[labels.length - 1].y - bottom : 0;
  if (over > 0) for (const l of labels) l.y -= over;
  for (let i = labels.length - 2; i >= 0; i--) labels[i].y = Math.min(labels[i].y, labels[i + 1].y - gap);
  for (const l of labels) l.y = Math.max(top, l.y);
  return labels;
}

/**
 * The chart as an <svg> element `width` pixels wide (HEIGHT high). `now` (ms) ends the time axis of a
 * rollout still in progress. The element carries data-points (dots drawn), data-events (marks drawn).
 */
export function drawTimeline(timeline, {width, now = Date.now()}) {
  const W = Math.max(300, Math.round(width));
  const narrow = W < 560;
  const left = 34;
  const right = narrow ? 64 : 74;
  const plotW = W - left - right;
  const marksTop = 2;
  const readyTop = 40;
  const readyH = 116;
  const trafficTop = readyTop + readyH + 34;
  const trafficH = 74;
  const axisY = trafficTop + trafficH;

  const samples = (timeline.samples || [])
    .map((x) => ({at: parseTime(x.at), ready: x.ready || {}, weights: x.weights || {}}))
    .filter((x) => x.at !== null);
  const events = (timeline.events || []).map((e) => ({...e, t: parseTime(e.at)})).filter((e) => e.t !== null);
  const start = parseTime(timeline.started_at) ?? (samples[0] ? samples[0].at : now);
  const ended = parseTime(timeline.ended_at);
  const lastSeen = Math.max(start, ...samples.map((x) => x.at), ...events.map((e) => e.t));
  // A finished rollout's axis runs a little past its end, so the state it ended in shows as a segment.
  const last = ended === null ? Math.max(now, lastSeen) : Math.max(ended, lastSeen);
  const end = Math.max(ended === null ? last : last + Math.max(500, (last - start) * 0.04), start + 1000);
  const span = end - start;
  const x = (t) => left + (Math.min(Math.max(t, start), end) - start) / span * plotW;

  const revisions = timelineRevisions(timeline);
  const maxReady = Math.max(1, ...samples.flatMap((x) => Object.values(x.ready).map(Number)));
  const yReady = (v) => readyTop + readyH - (v / maxReady) * readyH;
  const yTraffic = (pct) => trafficTop + trafficH - (pct / 100) * trafficH;

  const outcome = timeline.outcome || (ended ? "ended" : "in_progress");
  const summary = `Rollout ${timeline.id}: revision ${timeline.from_revision ?? "none"} to ${timeline.to_revision}, `
    + `${timeline.strategy || ""} ${String(outcome).replaceAll("_", " ")}, ${seconds(last - start)}; `
    + `${samples.length} samples, ${events.length} events`;
  const svg = s("svg", {
    xmlns: NS, viewBox: `0 0 ${W} ${HEIGHT}`, width: W, height: HEIGHT, role: "img", "aria-label": summary,
    class: "timeline-chart", id: "timeline-chart",
  }, s("title", {}, summary));

  // Grid and axes.
  const grid = s("g", {class: "grid"});
  const readyStep = Math.max(1, Math.ceil(maxReady / 4));
  for (let v = 0; v <= maxReady; v += readyStep) {
    grid.append(s("line", {x1: left, x2: left + plotW, y1: num(yReady(v)), y2: num(yReady(v))}));
    grid.append(s("text", {x: left - 6, y: num(yReady(v)) + 4, class: "tick", "text-anchor": "end"}, v));
  }
  for (const pct of [0, 50, 100]) {
    grid.append(s("line", {x1: left, x2: left + plotW, y1: num(yTraffic(pct)), y2: num(yTraffic(pct))}));
    grid.append(s("text", {x: left - 6, y: num(yTraffic(pct)) + 4, class: "tick", "text-anchor": "end"}, `${pct}`));
  }
  const step = niceStep(span, Math.max(2, Math.floor(plotW / 80)));
  for (let t = 0; t <= span + 1; t += step) {
    const px = num(x(start + t));
    grid.append(s("line", {x1: px, x2: px, y1: readyTop, y2: axisY, class: "vgrid"}));
    grid.append(s("text", {x: px, y: axisY + 16, class: "tick", "text-anchor": "middle"}, relative(t)));
  }
  grid.append(s("text", {x: left, y: readyTop - 8, class: "panel-title"}, "ready routes"));
  grid.append(s("text", {x: left, y: trafficTop - 8, class: "panel-title"}, "traffic share %"));
  svg.append(grid);

  // Traffic share: stacked step areas, lowest revision at the bottom.
  const traffic = s("g", {class: "traffic"});
  const trafficLabels = [];
  if (samples.length) {
    const stacks = samples.map((x) => {
      let below = 0;
      const out = {};
      for (const n of revisions) {
        const w = Number(x.weights[String(n)] || 0);
        out[n] = [below, below + w];
        below += w;
      }
      return out;
    });
    const tail = end;
    for (const n of revisions) {
      const top = [];
      const bottom = [];
      samples.forEach((sample, i) => {
        const t0 = x(sample.at);
        const t1 = i + 1 < samples.length ? x(samples[i + 1].at) : x(tail);
        top.push([t0, yTraffic(stacks[i][n][1])], [t1, yTraffic(stacks[i][n][1])]);
        bottom.push([t0, yTraffic(stacks[i][n][0])], [t1, yTraffic(stacks[i][n][0])]);
      });
      if (!samples.some((_, i) => stacks[i][n][1] > stacks[i][n][0])) continue;
      const d = "M" + [...top, ...bottom.reverse()].map(([px, py]) => `${num(px)},${num(py)}`).join("L") + "Z";
      traffic.append(s("path", {d, fill: revisionColour(n), "fill-opacity": 0.35, stroke: revisionColour(n),
        "stroke-width": 1, "stroke-dasharray": revisionDash(n) || null, class: "share", "data-revision": n}));
      const [lo, hi] = stacks[stacks.length - 1][n];
      if (hi - lo >= 1) trafficLabels.push({n, y: yTraffic((lo + hi) / 2) + 4, words: `r${n} ${Math.round(hi - lo)}%`});
    }
  }
  svg.append(traffic);

  // Ready routes: a step line and dots per revision.
  const ready = s("g", {class: "ready"});
  const readyLabels = [];
  let points = 0;
  if (samples.length) {
    const tail = x(end);
    for (const n of revisions) {
      const values = samples.map((x) => Number(x.ready[String(n)] || 0));
      if (!values.some((v) => v > 0)) continue;
      let d = `M${num(x(samples[0].at))},${num(yReady(values[0]))}`;
      samples.forEach((sample, i) => {
        if (i > 0) d += `H${num(x(sample.at))}V${num(yReady(values[i]))}`;
      });
      d += `H${num(tail)}`;
      ready.append(s("path", {d, fill: "none", stroke: revisionColour(n), "stroke-width": 2.5,
        "stroke-dasharray": revisionDash(n) || null, class: "line", "data-revision": n}));
      samples.forEach((sample, i) => {
        ready.append(s("circle", {cx: num(x(sample.at)), cy: num(yReady(values[i])), r: 3, fill: revisionColour(n),
          class: "point", "data-revision": n},
          s("title", {}, `${clock(sample.at)}: r${n} ${values[i]} ready, ${sample.weights[String(n)] ?? 0}% of traffic`)));
        points++;
      });
      readyLabels.push({n, y: yReady(values[values.length - 1]) + 4, words: `r${n} ${values[values.length - 1]}`});
    }
  } else {
    ready.append(s("text", {x: left + plotW / 2, y: readyTop + readyH / 2, class: "empty", "text-anchor": "middle"},
      "no samples yet"));
  }
  svg.append(ready);

  // End labels, in the revision's colour (and its number in words).
  const labels = s("g", {class: "labels"});
  for (const l of [...spread(readyLabels, 13, readyTop + 4, readyTop + readyH + 4),
    ...spread(trafficLabels, 13, trafficTop + 4, trafficTop + trafficH + 4)]) {
    labels.append(s("text", {x: left + plotW + 6, y: num(l.y), fill: revisionColour(l.n), class: "end-label"}, l.words));
  }
  svg.append(labels);

  // History events: a line across both panels and a glyph above them.
  const marks = s("g", {class: "marks"});
  for (const e of events) {
    const [glyph, name] = EVENT_KINDS[e.kind] || ["·", String(e.kind)];
    const px = num(x(e.t));
    marks.append(s("g", {class: `mark kind-${e.kind}`, "data-kind": e.kind},
      s("title", {}, `${clock(e.t)} ${name}: ${e.message}`),
      s("line", {x1: px, x2: px, y1: marksTop + 16, y2: axisY}),
      s("text", {x: px, y: marksTop + 12, "text-anchor": "middle"}, glyph)));
  }
  svg.append(marks);

  svg.dataset.points = String(points);
  svg.dataset.events = String(events.length);
  svg.dataset.revisions = revisions.join(",");
  return svg;
}

/** The chart's key: each revision's colour and dash, and the event glyphs (HTML, wraps on a phone). */
export function timelineLegend(timeline) {
  const items = timelineRevisions(timeline).map((n) => {
    const sample = s("svg", {width: 28, height: 10, viewBox: "0 0 28 10", "aria-hidden": "true"},
      s("line", {x1: 1, x2: 27, y1: 5, y2: 5, stroke: revisionColour(n), "stroke-width": 2.5,
        "stroke-dasharray": revisionDash(n) || null}));
    const role = n === timeline.to_revision ? "new" : n === timeline.from_revision ? "serving before" : "";
    return h("span", {class: "legend-item"}, sample, ` r${n}`, role ? h("span", {class: "muted"}, ` (${role})`) : null);
  });
  const kinds = new Set((timeline.events || []).map((e) => e.kind));
  const marks = Object.entries(EVENT_KINDS).filter(([kind]) => kinds.has(kind))
    .map(([kind, [glyph, name]]) => h("span", {class: `legend-item mark-key kind-${kind}`}, `${glyph} ${name}`));
  return h("div", {class: "legend"}, items, marks);
}
