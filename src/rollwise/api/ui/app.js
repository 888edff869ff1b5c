// The rollwise dashboard (docs/dashboard.md): plain static files served by `rollwise server` at /ui/,
// all data from the /v1 API with the bearer token the person typed once (kept in this tab's session
// storage, sent only in the Authorization header, never in a URL).
//
//   #/            deployments: lifecycle, revisions, sub-step, ready/desired, traffic split, last event
//   #/d/NAME      one deployment: facts, condition, the verbs that apply now (GET .../actions), the next
//                 cycle's decision (GET .../plan), the rollout timeline chart (chart.js), routes,
//                 revisions, history
//   #/d/NAME/rollout/ID   the same, with that rollout's timeline
//
// The page asks the API again one second after each answer (polling; no reload) and changes only the
// parts whose data changed. Which verbs apply is the server's word (GET .../actions), never decided here.
// Must not: store the token anywhere but sessionStorage, put it in a URL, or put API text into innerHTML.

import {ago, badge, clock, h, parseTime, put, revisionColour, revisionTag, seconds, text, words} from "./dom.js";
import {EVENT_KINDS, HEIGHT, drawTimeline, timelineLegend} from "./chart.js";

const TOKEN_KEY = "rollwise.token";
const POLL_MS = 1000;
const IDLE_MS = 10000; // what changes only with the deployment (its version) is asked again at least this often
const HISTORY_ROWS = 30;
const VERBS = [
  ["promote", "Promote", "Blue-green: switch traffic to the new revision now; canary: complete the current step"],
  ["pause", "Pause", "Hold the rollout where it is"],
  ["resume", "Resume", "Go on with the paused rollout"],
  ["abort", "Abort", "Roll back now: the serving revision stays"],
  ["undo", "Undo", "Roll out the revision that served before the current one"],
];
const CONFIRM = new Set(["abort", "undo"]);

// --- the API ------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** As the API said it: "409 verb.not_applicable: deployment 'x': ...". */
  get words() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

/** The answer's JSON (with `whole`: {data, headers}); an ApiError with the API's code and words otherwise. */
async function call(method, path, {bearer = token(), body, whole = false} = {}) {
  if (!bearer) throw new ApiError(401, "unauthorized", "not signed in");
  const headers = {Authorization: `Bearer ${bearer}`, Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", redirect: "error"});
  } catch (e) {
    throw new ApiError(0, "network", `the server did not answer (${e.message})`);
  }
  let data = null;
  try {
    data = await answer.json();
  } catch {
    data = null;
  }
  if (!answer.ok) {
    const error = new ApiError(answer.status, data?.error ?? "http", data?.message ?? answer.statusText);
    if (answer.status === 401 && bearer === token()) signedOut(error);
    throw error;
  }
  return whole ? {data, headers: answer.headers} : data;
}

const get = (path) => call("GET", path);
const dep = (name) => `/v1/deployments/${encodeURIComponent(name)}`;

/** A GET whose failure is shown in its own part of the page rather than stopping the others. */
async function settle(promise) {
  try {
    return {value: await promise};
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return {error};
  }
}

// --- chrome: login, header, polling -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
let page = null;
let generation = 0; // bumped by every navigation: an answer for an older page is dropped
let timer = null;
let busy = false; // one round of requests at a time

function setLive(ok, words, when = "") {
  const live = $("live");
  live.className = `live ${ok ? "ok" : "down"}`;
  put(live, `${words}|${when}`, () => [words, when ? h("span", {class: "when"}, ` · ${when}`) : null]);
}

function showLogin(message = "") {
  generation++;
  clearTimeout(timer);
  page = null;
  $("view").hidden = true;
  $("view").replaceChildren();
  $("crumbs").replaceChildren();
  $("signout").hidden = true;
  $("login").hidden = false;
  text($("login-error"), message);
  setLive(false, "not signed in");
  document.title = "Sign in · rollwise";
  $("token").focus();
}

function signedOut(error) {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(`The server refused the token: ${error.words}`);
}

async function login(event) {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  $("login-button").disabled = true;
  text($("login-error"), "");
  try {
    await call("GET", "/v1/deployments", {bearer: given});
    sessionStorage.setItem(TOKEN_KEY, given);
    $("token").value = "";
    route();
  } catch (error) {
    text($("login-error"), error instanceof ApiError ? error.words : String(error));
  } finally {
    $("login-button").disabled = false;
  }
}

function route() {
  if (!token()) {
    showLogin();
    return;
  }
  generation++;
  clearTimeout(timer);
  $("login").hidden = true;
  $("signout").hidden = false;
  const view = $("view");
  view.hidden = false;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "d" && parts[1]) {
    page = new DeploymentPage(parts[1], parts[2] === "rollout" && parts[3] ? Number(parts[3]) : null);
  } else {
    page = new DeploymentsPage();
  }
  view.replaceChildren(page.root);
  $("crumbs").replaceChildren(...page.crumbs());
  schedule(0);
}

function schedule(ms) {
  clearTimeout(timer);
  if (page) timer = setTimeout(poll, ms);
}

/** One round: the page asks the API and shows the answers; the next round starts POLL_MS after it ended.
 * A hidden tab asks nothing (it catches up as soon as it is shown again). */
async function poll() {
  if (busy || !page) return; // the round in flight schedules the next one
  if (document.hidden) {
    setLive(true, "paused", "tab hidden");
    schedule(POLL_MS);
    return;
  }
  const mine = generation;
  busy = true;
  try {
    await page.refresh();
    if (mine === generation) setLive(true, "live", clock(Date.now()));
  } catch (error) {
    if (mine === generation && !(error instanceof ApiError && error.status === 401)) { // a 401 shows the login
      setLive(false, error instanceof ApiError && error.status === 0 ? "connection lost · retrying" : "error · retrying");
      if (page && page.problem) page.problem(error);
    }
  } finally {
    busy = false;
  }
  schedule(mine === generation ? POLL_MS : 0);
}

// --- shared pieces ------------------------------------------------------------------------------------------

/** Each revision's share of the traffic in percent, as the proxy splits it (control/rules/routing.py):
 * the served routes (running, started, active, weight above 0, ready; every unhealthy one when failing open),
 * by the deployment's revision weights when it has them (a canary), else by the routes' weights. */
function trafficSplit(d) {
  const candidates = d.routes.filter((r) => r.status === "running" && r.address && !r.failed
    && r.traffic === "active" && r.traffic_ratio > 0);
  let served = candidates.filter((r) => r.ready);
  if (!served.length && d.fail_open) served = candidates.filter((r) => r.health === "unhealthy");
  const weight = {};
  if (d.weights) {
    for (const [key, value] of Object.entries(d.weights)) {
      const n = Number(key.replace(/^r/, ""));
      if (served.some((r) => r.revision === n)) weight[n] = Number(value);
    }
  } else {
    for (const r of served) weight[r.revision] = (weight[r.revision] || 0) + r.traffic_ratio;
  }
  const total = Object.values(weight).reduce((a, b) => a + b, 0);
  if (!total) return [];
  return Object.entries(weight).filter(([, w]) => w > 0).map(([n, w]) => [Number(n), (w / total) * 100])
    .sort((a, b) => a[0] - b[0]);
}

function splitBar(split) {
  const bar = h("span", {class: "split-bar", "aria-hidden": "true"});
  for (const [n, pct] of split) {
    const part = h("span", {class: "split-part"});
    part.style.width = `${pct}%`;
    part.style.background = revisionColour(n);
    bar.append(part);
  }
  const label = split.length ? split.map(([n, pct]) => `r${n} ${Math.round(pct)}%`).join(" · ") : "nothing serves";
  return h("span", {class: "split"}, bar, h("span", {class: "split-words"}, label));
}

/** Ready routes of the serving revision over the desired count; during a rollout, the new revision's too. */
function readyCount(d) {
  const cls = d.ready_replicas >= d.replicas ? "good" : "warn";
  const serving = h("span", {class: `count ${cls}`, title: "ready routes of the serving revision / desired"},
    `${d.ready_replicas}/${d.replicas}`);
  if (!d.deploying_revision || d.deploying_revision === d.current_revision) return serving;
  const next = d.routes.filter((r) => r.revision === d.deploying_revision && r.ready).length;
  return h("span", {class: "counts"}, serving,
    h("span", {class: "muted", title: `ready routes of revision ${d.deploying_revision}`}, ` r${d.deploying_revision}: ${next}`));
}

function errorLine(error) {
  return h("p", {class: "error", role: "alert"}, error instanceof ApiError ? error.words : String(error));
}

function section(title, ...children) {
  return h("section", {class: "panel"}, h("h2", {}, title), ...children);
}

// --- deployments ---------------------------------------------------------------------------------------------

class DeploymentsPage {
  constructor() {
    this.body = h("tbody");
    this.note = h("p", {class: "note", role: "status"});
    this.rows = new Map();
    this.events = new Map(); // name -> {event, at, version, lifecycle}: the last event and when it was asked
    const head = ["Deployment", "Lifecycle", "Serving", "Deploying", "Sub-step", "Ready", "Traffic", "Last event"];
    this.root = h("div", {class: "page deployments"},
      h("h1", {}, "Deployments"),
      this.note,
      h("div", {class: "table-wrap"},
        h("table", {class: "deployments-table", id: "deployments"},
          h("thead", {}, h("tr", {}, head.map((t) => h("th", {scope: "col"}, t)))),
          this.body)));
    document.title = "Deployments · rollwise";
  }

  crumbs() {
    return [h("span", {}, "Deployments")];
  }

  problem(error) {
    put(this.note, `error:${error.words}`, () => errorLine(error));
  }

  /** The last history event of each deployment: asked every round while it changes or rolls out, every
   * IDLE_MS otherwise (a page of many quiet deployments costs few requests). */
  async lastEvents(deployments) {
    const now = Date.now();
    await Promise.all(deployments.map(async (d) => {
      const known = this.events.get(d.name);
      if (known && known.version === d.version && d.lifecycle === "ready" && known.lifecycle === "ready"
        && now - known.at < IDLE_MS) return;
      const got = await settle(get(`${dep(d.name)}/history?limit=1`));
      if (got.value) this.events.set(d.name, {event: got.value[0] || null, at: now, version: d.version, lifecycle: d.lifecycle});
    }));
    return deployments.map((d) => (this.events.get(d.name) || {event: null}).event);
  }

  async refresh() {
    const {data: deployments, headers} = await call("GET", "/v1/deployments", {whole: true});
    const more = headers.get("X-Next-Cursor");
    const last = await this.lastEvents(deployments);
    const now = Date.now();
    const count = `${deployments.length} deployment${deployments.length === 1 ? "" : "s"}`;
    put(this.note, `n:${deployments.length}:${Boolean(more)}`, () => !deployments.length
      ? ["No deployments yet: create one with ", h("code", {}, "rollwise apply -f FILE"), "."]
      : more ? [`The first ${count} (the API's first page); `, h("code", {}, "rollwise get"), " lists them all."]
        : count);
    const seen = new Set();
    deployments.forEach((d, i) => {
      seen.add(d.name);
      let row = this.rows.get(d.name);
      if (!row) {
        row = h("tr", {dataset: {name: d.name}});
        this.rows.set(d.name, row);
      }
      if (this.body.children[i] !== row) this.body.insertBefore(row, this.body.children[i] || null);
      const event = last[i];
      const split = trafficSplit(d);
      const key = JSON.stringify([d.lifecycle, d.current_revision, d.deploying_revision, d.sub_step, d.paused,
        d.ready_replicas, d.replicas, d.routes.map((r) => [r.revision, r.ready]), split, event && [event.id, event.attempts], d.degraded,
        event && ago(parseTime(event.updated_at), now)]);
      put(row, key, () => [
        h("td", {"data-label": "Deployment"},
          h("a", {href: `#/d/${encodeURIComponent(d.name)}`, class: "name"}, d.name),
          d.degraded ? h("span", {class: "badge warn small", title: d.degraded}, h("span", {class: "icon"}, "!"), " degraded") : null),
        h("td", {"data-label": "Lifecycle", class: "lifecycle"}, badge(d.lifecycle)),
        h("td", {"data-label": "Serving"}, d.current_revision ? revisionTag(d.current_revision) : "–"),
        h("td", {"data-label": "Deploying"}, d.deploying_revision ? revisionTag(d.deploying_revision) : "–"),
        h("td", {"data-label": "Sub-step", class: "sub-step"}, d.sub_step ? badge(d.paused && d.lifecycle === "deploying" ? "paused" : d.sub_step) : "–"),
        h("td", {"data-label": "Ready", class: "ready-count"}, readyCount(d)),
        h("td", {"data-label": "Traffic"}, splitBar(split)),
        h("td", {"data-label": "Last event", class: "last-event", title: event ? event.message : null}, event
          ? [h("span", {class: "muted when", title: event.updated_at}, ago(parseTime(event.updated_at), now)), " ",
            h("span", {class: "message"}, event.message)]
          : "–"),
      ]);
    });
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) {
        row.remove();
        this.rows.delete(name);
        this.events.delete(name);
      }
    }
  }
}

// --- one deployment -----------------------------------------------------------------------------------------

class DeploymentPage {
  constructor(name, rollout) {
    this.name = name;
    this.chosen = rollout; // a rollout the person picked (the URL says it), else the newest is shown
    this.timelines = new Map(); // finished rollouts' timelines: they no longer change
    this.pending = null; // the verb being sent
    this.armed = null; // the verb waiting for its confirming second click
    this.outcome = null; // what the last verb got
    this.answers = new Map(); // key -> {result, version, at}: the last answer of each part of the page

    this.title = h("h1", {}, name, " ", h("span", {class: "title-badge"}));
    this.facts = h("dl", {class: "facts"});
    this.condition = h("p", {class: "condition", role: "status"});
    this.verbs = h("div", {class: "verbs", role: "group", "aria-label": "Operator verbs"});
    this.verbResult = h("p", {class: "verb-result", role: "status", "aria-live": "polite"});
    this.plan = h("div", {class: "plan"});
    this.rolloutPick = h("select", {id: "rollout-select", "aria-label": "Rollout",
      on: {change: () => this.pick(Number(this.rolloutPick.value))}});
    this.chartCaption = h("p", {class: "chart-caption muted"});
    this.chartBox = h("div", {class: "chart-box", id: "timeline"});
    this.chartBox.style.height = `${HEIGHT}px`;
    this.legend = h("div", {class: "legend-box"});
    this.events = h("ol", {class: "events"});
    this.routes = h("div", {class: "table-wrap"});
    this.revisions = h("div", {class: "table-wrap"});
    this.history = h("div", {class: "table-wrap history"});
    this.note = h("div", {class: "page-note"});

    this.root = h("div", {class: "page deployment"},
      this.title, this.note,
      h("div", {class: "top-grid"},
        section("State", this.facts, this.condition),
        section("Now", this.verbs, this.verbResult, h("h3", {}, "Next cycle"), this.plan)),
      section("Rollout timeline",
        h("div", {class: "chart-head"}, this.rolloutPick, this.chartCaption),
        this.chartBox, this.legend, this.events),
      section("Routes", this.routes),
      section("Revisions", this.revisions),
      section("History", this.history));
    document.title = `${name} · rollwise`;
    this.width = 0;
    this.resize = new ResizeObserver(() => {
      if (this.chartBox.clientWidth !== this.width && this.lastTimeline) this.drawChart(this.lastTimeline, true);
    });
    this.resize.observe(this.chartBox);
  }

  crumbs() {
    return [h("a", {href: "#/"}, "Deployments"), h("span", {class: "sep", "aria-hidden": "true"}, "›"),
      h("span", {}, this.name)];
  }

  problem(error) {
    put(this.note, `error:${error.words}`, () => errorLine(error));
  }

  pick(id) {
    this.chosen = id;
    history.replaceState(null, "", `#/d/${encodeURIComponent(this.name)}/rollout/${id}`);
    schedule(0);
  }

  async refresh() {
    const base = dep(this.name);
    let d;
    try {
      d = await get(base);
    } catch (error) {
      if (error.status === 404) {
        // The deployment is gone (or never was): say so as the API did, keep asking.
        put(this.note, `error:${error.words}`, () => errorLine(error));
        return;
      }
      throw error;
    }
    put(this.note, "ok", () => []);
    // The deployment every round; the plan and the history every round while it moves; what changes only
    // with the deployment's version (verbs, revisions, rollouts) when the version changed; all of them at
    // least every IDLE_MS. A quiet deployment's page costs one request a second.
    const moving = d.lifecycle !== "ready" ? 0 : IDLE_MS;
    const [actions, plan, revisions, historyRows, rollouts, capacity] = await Promise.all([
      this.cached("actions", `${base}/actions`, d, IDLE_MS),
      this.cached("plan", `${base}/plan`, d, moving),
      this.cached("revisions", `${base}/revisions`, d, IDLE_MS),
      this.cached("history", `${base}/history?limit=${HISTORY_ROWS}`, d, moving),
      this.cached("rollouts", `${base}/rollouts`, d, IDLE_MS),
      this.cached("capacity", "/v1/capacity", d, IDLE_MS),
    ]);
    document.title = `${d.name} · ${words(d.lifecycle)} · rollwise`;
    this.showFacts(d);
    this.showVerbs(actions);
    this.showPlan(plan, d);
    const declared = capacity.value && capacity.value.nodes.some((n) => Object.keys(n.total).length > 0);
    this.showRoutes(d, declared || d.routes.some((r) => Object.keys(r.devices || {}).length));
    if (revisions.value) this.showRevisions(d, revisions.value);
    if (historyRows.value) this.showHistory(historyRows.value);
    await this.showTimeline(rollouts);
  }

  /** `path`'s answer as a settle() result, asked again when the deployment's version changed or the last
   * answer is `every` ms old (0: every round). */
  async cached(key, path, d, every) {
    const known = this.answers.get(key);
    const now = Date.now();
    if (known && known.version === d.version && now - known.at < every) return known.result;
    const result = await settle(get(path));
    this.answers.set(key, {result, version: d.version, at: now});
    return result;
  }

  showFacts(d) {
    const title = this.title.querySelector(".title-badge");
    put(title, `${d.lifecycle}`, () => badge(d.lifecycle));
    const split = trafficSplit(d);
    const subStep = d.lifecycle === "deploying" && d.paused ? "paused" : d.sub_step;
    const flags = [d.paused && "paused", d.abort_requested && "abort requested", d.promote_requested && "promote requested",
      d.mode === "rolling_back" && "rolling back"].filter(Boolean);
    const rows = [
      ["Lifecycle", badge(d.lifecycle), "lifecycle"],
      ["Strategy", d.policy ? words(d.policy.strategy).replace("blue green", "blue-green") : `unreadable: ${d.policy_error}`, "strategy"],
      ["Serving", d.current_revision ? revisionTag(d.current_revision) : "–", "serving"],
      ["Deploying", d.deploying_revision ? revisionTag(d.deploying_revision) : "–", "deploying"],
      ["Sub-step", subStep ? badge(subStep) : "–", "sub-step"],
      ["Ready", readyCount(d), "ready"],
      ["Traffic", splitBar(split), "traffic"],
      ["Operator requests", flags.length ? flags.join(", ") : "none", "flags"],
      ["Rollout", d.rollout_started_at ? `started ${clock(parseTime(d.rollout_started_at))}${d.rollback_reason
        ? `, rollback: ${words(d.rollback_reason)}` : ""}` : "none yet", "rollout"],
    ];
    put(this.facts, JSON.stringify([d.lifecycle, d.policy && d.policy.strategy, d.policy_error, d.current_revision,
      d.deploying_revision, subStep, d.ready_replicas, d.replicas, d.routes.map((r) => [r.revision, r.ready]), split, flags, d.rollout_started_at, d.rollback_reason]),
    () => rows.map(([term, value, id]) => h("div", {class: "fact", dataset: {fact: id}},
      h("dt", {}, term), h("dd", {id: `fact-${id}`}, value))));
    const problem = d.fail_open ? `failing open: every serving route is unhealthy, the proxy sends requests to all of them`
      : d.degraded || null;
    const lines = [problem, d.last_error && `last error: ${d.last_error}`].filter(Boolean);
    put(this.condition, JSON.stringify(lines), () => lines.length
      ? lines.map((l) => h("span", {class: "badge warn block"}, h("span", {class: "icon", "aria-hidden": "true"}, "!"), " ", l))
      : h("span", {class: "badge good"}, h("span", {class: "icon", "aria-hidden": "true"}, "✓"), " at full strength, no error"));
  }

  showVerbs(actions) {
    this.lastActions = actions;
    if (actions.error) {
      put(this.verbs, `error:${actions.error.words}`, () => errorLine(actions.error));
      return;
    }
    const offered = actions.value.actions;
    if (this.armed && !offered.includes(this.armed)) this.armed = null;
    put(this.verbs, JSON.stringify([offered, this.pending, this.armed]), () => {
      if (!offered.length) return h("span", {class: "muted"}, "No operator verb applies now.");
      return VERBS.filter(([verb]) => offered.includes(verb)).map(([verb, label, help]) => h("button", {
        type: "button", class: `verb verb-${verb}${CONFIRM.has(verb) ? " danger" : ""}${this.armed === verb ? " armed" : ""}`,
        dataset: {verb}, title: help, disabled: this.pending !== null,
        on: {click: () => this.send(verb)},
      }, this.pending === verb ? `${label}…` : this.armed === verb ? `Confirm ${label.toLowerCase()}` : label));
    });
    put(this.verbResult, JSON.stringify(this.outcome), () => this.outcome
      ? h("span", {class: this.outcome.ok ? "ok" : "error", role: this.outcome.ok ? null : "alert"}, this.outcome.words)
      : "");
  }

  /** A press: abort and undo first ask for a second press within 5 s; then the verb's POST, its answer
   * shown as the API gave it, and a new round at once. */
  async send(verb) {
    if (this.pending) return;
    if (CONFIRM.has(verb) && this.armed !== verb) {
      this.armed = verb;
      this.outcome = {ok: true, words: `Press “Confirm ${verb}” to ${verb}.`};
      this.showVerbs(this.lastActions);
      setTimeout(() => {
        if (this.armed !== verb) return;
        this.armed = null;
        this.outcome = null;
        this.showVerbs(this.lastActions);
      }, 5000);
      return;
    }
    this.armed = null;
    this.pending = verb;
    this.showVerbs(this.lastActions);
    try {
      await call("POST", `${dep(this.name)}/${verb}`);
      this.outcome = {ok: true, words: `${clock(Date.now())} ${verb}: accepted (202), the server carries it out`};
    } catch (error) {
      this.outcome = {ok: false, words: `${clock(Date.now())} ${verb}: ${error instanceof ApiError ? error.words : error}`};
    } finally {
      this.pending = null;
      this.showVerbs(this.lastActions);
    }
    schedule(0);
  }

  showPlan(plan, d) {
    if (plan.error) {
      put(this.plan, `error:${plan.error.words}`, () => h("p", {class: "muted"}, plan.error.words));
      return;
    }
    const p = plan.value;
    const parts = [];
    if (p.create.length) {
      const by = {};
      for (const c of p.create) by[c.revision] = (by[c.revision] || 0) + 1;
      parts.push(`start ${Object.entries(by).map(([n, k]) => `${k} route${k === 1 ? "" : "s"} of r${n}`).join(" and ")}`);
    }
    if (p.terminate.length) parts.push(`stop ${p.terminate.length} route${p.terminate.length === 1 ? "" : "s"}`);
    if (p.traffic.length) parts.push(`change the traffic of ${p.traffic.length} route${p.traffic.length === 1 ? "" : "s"}`);
    const then = parts.length ? `then: ${parts.join(", ")}` : "no route change";
    // Outside a rollout the plan is the replica reconciler's: a rollback-mode update towards the serving
    // revision (docs/strategies.md), whose words speak of rolling back; say what it keeps instead.
    const rollout = d.lifecycle === "deploying";
    put(this.plan, JSON.stringify([p, rollout, d.current_revision, d.replicas]), () => rollout ? [
      h("p", {class: "plan-reason", id: "plan-reason"}, p.reason),
      h("p", {class: "muted"}, badge(p.sub_step), " ", p.mode === "rolling_back" ? "rolling back; " : "", then),
    ] : [
      h("p", {class: "plan-reason", id: "plan-reason"}, `No rollout. ${p.reason}`),
      h("p", {class: "muted"}, then),
    ]);
  }

  showRoutes(d, devices) {
    const routes = [...d.routes].sort((a, b) => a.revision - b.revision || a.created_at.localeCompare(b.created_at));
    put(this.routes, JSON.stringify([routes, devices]), () => {
      if (!routes.length) return h("p", {class: "muted"}, "No route.");
      const head = ["Route", "Revision", "Status", "Health", "Traffic", "PID / node", "Address", devices && "Devices", "Detail"]
        .filter(Boolean);
      return h("table", {class: "routes-table", id: "routes"},
        h("thead", {}, h("tr", {}, head.map((t) => h("th", {scope: "col"}, t)))),
        h("tbody", {}, routes.map((r) => h("tr", {dataset: {route: r.id}},
          h("td", {"data-label": "Route"}, h("code", {}, r.id)),
          h("td", {"data-label": "Revision"}, revisionTag(r.revision)),
          h("td", {"data-label": "Status"}, badge(r.failed && r.status !== "failed_to_start" ? "failed_to_start" : r.status)),
          h("td", {"data-label": "Health"}, badge(r.health)),
          h("td", {"data-label": "Traffic"}, badge(r.traffic), r.traffic === "active" ? ` ${Number(r.traffic_ratio).toFixed(2)}` : ""),
          h("td", {"data-label": "PID / node", class: "num"}, `${r.pid ?? "–"}${r.node ? ` / ${r.node}` : ""}`),
          h("td", {"data-label": "Address", class: "num"}, r.address ?? "–"),
          devices ? h("td", {"data-label": "Devices"}, Object.entries(r.devices || {})
            .map(([k, v]) => `${k} ${v.join(",")}`).join("; ") || "–") : null,
          h("td", {"data-label": "Detail", class: "detail"}, r.detail ?? "")))));
    });
  }

  showRevisions(d, revisions) {
    const shown = [...revisions].reverse();
    const alive = {};
    for (const r of d.routes) alive[r.revision] = (alive[r.revision] || 0) + 1;
    put(this.revisions, JSON.stringify([shown.map((r) => r.number), d.current_revision, d.deploying_revision, alive]), () =>
      h("table", {class: "revisions-table", id: "revisions"},
        h("thead", {}, h("tr", {}, ["Revision", "Label", "Role", "Routes", "Command", "Health check", "Resources", "Created"]
          .map((t) => h("th", {scope: "col"}, t)))),
        h("tbody", {}, shown.map((r) => h("tr", {},
          h("td", {"data-label": "Revision"}, revisionTag(r.number)),
          h("td", {"data-label": "Label"}, r.label ?? "–"),
          h("td", {"data-label": "Role"}, r.number === d.current_revision ? h("span", {class: "badge good"}, h("span", {class: "icon"}, "●"), " serving")
            : r.number === d.deploying_revision ? h("span", {class: "badge info"}, h("span", {class: "icon"}, "▶"), " deploying") : ""),
          h("td", {"data-label": "Routes", class: "num"}, alive[r.number] || 0),
          h("td", {"data-label": "Command", class: "command"}, h("code", {title: r.command.join(" ")}, r.command.join(" "))),
          h("td", {"data-label": "Health check"}, r.health_check ? r.health_check.path : "listening"),
          h("td", {"data-label": "Resources"}, Object.entries(r.resources || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–"),
          h("td", {"data-label": "Created", class: "num"}, clock(parseTime(r.created_at))))))));
  }

  showHistory(rows) {
    const shown = [...rows].reverse();
    put(this.history, JSON.stringify(shown.map((r) => [r.id, r.attempts])), () =>
      h("table", {class: "history-table", id: "history"},
        h("thead", {}, h("tr", {}, ["Time", "Result", "Sub-step", "Revisions", "What happened"].map((t) => h("th", {scope: "col"}, t)))),
        h("tbody", {}, shown.map((r) => h("tr", {},
          h("td", {"data-label": "Time", class: "num", title: r.updated_at}, clock(parseTime(r.updated_at))),
          h("td", {"data-label": "Result"}, badge(r.result)),
          h("td", {"data-label": "Sub-step"}, r.sub_step ? words(r.sub_step) : "–"),
          h("td", {"data-label": "Revisions", class: "num"}, r.to_revision
            ? `${r.from_revision ? `r${r.from_revision} → ` : ""}r${r.to_revision}` : "–"),
          h("td", {"data-label": "What happened", class: "message"}, r.message,
            r.attempts > 1 ? h("span", {class: "muted"}, ` (×${r.attempts})`) : null,
            r.error ? h("span", {class: "error"}, ` ${r.error}`) : null))))));
  }

  async showTimeline(rollouts) {
    if (rollouts.error) {
      const words = rollouts.error.status === 404 || rollouts.error.status === 405
        ? `This server keeps no rollout timeline (${rollouts.error.words}).` : rollouts.error.words;
      put(this.chartCaption, `error:${words}`, () => words);
      put(this.rolloutPick, "none", () => []);
      this.rolloutPick.hidden = true;
      return;
    }
    const list = rollouts.value;
    this.rolloutPick.hidden = list.length === 0;
    if (!list.length) {
      put(this.chartCaption, "none", () => "No rollout yet: the chart appears when the first one starts.");
      put(this.chartBox, "none", () => h("p", {class: "muted empty-chart"}, "No rollout yet."));
      put(this.legend, "none", () => []);
      put(this.events, "none", () => []);
      return;
    }
    const chosen = list.find((r) => r.id === this.chosen) || list[list.length - 1];
    put(this.rolloutPick, JSON.stringify(list.map((r) => [r.id, r.outcome])), () => [...list].reverse().map((r) =>
      h("option", {value: r.id}, `#${r.id} ${r.from_revision ? `r${r.from_revision} → ` : ""}r${r.to_revision}, `
        + `${words(r.strategy).replace("blue green", "blue-green")}, ${words(r.outcome)}, ${clock(parseTime(r.started_at))}`)));
    if (this.rolloutPick.value !== String(chosen.id)) this.rolloutPick.value = String(chosen.id);

    let timeline = this.timelines.get(chosen.id);
    if (!timeline) {
      const got = await settle(get(`${dep(this.name)}/rollouts/${chosen.id}/timeline`));
      if (got.error) {
        put(this.chartCaption, `error:${got.error.words}`, () => got.error.words);
        return;
      }
      timeline = got.value;
      if (timeline.outcome !== "in_progress") this.timelines.set(chosen.id, timeline);
    }
    const start = parseTime(timeline.started_at);
    const end = parseTime(timeline.ended_at);
    const caption = `${words(timeline.strategy).replace("blue green", "blue-green")} rollout `
      + `${timeline.from_revision ? `r${timeline.from_revision} → ` : ""}r${timeline.to_revision}: `
      + `${words(timeline.outcome)}, started ${clock(start)}`
      + (end ? `, ${seconds(end - start)}` : `, ${seconds(Date.now() - start)} so far`);
    put(this.chartCaption, caption, () => caption);
    this.drawChart(timeline, false);
    put(this.legend, JSON.stringify([timeline.from_revision, timeline.to_revision, timeline.events.map((e) => e.kind),
      timeline.samples.length ? Object.keys(timeline.samples[timeline.samples.length - 1].ready) : []]),
    () => timelineLegend(timeline));
    put(this.events, JSON.stringify(timeline.events), () => [...timeline.events].reverse().map((e) => {
      const [glyph, name] = EVENT_KINDS[e.kind] || ["·", e.kind];
      return h("li", {class: `event kind-${e.kind}`},
        h("span", {class: "num muted"}, clock(parseTime(e.at))), " ",
        h("span", {class: "glyph", "aria-hidden": "true"}, glyph), " ",
        h("strong", {}, name), " ", e.message);
    }));
  }

  drawChart(timeline, force) {
    this.lastTimeline = timeline;
    const width = this.chartBox.clientWidth;
    const live = timeline.outcome === "in_progress";
    // A live chart is redrawn every poll (its time axis grows); a finished one when its data or width change.
    const key = `${timeline.id}:${width}:${timeline.samples.length}:${timeline.events.length}:${live ? Date.now() : timeline.ended_at}`;
    if (!force && this.chartBox.dataset.key === key) return;
    this.width = width;
    this.chartBox.dataset.key = key;
    this.chartBox.replaceChildren(drawTimeline(timeline, {width, now: Date.now()}));
  }
}

// --- start -------------------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", login);
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("Signed out.");
});
window.addEventListener("hashchange", () => route());
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) schedule(0);
});
route();
