/* The dashboard: polls the API every 2 s and shows the stages, the account and the topics.
 *
 * Everything it shows comes from the existing API (docs/dashboard.md says which route gives
 * which figure). Everything from the API goes into the page as text (textContent and
 * attribute values), never as markup: topic ids are chosen by API callers. The send rate
 * is measured here, from successive polls of each topic's `sent` count. No framework, no
 * build step, no inline script (the page's Content-Security-Policy forbids it).
 */
"use strict";

(function () {
  const POLL_MS = 2000; // never poll more often than this
  const MAX_DELAY_MS = 30000; // back-off ceiling after failures or a 429
  const PAGE_SIZE = 20;
  const HISTORY_S = 300; // the sparklines span the last five minutes
  const RATE_WINDOW_S = 10; // "now" is the average over the last ten seconds
  const SPARK_MIN_SPAN_S = 30;
  const STORE_KEY = "ses-sender.dashboard.credential";
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The bar's segments, left to right, and the counts listed under it.
  const SEGMENTS = ["sent", "failed", "cancelled", "suppressed", "unknown", "paused", "sending", "pending"];
  const COUNTS = ["pending", "sending", "sent", "failed", "paused", "cancelled", "suppressed"];
  // Each rate is a share of `sent`.
  const RATES = [
    ["delivered", "delivery"],
    ["bounced", "bounce"],
    ["complained", "complaint"],
    ["opened", "open"],
    ["clicked", "click"],
  ];

  const $ = (id) => document.getElementById(id);

  const state = {
    credential: null, // {kind: "bearer" | "api-key", value}
    authOff: false, // the server answered data without a credential
    authKnown: false, // whether it needs one is known (a 200 or a 401 without one)
    offset: 0,
    delayMs: POLL_MS,
    timer: null,
    polling: false,
    again: false, // a refresh was asked for while a poll ran
    limitedNotice: false, // the notice says we are over API_RATE_LIMIT
    lastStartMs: 0,
    lastPollT: null, // seconds, when the topics were last read
    meters: new Map(), // topic id -> {t, sent, samples}
    total: [], // samples of the shown topics' summed sends
    cards: new Map(), // topic id -> the card's elements
  };

  class HttpError extends Error {
    constructor(status, message, retryAfterS) {
      super(message);
      this.status = status;
      this.retryAfterS = retryAfterS;
    }
  }

  // ---- the API ----

  function authHeaders() {
    const c = state.credential;
    if (!c) return {};
    return c.kind === "api-key" ? { "X-API-KEY": c.value } : { Authorization: "Bearer " + c.value };
  }

  async function call(method, path, withAuth = true) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: withAuth ? authHeaders() : {},
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
    } catch (error) {
      throw new HttpError(0, "the server does not answer", 0);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    // /ready answers 503 with the same body when a stage is down: that is data, not a failure.
    if (response.ok || (path === "/ready" && body)) return body;
    const message = body && typeof body.error === "string" ? body.error : "HTTP " + response.status;
    throw new HttpError(response.status, message, Number(response.headers.get("Retry-After")) || 0);
  }

  const topicPath = (id) => "/v1/topics/" + encodeURIComponent(id);

  // ---- formatting ----

  const isNumber = (x) => typeof x === "number" && Number.isFinite(x);
  const count = (n) => (isNumber(n) ? Math.round(n).toLocaleString() : "—");

  function percent(fraction) {
    if (!isNumber(fraction)) return "—";
    const p = fraction * 100;
    return (p !== 0 && p < 1 ? p.toFixed(2) : p.toFixed(1)) + "%";
  }

  function perSecond(rate) {
    if (!isNumber(rate)) return "—";
    return rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString();
  }

  function shorten(text, max = 80) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function notify(message, isError = false) {
    const notice = $("notice");
    notice.textContent = message;
    notice.classList.toggle("error", isError);
    notice.hidden = !message;
  }

  // ---- the send rate, from successive polls ----

  function addSample(samples, sample) {
    samples.push(sample);
    while (samples.length && samples[0].t < sample.t - HISTORY_S) samples.shift();
  }

  function rateNow(samples) {
    let delta = 0;
    let dt = 0;
    for (let i = samples.length - 1; i >= 0 && dt < RATE_WINDOW_S; i--) {
      delta += samples[i].delta;
      dt += samples[i].dt;
    }
    return dt > 0 ? delta / dt : null;
  }

  /** Records a topic's sent count read at `t`; the recipients sent since the last read, or null. */
  function measure(id, sent, t) {
    const meter = state.meters.get(id) || { t: null, sent: 0, samples: [] };
    state.meters.set(id, meter);
    let delta = null;
    if (meter.t !== null && t > meter.t) {
      delta = Math.max(0, sent - meter.sent);
      addSample(meter.samples, { t, dt: t - meter.t, delta });
    }
    meter.t = t;
    meter.sent = sent;
    return delta;
  }

  /** A step chart of the samples' rates: each sample is a flat step over its interval. */
  function drawSpark(svg, samples) {
    const width = 120;
    const height = 28;
    const rates = samples.map((s) => (s.dt > 0 ? s.delta / s.dt : 0));
    const top = Math.max(1, ...rates);
    const end = samples.length ? samples[samples.length - 1].t : 0;
    const begin = samples.length ? samples[0].t - samples[0].dt : 0;
    // The chart fills up over the first half minute, then stretches to HISTORY_S and scrolls.
    const span = Math.min(HISTORY_S, Math.max(SPARK_MIN_SPAN_S, end - begin));
    const x = (t) => Math.max(0, width - ((end - t) / span) * width).toFixed(1);
    const y = (rate) => (height - 1 - (rate / top) * (height - 2)).toFixed(1);
    const steps = [];
    samples.forEach((s, i) => steps.push(x(s.t - s.dt) + "," + y(rates[i]), x(s.t) + "," + y(rates[i])));
    let title = svg.querySelector("title");
    if (!title) {
      title = document.createElementNS(SVG_NS, "title");
      svg.append(title, document.createElementNS(SVG_NS, "polygon"), document.createElementNS(SVG_NS, "polyline"));
    }
    const base = steps.length ? [x(begin) + "," + height, ...steps, x(end) + "," + height] : [];
    svg.querySelector("polygon").setAttribute("points", base.join(" "));
    svg.querySelector("polyline").setAttribute("points", steps.join(" "));
    const peak = perSecond(Math.max(0, ...rates));
    title.textContent = "sends per second over the last " + Math.round(span) + " s; peak " + peak + "/s";
  }

  // ---- health: GET /ready (public) ----

  function renderHealth(result) {
    const list = $("stages");
    const chips = [];
    const chip = (name, value, ok) => {
      const item = el("li", ok ? "chip ok" : "chip bad");
      item.append(el("strong", "", name + " "), el("span", "", value));
      chips.push(item);
    };
    if (result.status === "rejected") {
      chip("server", result.reason.message, false);
      $("health-detail").textContent = "";
    } else {
      const ready = result.value || {};
      for (const [name, stage] of Object.entries(ready.stages || {})) chip(name, String(stage), stage === "running");
      chip("database", String(ready.database), ready.database === "ok");
      const problems = Array.isArray(ready.problems) ? ready.problems.join("; ") : "";
      $("health-detail").textContent =
        "SES events: " + String(ready.ses_events) + (problems ? ". Problems: " + problems : "");
    }
    list.replaceChildren(...chips);
  }

  // ---- the account: GET /v1/account ----

  function renderQuota(account) {
    const q = account.quota;
    $("backend").textContent = String(account.backend);
    // The sender's own rate now (after cuts for throttling), and its ceiling when that differs.
    const sending = account.sending;
    $("send-limit").textContent = sending
      ? perSecond(sending.rate_limit_per_second) +
        (sending.rate_limit_per_second < sending.max_per_second ? " of " + perSecond(sending.max_per_second) : "")
      : "—";
    if (!q) {
      for (const id of ["quota-used", "quota-max", "quota-left", "rate-limit", "enforcement"]) $(id).textContent = "—";
      $("quota-bar").style.width = "0%";
      $("account-error").textContent = "No SES quota: " + String(account.quota_error || "unknown");
      return;
    }
    $("account-error").textContent = "";
    const unlimited = q.max_24_hour_send < 0;
    $("quota-used").textContent = count(q.sent_last_24_hours);
    $("quota-max").textContent = unlimited ? "unlimited" : count(q.max_24_hour_send);
    $("quota-left").textContent = unlimited ? "unlimited" : count(q.remaining);
    const share = !unlimited && q.max_24_hour_send > 0 ? q.sent_last_24_hours / q.max_24_hour_send : 0;
    $("quota-bar").style.width = Math.min(100, share * 100).toFixed(1) + "%";
    $("rate-limit").textContent = perSecond(q.max_send_rate);
    const enabled = q.sending_enabled === false ? ", sending disabled" : "";
    $("enforcement").textContent = String(q.enforcement_status || "unknown") + enabled;
  }

  function renderGuard(account) {
    const rates = account.rates || {};
    const guard = account.guard || {};
    $("bounce-rate").textContent = percent(rates.bounce_rate);
    $("complaint-rate").textContent = percent(rates.complaint_rate);
    $("bounce-limit").textContent = percent(guard.bounce_rate_limit);
    $("complaint-limit").textContent = percent(guard.complaint_rate_limit);
    $("reputation-sent").textContent = count(rates.sent);
    const holding = guard.state === "holding";
    const badge = $("guard-state");
    badge.textContent = holding ? "holding all sending" : String(guard.state || "—");
    badge.className = "badge " + (holding ? "badge-held" : "badge-sending");
    let reason = holding ? String(guard.reason) : "";
    if (!holding && guard.resumed_at) reason = "Resumed at " + String(guard.resumed_at);
    $("guard-reason").textContent = reason;
    $("account-resume").hidden = !holding;
  }

  function renderAccount(result) {
    if (result.status === "rejected") {
      $("account-error").textContent = "The account could not be read: " + result.reason.message;
      return;
    }
    renderQuota(result.value);
    renderGuard(result.value);
  }

  function renderRate() {
    $("rate-now").textContent = perSecond(rateNow(state.total));
    drawSpark($("rate-spark"), state.total);
  }

  // ---- topics: GET /v1/topics, then GET /v1/topics/{id} for each ----

  /** A <dl> of [key, label] pairs; its <dd> elements by key, marked data-<item>=key. */
  function figures(listClass, itemClass, pairs) {
    const list = el("dl", listClass);
    const values = {};
    for (const [key, label] of pairs) {
      const item = el("div", itemClass + " " + itemClass + "-" + key);
      values[key] = el("dd", "", "—");
      values[key].dataset[itemClass] = key;
      item.append(el("dt", "", label), values[key]);
      list.append(item);
    }
    return { list, values };
  }

  function makeSpark() {
    const spark = document.createElementNS(SVG_NS, "svg");
    spark.setAttribute("class", "spark");
    spark.setAttribute("viewBox", "0 0 120 28");
    spark.setAttribute("preserveAspectRatio", "none");
    spark.setAttribute("role", "img");
    return spark;
  }

  function makeActions(id) {
    const actions = el("div", "actions");
    const buttons = {};
    for (const kind of Object.keys(ACTIONS)) {
      const button = el("button", "action action-" + kind, kind[0].toUpperCase() + kind.slice(1));
      button.type = "button";
      button.addEventListener("click", () => act(kind, id, button));
      actions.append((buttons[kind] = button));
    }
    return { actions, buttons };
  }

  /** A topic's card: built once, then updated in place at each poll (so clicks are never lost). */
  function makeCard(id) {
    const card = el("article", "topic");
    card.dataset.topicId = id;
    const head = el("header", "topic-head");
    const name = el("h3", "topic-id", id);
    name.title = id;
    const badge = el("span", "badge");
    const total = el("span", "muted small");
    head.append(name, badge, total);
    const bar = el("div", "bar");
    const segments = {};
    for (const key of SEGMENTS) bar.append((segments[key] = el("div", "seg seg-" + key)));
    const counts = figures("counts", "count", COUNTS.map((key) => [key, key]));
    const rates = figures("rates", "rate", RATES);
    const speed = el("div", "speed");
    const speedValue = el("span", "speed-value", "—");
    const spark = makeSpark();
    speed.append(speedValue, el("span", "muted small", " sent/s, last " + RATE_WINDOW_S + " s"), spark);
    const reason = el("p", "reason small");
    const error = el("p", "error small");
    const { actions, buttons } = makeActions(id);
    card.append(head, bar, counts.list, rates.list, speed, reason, error, actions);
    const countValues = counts.values;
    const rateValues = rates.values;
    return { card, badge, total, segments, countValues, rateValues, speedValue, spark, reason, error, buttons };
  }

  function phase(topic, rate) {
    if (topic.paused_reason) return ["held", "held by the guard"];
    if (topic.paused > 0) return ["paused", "paused"];
    if (topic.sending > 0 || rate > 0) return ["sending", "sending"];
    if (topic.pending > 0) return ["waiting", "waiting"];
    return ["done", "done"];
  }

  function updateCard(card, topic, samples) {
    const rate = rateNow(samples);
    const [kind, label] = phase(topic, rate || 0);
    card.badge.textContent = label;
    card.badge.className = "badge badge-" + kind;
    card.total.textContent = count(topic.total) + " recipients";
    const total = topic.total > 0 ? topic.total : 1;
    for (const key of SEGMENTS) {
      const n = isNumber(topic[key]) ? topic[key] : 0;
      card.segments[key].style.width = ((n / total) * 100).toFixed(2) + "%";
      card.segments[key].title = key + ": " + count(n);
    }
    for (const key of COUNTS) card.countValues[key].textContent = count(topic[key]);
    for (const [key] of RATES) {
      const value = card.rateValues[key];
      value.textContent = topic.sent > 0 ? percent(topic[key] / topic.sent) : "—";
      value.title = count(topic[key]) + " of " + count(topic.sent) + " sent";
    }
    card.speedValue.textContent = perSecond(rate);
    drawSpark(card.spark, samples);
    card.reason.textContent = topic.paused_reason ? String(topic.paused_reason) : "";
    card.error.textContent = "";
    const unsent = topic.pending + topic.sending;
    card.buttons.pause.disabled = !(unsent > 0);
    card.buttons.resume.disabled = !(topic.paused > 0);
    card.buttons.cancel.disabled = !(unsent + topic.paused > 0);
  }

  function placeCards(ids) {
    const container = $("topics");
    ids.forEach((id, i) => {
      const node = state.cards.get(id).card;
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    });
    for (const [id, card] of state.cards) {
      if (!ids.includes(id)) {
        card.card.remove();
        state.cards.delete(id);
        state.meters.delete(id);
      }
    }
  }

  function renderTopics(listing, details, t) {
    const ids = listing.topics.map((summary) => String(summary.topic_id));
    let delta = 0;
    let measured = false;
    ids.forEach((id, i) => {
      if (!state.cards.has(id)) state.cards.set(id, makeCard(id));
      const card = state.cards.get(id);
      const detail = details[i];
      if (detail.status === "rejected") {
        card.error.textContent = "Could not be read: " + detail.reason.message;
        return;
      }
      const sent = measure(id, detail.value.sent, t);
      if (sent !== null) {
        delta += sent;
        measured = true;
      }
      updateCard(card, detail.value, state.meters.get(id).samples);
    });
    placeCards(ids);
    if (measured && state.lastPollT !== null) addSample(state.total, { t, dt: t - state.lastPollT, delta });
    state.lastPollT = t;
    $("topics-empty").hidden = ids.length > 0 || state.offset > 0;
    const first = ids.length ? state.offset + 1 : state.offset;
    $("page-info").textContent = "(" + first + "–" + (state.offset + ids.length) + ", most recently posted first)";
    $("newer").disabled = state.offset === 0;
    $("older").disabled = ids.length < PAGE_SIZE;
  }

  async function readTopics() {
    const t = performance.now() / 1000;
    const listing = await call("GET", "/v1/topics?limit=" + PAGE_SIZE + "&offset=" + state.offset);
    const details = await Promise.allSettled(
      listing.topics.map((summary) => call("GET", topicPath(String(summary.topic_id)))),
    );
    const refused = details.find((d) => d.status === "rejected" && d.reason.status === 401);
    if (refused) throw refused.reason;
    return { listing, details, t };
  }

  // ---- actions: pause, resume, cancel (each confirmed first) ----

  const ACTIONS = {
    pause: {
      method: "POST",
      path: (id) => topicPath(id) + "/pause",
      ask: (id) => "Pause topic \u201c" + shorten(id) + "\u201d?\n\nIts unsent recipients are kept; Resume sends them.",
      done: (id, answer) => "Paused " + count(answer.paused) + " recipients of \u201c" + shorten(id) + "\u201d.",
    },
    resume: {
      method: "POST",
      path: (id) => topicPath(id) + "/resume",
      ask: (id) => "Resume topic \u201c" + shorten(id) + "\u201d?\n\nIts paused recipients go back in the queue.",
      done: (id, answer) => "Resumed " + count(answer.resumed) + " recipients of \u201c" + shorten(id) + "\u201d.",
    },
    cancel: {
      method: "DELETE",
      path: (id) => topicPath(id),
      ask: (id) =>
        "Cancel topic \u201c" + shorten(id) + "\u201d?\n\nEvery recipient not yet handed to SES is cancelled. " +
        "This cannot be undone.",
      done: (id, answer) => "Cancelled " + count(answer.cancelled) + " recipients of \u201c" + shorten(id) + "\u201d.",
    },
  };

  async function act(kind, id, button) {
    const action = ACTIONS[kind];
    if (!window.confirm(action.ask(id))) return;
    button.disabled = true;
    try {
      notify(action.done(id, await call(action.method, action.path(id))));
    } catch (error) {
      if (error.status === 401) return signOut("The server refused the credential: " + error.message);
      notify("Could not " + kind + " \u201c" + shorten(id) + "\u201d: " + error.message, true);
    }
    refresh();
  }

  async function resumeAccount() {
    const ask = "Resume all sending?\n\nThe guard then judges only what is sent from now on.";
    if (!window.confirm(ask)) return;
    try {
      const answer = await call("POST", "/v1/account/resume");
      notify(answer.resumed ? "Sending resumed." : "Sending was not held.");
    } catch (error) {
      if (error.status === 401) return signOut("The server refused the credential: " + error.message);
      notify("Could not resume sending: " + error.message, true);
    }
    refresh();
  }

  // ---- polling ----

  const signedIn = () => state.authOff || state.credential !== null;

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = document.hidden ? null : setTimeout(poll, ms);
  }

  /** A poll as soon as allowed: never sooner than POLL_MS after the last one started. */
  function refresh() {
    if (state.polling) state.again = true;
    else schedule(Math.max(0, state.lastStartMs + POLL_MS - Date.now()));
  }

  /** Back off after failures (and as the API asks after a 429); back to POLL_MS once all is read. */
  function adjustDelay(failures) {
    const limited = failures.find((e) => e.status === 429);
    if (limited) {
      state.delayMs = Math.min(MAX_DELAY_MS, Math.max(state.delayMs * 2, limited.retryAfterS * 1000));
      notify("Over API_RATE_LIMIT: polling every " + Math.round(state.delayMs / 1000) + " s.", true);
      state.limitedNotice = true;
    } else if (failures.length) {
      state.delayMs = Math.min(MAX_DELAY_MS, state.delayMs * 2);
    } else {
      state.delayMs = POLL_MS;
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }
    if (!limited && state.limitedNotice) {
      notify("");
      state.limitedNotice = false;
    }
  }

  async function readData() {
    const [topics, account] = await Promise.allSettled([readTopics(), call("GET", "/v1/account")]);
    const failures = [topics, account].filter((r) => r.status === "rejected").map((r) => r.reason);
    const refused = failures.find((e) => e.status === 401);
    if (refused) return signOut("The server refused the credential: " + refused.message);
    renderAccount(account);
    if (topics.status === "fulfilled") {
      const { listing, details, t } = topics.value;
      renderTopics(listing, details, t);
      failures.push(...details.filter((d) => d.status === "rejected").map((d) => d.reason));
      $("topics-error").textContent = "";
    } else {
      $("topics-error").textContent = "The topics could not be read: " + topics.reason.message;
    }
    renderRate();
    adjustDelay(failures);
  }

  async function poll() {
    state.timer = null;
    if (state.polling) return;
    state.polling = true;
    state.again = false;
    state.lastStartMs = Date.now();
    try {
      const ready = (await Promise.allSettled([call("GET", "/ready", false)]))[0];
      renderHealth(ready);
      if (!state.authKnown && state.credential === null) await detectAuth();
      if (signedIn()) await readData();
    } catch (error) {
      notify("The dashboard failed: " + error.message, true);
    } finally {
      state.polling = false;
      // The next poll starts POLL_MS (or the back-off) after this one ended; a refresh asked
      // for meanwhile comes sooner, but never sooner than POLL_MS after this one started.
      if (state.again) schedule(Math.max(0, state.lastStartMs + POLL_MS - Date.now()));
      else schedule(Math.max(POLL_MS, state.delayMs));
    }
  }

  // ---- signing in and out ----

  function loadCredential() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      if (stored && (stored.kind === "bearer" || stored.kind === "api-key") && typeof stored.value === "string") {
        return { kind: stored.kind, value: stored.value };
      }
    } catch (error) {
      // sessionStorage may be off (private modes); the credential then lasts until reload
    }
    return null;
  }

  function storeCredential(credential) {
    try {
      if (credential) sessionStorage.setItem(STORE_KEY, JSON.stringify(credential));
      else sessionStorage.removeItem(STORE_KEY);
    } catch (error) {
      // see loadCredential
    }
  }

  /** With AUTH_DISABLED=true the data routes answer without a credential; a 401 says they do not. */
  async function detectAuth() {
    try {
      await call("GET", "/v1/topics?limit=1", false);
      state.authOff = true;
      state.authKnown = true;
      notify("");
    } catch (error) {
      if (error.status === 401) state.authKnown = true;
      else notify("Could not reach the API (" + error.message + "); trying again.", true);
    }
    showSignedIn();
  }

  function showSignedIn() {
    const on = signedIn();
    $("login").hidden = on || !state.authKnown;
    $("board").hidden = !on;
    $("sign-out").hidden = state.credential === null;
    let text = "not signed in";
    if (state.credential) text = state.credential.kind === "api-key" ? "signed in with an API key" : "signed in with a token";
    else if (state.authOff) text = "authentication is off on this server";
    $("auth-state").textContent = text;
  }

  function signOut(message) {
    state.credential = null;
    state.authOff = false;
    state.authKnown = true; // a 401, or the operator's choice: the login form is what is needed
    storeCredential(null);
    $("login-error").textContent = message || "";
    showSignedIn();
    if (!message) notify("");
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("credential").value.trim();
    // A JWT or an API key is printable ASCII; fetch refuses anything else in a header anyway.
    if (!/^[\x21-\x7e]+$/.test(value)) {
      $("login-error").textContent = "A token or key is printable ASCII, without spaces.";
      return;
    }
    state.credential = { kind: $("credential-kind").value === "api-key" ? "api-key" : "bearer", value };
    try {
      await call("GET", "/v1/topics?limit=1");
    } catch (error) {
      state.credential = null;
      $("login-error").textContent = (error.status === 401 ? "Refused: " : "Could not check it: ") + error.message;
      return;
    }
    storeCredential(state.credential);
    $("credential").value = "";
    $("login-error").textContent = "";
    notify("");
    showSignedIn();
    refresh();
  }

  function changePage(step) {
    state.offset = Math.max(0, state.offset + step * PAGE_SIZE);
    state.total = [];
    state.lastPollT = null;
    refresh();
  }

  function start() {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("account-resume").addEventListener("click", resumeAccount);
    $("newer").addEventListener("click", () => changePage(-1));
    $("older").addEventListener("click", () => changePage(1));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    state.credential = loadCredential();
    state.authKnown = state.credential !== null;
    showSignedIn();
    schedule(0); // the first poll finds out whether the API needs a credential
  }

  start();
})();
