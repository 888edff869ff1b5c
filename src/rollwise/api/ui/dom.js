// Small DOM and formatting helpers of the rollwise dashboard (no library): building elements, updating
// a part of the page only when what it shows changed (no flicker, no layout jump, focus kept), and the
// words and icons every status carries besides its colour.
// Used by app.js and chart.js. Must not: put API data into innerHTML (textContent only).

/** An element: h("td", {class: "num", title: "..."}, "text", child, ...); `on` holds event listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace `el`'s children with `build()`'s only when `key` (what they show) differs from last time. */
export function put(el, key, build) {
  if (el.dataset.key === key) return false;
  el.dataset.key = key;
  const made = build();
  el.replaceChildren(...(Array.isArray(made) ? made.flat(Infinity) : [made]).filter((c) => c !== null && c !== undefined));
  return true;
}

/** Set an element's text if it changed. */
export function text(el, value) {
  const s = value === null || value === undefined ? "" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

// --- statuses: an icon and words for each, colour only as a third cue (tone = a CSS class) ---------------

const STATUS = {
  // lifecycles
  pending: ["…", "pending", "neutral"],
  scaling: ["↻", "scaling", "info"],
  ready: ["✓", "ready", "good"],
  deploying: ["▶", "deploying", "info"],
  destroying: ["✕", "destroying", "bad"],
  destroyed: ["✕", "destroyed", "neutral"],
  // sub-steps
  provisioning: ["…", "provisioning", "info"],
  progressing: ["▶", "progressing", "info"],
  awaiting_promotion: ["‖", "awaiting promotion", "warn"],
  paused: ["‖", "paused", "warn"],
  rolling_back: ["↩", "rolling back", "bad"],
  rolled_back: ["↩", "rolled back", "bad"],
  completed: ["✓", "completed", "good"],
  // route statuses
  running: ["●", "running", "good"],
  terminating: ["↓", "terminating", "neutral"],
  terminated: ["○", "terminated", "neutral"],
  failed_to_start: ["✕", "failed to start", "bad"],
  // health
  healthy: ["✓", "healthy", "good"],
  unhealthy: ["✕", "unhealthy", "bad"],
  degraded: ["!", "degraded", "warn"],
  not_checked: ["?", "not checked", "neutral"],
  // traffic
  active: ["⇄", "active", "good"],
  inactive: ["–", "inactive", "neutral"],
  // history results and rollout outcomes
  success: ["✓", "success", "good"],
  failure: ["✕", "failure", "bad"],
  progress: ["▶", "progress", "info"],
  waiting: ["‖", "waiting", "warn"],
  operator: ["☞", "operator", "info"],
  error: ["!", "error", "bad"],
  in_progress: ["▶", "in progress", "info"],
  aborted: ["✕", "aborted", "bad"],
};

/** A status badge: icon and words, the tone as a class; unknown values are shown as they are. */
export function badge(value, extraClass = "") {
  if (value === null || value === undefined) return h("span", {class: "badge neutral"}, "–");
  const [icon, words, tone] = STATUS[value] || ["•", String(value).replaceAll("_", " "), "neutral"];
  return h("span", {class: `badge ${tone} ${extraClass}`.trim(), dataset: {status: value}},
    h("span", {class: "icon", "aria-hidden": "true"}, icon), " ", words);
}

export function words(value) {
  if (value === null || value === undefined) return "–";
  return (STATUS[value] || [null, String(value).replaceAll("_", " ")])[1];
}

// --- time -------------------------------------------------------------------------------------------------

/** Milliseconds since the epoch of an ISO time (microseconds trimmed: Date.parse wants at most three). */
export function parseTime(iso) {
  if (!iso) return null;
  const ms = Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(ms) ? null : ms;
}

export function clock(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago". */
export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function seconds(ms) {
  const s = ms / 1000;
  if (s < 120) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// --- revisions: one colour and one dash pattern each (colour-blind safe palette, Okabe & Ito) ------------

const COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];
const DASHES = ["", "7 3", "2 3", "9 3 2 3", "4 4", "1 3"];

export function revisionColour(n) {
  return COLOURS[(Math.max(1, Number(n)) - 1) % COLOURS.length];
}

export function revisionDash(n) {
  return DASHES[(Math.max(1, Number(n)) - 1) % DASHES.length];
}

/** A small swatch in the revision's colour, with its number in words ("r2"). */
export function revisionTag(n) {
  const swatch = h("span", {class: "swatch", "aria-hidden": "true"});
  swatch.style.background = revisionColour(n);
  return h("span", {class: "rev"}, swatch, `r${n}`);
}
