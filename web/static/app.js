// The sniper's page: a join form, a live table fed by Server-Sent Events,
// and a per-auction history read from the log. Everything that came from
// outside (item ids, bidders, message bodies) is put in the page as text,
// never as HTML.
"use strict";

const ITEM = /^[A-Za-z0-9_-]{1,64}$/;
const rows = new Map();
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { /* empty body */ }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

// ---- the table ----

function render(s) {
  let row = rows.get(s.item);
  if (!row) {
    row = el("tr", { "data-item": s.item });
    row.id = "row-" + s.item;
    const stop = el("button", { class: "secondary", type: "button" }, "Stop");
    stop.addEventListener("click", () => stopSniper(s.item, stop));
    const hist = el("button", { class: "link", type: "button" }, "History");
    hist.addEventListener("click", () => showHistory(s.item));
    const edit = el("button", { class: "edit", type: "button", title: "Change the stop price (a stopped sniper resumes)" }, "Change limit");
    edit.addEventListener("click", () => editStopPrice(s.item, row));
    row.append(
      el("td", { class: "item", "data-label": "Item" }, s.item,
        s.group ? el("span", { class: "group-badge", title: "snipe group " + s.group + ": wins at most " + (s.group_win || "?") + " of its items" }, s.group) : ""),
      el("td", { class: "stop-price num", "data-label": "Stop Price" }),
      el("td", { class: "last-price num", "data-label": "Last Price" }),
      el("td", { class: "last-bid num", "data-label": "Last Bid" }),
      el("td", { class: "state-cell", "data-label": "State" }),
      el("td", { class: "actions" }, stop, " ", edit, " ", hist));
    rows.set(s.item, row);
    // A group's members sit together, before the snipers on their own.
    row.dataset.sortKey = s.group ? "0" + s.group + "\u0000" + s.item : "1" + s.item;
    insertSorted(row, row.dataset.sortKey);
  }
  // Snapshots can arrive twice (reconnect); never go back to an older one.
  if (Number(row.dataset.seq || 0) > s.input_seq) return;
  row.dataset.seq = s.input_seq;
  if (!row.querySelector(".stop-price form")) row.querySelector(".stop-price").textContent = s.stop_price;
  row.dataset.stopPrice = s.stop_price;
  row.querySelector(".last-price").textContent = s.last_price;
  row.querySelector(".last-bid").textContent = s.last_bid;
  const cell = row.querySelector(".state-cell");
  cell.replaceChildren(el("span", { class: "state state-" + s.state }, s.state));
  if (s.reason) cell.append(el("span", { class: "reason" }, s.reason));
  // A last-second sniper shows when it will bid; one ticker updates them all.
  row.dataset.wakeAt = s.state === "Waiting" && s.wake_at ? s.wake_at : "";
  if (row.dataset.wakeAt) cell.append(el("span", { class: "countdown" }));
  tickCountdowns();
  const final = ["Won", "Lost", "Failed", "Stopped"].includes(s.state);
  row.querySelector(".actions button.secondary").disabled = final;
  // Won, Lost and Failed are over; a Stopped sniper can be resumed.
  row.querySelector(".actions button.edit").disabled = ["Won", "Lost", "Failed"].includes(s.state);
  $("empty").hidden = rows.size > 0;
  if ($("history-item").textContent === s.item && !$("history").hidden) showHistory(s.item);
}

function tickCountdowns() {
  for (const row of rows.values()) {
    const c = row.querySelector(".countdown");
    if (!c || !row.dataset.wakeAt) continue;
    const ms = Number(row.dataset.wakeAt) - Date.now();
    c.textContent = ms > 0 ? `bids in ${(ms / 1000).toFixed(1)} s` : "bidding now";
  }
}
setInterval(tickCountdowns, 100);

function insertSorted(row, key) {
  const body = $("snipers").tBodies[0];
  for (const other of body.rows) {
    if (other.dataset.sortKey > key) { body.insertBefore(row, other); return; }
  }
  body.append(row);
}

// ---- live updates ----

function connect() {
  const live = $("live");
  const es = new EventSource("api/stream");
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "badge on"; });
  es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "badge off"; });
  es.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
  es.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
}

// A "status" event says what the sniper depends on and whether it is
// reachable, and this instance's role among those sharing the log:
// {"ready", "role", "instance", "active", "checks": [{"name", "ok", "error"}...]}.
function showStatus(st) {
  const checks = Array.isArray(st.checks) ? st.checks : [];
  const role = $("role");
  if (st.role) {
    role.hidden = false;
    const standby = st.role === "standby";
    role.textContent = standby ? "standby" + (st.active ? " (active: " + st.active + ")" : " (no instance active)") : "active";
    role.className = "badge " + (standby ? "off" : "on");
    role.title = standby
      ? "this instance shows the log and takes commands; another instance decides and bids, and this one takes over if it dies"
      : "this instance (" + String(st.instance || "") + ") decides and bids";
  }
  const xmpp = checks.find((c) => c && c.name === "xmpp");
  const house = $("auction-house");
  if (xmpp) {
    house.hidden = false;
    house.textContent = "auction house: " + (xmpp.ok ? "connected" : "disconnected");
    house.className = "badge " + (xmpp.ok ? "on" : "off");
    house.title = xmpp.ok ? "connected to the auction house" : String(xmpp.error || "not connected");
  } else if (st.checks) {
    house.hidden = true; // running without an auction house
  }
  const logBad = checks.filter((c) => c && c.name !== "xmpp" && !c.ok);
  const log = $("log-status");
  if (st.checks) log.hidden = logBad.length === 0;
  if (logBad.length) {
    const full = logBad.some((c) => c.name === "log_writes") && logBad.length === 1;
    log.textContent = "event log: " + (full ? "refusing writes" : "unavailable");
    log.title = logBad.map((c) => String(c.error || c.name)).join("\n");
  }
  const p = $("open-items");
  const items = Array.isArray(st.open_items) ? st.open_items : [];
  p.hidden = items.length === 0;
  if (items.length) {
    // Each open auction fills the form when clicked: the demo's way in.
    p.replaceChildren("Open at the built-in auction house: ", ...items.flatMap((item, i) => {
      const b = el("button", { type: "button", class: "link open-item" }, item);
      b.addEventListener("click", () => { $("item").value = item; $("stop-price").focus(); });
      return i ? [", ", b] : [b];
    }));
  }
}

// The built-in auction house relists items as they close; the status event
// only fires on connection changes, so refresh the list now and then.
async function refreshStatus() {
  try { showStatus(await api("GET", "api/status")); } catch (_) { /* the stream shows the trouble */ }
}
setInterval(refreshStatus, 10000);

// ---- the form ----

function fieldError(id, msg) {
  $(id + "-error").textContent = msg || "";
  $(id).setAttribute("aria-invalid", msg ? "true" : "false");
}

$("join").addEventListener("submit", async (e) => {
  e.preventDefault();
  const item = $("item").value.trim();
  const stopText = $("stop-price").value.trim();
  const leadText = $("lead").value.trim();
  fieldError("item"); fieldError("stop-price"); fieldError("lead"); $("form-error").textContent = "";
  let ok = true;
  if (!ITEM.test(item)) { fieldError("item", "1 to 64 letters, digits, '-' or '_'"); ok = false; }
  if (!/^[1-9][0-9]{0,17}$/.test(stopText)) { fieldError("stop-price", "a whole number above 0"); ok = false; }
  const lead = Number(leadText);
  if (leadText !== "" && !(lead > 0 && lead <= 3600)) { fieldError("lead", "seconds, above 0 and at most 3600"); ok = false; }
  if (!ok) return;
  const button = $("join-button");
  button.disabled = true;
  try {
    const body = { item, stop_price: Number(stopText) };
    if (leadText !== "") { body.strategy = "last-second"; body.lead_ms = Math.max(1, Math.round(lead * 1000)); }
    const s = await api("POST", "api/snipers", body);
    if (s && s.state) render(s);
    $("item").value = ""; $("stop-price").value = ""; $("lead").value = "";
  } catch (err) {
    const msg = err.message;
    if (/stop_price/.test(msg)) fieldError("stop-price", msg);
    else if (/lead_ms|strategy/.test(msg)) fieldError("lead", msg);
    else if (/item/.test(msg)) fieldError("item", msg);
    else $("form-error").textContent = msg;
  } finally {
    button.disabled = false;
  }
});

async function stopSniper(item, button) {
  button.disabled = true;
  try { render(await api("DELETE", "api/snipers/" + encodeURIComponent(item))); }
  catch (err) { $("form-error").textContent = "Stop " + item + ": " + err.message; button.disabled = false; }
}

// editStopPrice turns the row's stop price into a small form: PATCH the
// new limit; what the sniper refuses (409) is said beside it.
function editStopPrice(item, row) {
  const cell = row.querySelector(".stop-price");
  if (cell.querySelector("form")) return;
  const input = el("input", { type: "number", min: "1", step: "1", class: "stop-edit", "aria-label": "New stop price for " + item });
  input.value = row.dataset.stopPrice || "";
  const error = el("span", { class: "field-error stop-edit-error", role: "alert" });
  const form = el("form", { class: "stop-edit-form" }, input, el("button", { type: "submit" }, "Set"), error);
  const done = () => { cell.textContent = row.dataset.stopPrice; };
  input.addEventListener("keydown", (e) => { if (e.key === "Escape") done(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const n = Number(input.value);
    if (!Number.isInteger(n) || n <= 0) { error.textContent = "a positive whole number"; return; }
    try {
      const s = await api("PATCH", "api/snipers/" + encodeURIComponent(item), { stop_price: n });
      done();
      render(s);
    } catch (err) { error.textContent = err.message; }
  });
  cell.replaceChildren(form);
  input.focus();
  input.select();
}

// ---- history ----

function describe(ev) {
  const d = ev.data || {};
  // A decision (dec.join, dec.bid, dec.state) carries the sniper's new state.
  const now = `now ${d.state}: last price ${d.last_price}, last bid ${d.last_bid}` + (d.reason ? ` (${d.reason})` : "");
  if (String(ev.subject).startsWith("dec.")) {
    switch (ev.type) {
      case "join": return "Decided to join; " + now;
      case "bid": return `Decided to bid ${d.last_bid}; ` + now;
      case "claim": return `Instance ${d.by} took over and joined again; ` + now;
      default: return now.charAt(0).toUpperCase() + now.slice(1);
    }
  }
  switch (ev.type) {
    case "start": return `You joined, bidding up to ${d.stop_price}` + (d.strategy === "last-second" ? `, ${d.lead_ms / 1000} s before the close` : "");
    case "timer": {
      const late = d.fired - d.due;
      return "The last-second timer went off" + (late >= 1000 ? `, ${(late / 1000).toFixed(1)} s late (no instance was running when it was due)` : "");
    }
    case "stop": return "You stopped the sniper";
    case "set": return `You changed the stop price to ${d.stop_price}`;
    case "price": return `Price ${d.current_price} (increment ${d.increment}) by ${d.bidder}` + (d.from_sniper ? " (the sniper)" : "") +
      (d.close_time ? `, closing at ${new Date(d.close_time).toLocaleTimeString()}` : "");
    case "close": return "The auction closed";
    case "malformed": return `Unreadable message "${d.body}": ${d.reason}`;
    case "sent": return `Sent to the auction house: ${d.body}`;
    case "undelivered": return `The auction house never took: ${d.body} (${d.reason})`;
    case "notified": return `Notified event ${d.event_seq}` + (d.attempts > 1 ? ` (after ${d.attempts} attempts)` : "");
    case "notify_failed": return `Notifying event ${d.event_seq} failed, retrying: ${d.reason}`;
    default: return ev.type;
  }
}

// ---- the history chart ----

// The auction as a picture: the price the auction house reported over
// time (a step line), the sniper's own bids (marks of class "bid-mark"),
// the stop price (a dashed line, "stop-line") and how it ended. Built from
// SVG elements, never from markup, like the rest of the page.
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

// chartData picks out of the events what the chart draws.
function chartData(events) {
  const prices = [], bids = [];
  let stop = null, outcome = null, closed = null;
  events.forEach((ev, i) => {
    const d = ev.data || {};
    const kind = String(ev.subject || "").split(".")[0];
    const t = Date.parse(ev.time);
    const at = { i, t: Number.isFinite(t) ? t : NaN };
    if (kind === "in" && ev.type === "price" && Number.isFinite(d.current_price)) {
      prices.push({ ...at, price: d.current_price, bidder: String(d.bidder || ""), sniper: !!d.from_sniper });
    } else if (kind === "in" && ev.type === "close") {
      closed = at;
    } else if (kind === "cmd" && ev.type === "start" && Number.isFinite(d.stop_price)) {
      stop = d.stop_price;
    } else if (kind === "dec") {
      if (ev.type === "bid" && Number.isFinite(d.last_bid)) bids.push({ ...at, price: d.last_bid });
      if (d.state) outcome = String(d.state);
      if (!stop && Number.isFinite(d.stop_price) && d.stop_price > 0) stop = d.stop_price;
    }
  });
  return { prices, bids, stop, outcome, closed, n: events.length };
}

function drawChart(events) {
  const W = 640, H = 220, L = 56, R = 96, T = 24, B = 28;
  const { prices, bids, stop, outcome, closed, n } = chartData(events);
  const points = [...prices, ...bids];
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  chart.append(svg("rect", { class: "frame", x: L, y: T, width: W - L - R, height: H - T - B }));

  // x: time, unless the times say nothing (all equal or unreadable); then
  // the order of the events in the log.
  const times = events.map((ev) => Date.parse(ev.time)).filter(Number.isFinite);
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const byTime = times.length === events.length && t1 > t0;
  const x = (p) => {
    const f = byTime ? (p.t - t0) / (t1 - t0) : (n > 1 ? p.i / (n - 1) : 0.5);
    return L + f * (W - L - R);
  };
  const xEnd = W - R;

  // y: price, with the stop price in the range so its line is always seen.
  const values = points.map((p) => p.price);
  if (stop) values.push(stop);
  let lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  const pad = Math.max((hi - lo) * 0.1, hi * 0.05, 1);
  lo = Math.max(0, lo - pad); hi += pad;
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);

  for (const v of [lo, hi]) {
    const yy = y(v);
    chart.append(svg("line", { class: "grid", x1: L, x2: xEnd, y1: yy, y2: yy }),
      svg("text", { class: "axis-label", x: L - 6, y: yy + 4, "text-anchor": "end" }, String(Math.round(v))));
  }
  if (byTime) {
    // The end as a time of day, or, for a short auction, as how long after
    // the start (a whole auction in one second would read 5:39:10 twice).
    const span = t1 - t0;
    const end = span < 1000 ? `+${span} ms` : span < 60000 ? `+${(span / 1000).toFixed(1)} s` : new Date(t1).toLocaleTimeString();
    chart.append(svg("text", { class: "axis-label", x: L, y: H - 8 }, new Date(t0).toLocaleTimeString()),
      svg("text", { class: "axis-label", x: xEnd, y: H - 8, "text-anchor": "end" }, end));
  } else {
    chart.append(svg("text", { class: "axis-label", x: L, y: H - 8 }, "events in log order"));
  }

  if (stop) {
    const yy = y(stop);
    chart.append(svg("line", { class: "stop-line", x1: L, x2: xEnd, y1: yy, y2: yy }),
      svg("text", { class: "stop-label", x: xEnd + 6, y: yy + 4 }, "stop " + stop));
  }

  if (closed) {
    const xx = x(closed);
    chart.append(svg("line", { class: "close-line", x1: xx, x2: xx, y1: T, y2: H - B }),
      svg("text", { class: "axis-label", x: xx - 4, y: T - 6, "text-anchor": "end" }, "closed"));
  }

  if (prices.length) {
    // A step line: the price holds until the next report, and to the end.
    let d = `M ${x(prices[0])} ${y(prices[0].price)}`;
    for (const p of prices.slice(1)) d += ` H ${x(p)} V ${y(p.price)}`;
    d += ` H ${closed ? x(closed) : xEnd}`;
    chart.append(svg("path", { class: "price-line", d }));
    for (const p of prices) {
      chart.append(svg("circle", { class: "price-point", cx: x(p), cy: y(p.price), r: 2.5 },
        svg("title", {}, `price ${p.price} by ${p.sniper ? "the sniper" : p.bidder}`)));
    }
  } else {
    chart.append(svg("text", { class: "chart-empty", x: (L + xEnd) / 2, y: (T + H - B) / 2, "text-anchor": "middle" }, "no price from the auction house yet"));
  }

  for (const b of bids) {
    chart.append(svg("circle", { class: "bid-mark", cx: x(b), cy: y(b.price), r: 5 }, svg("title", {}, "the sniper bid " + b.price)));
  }

  chart.append(svg("text", { class: "legend", x: L, y: T - 8 },
    `${prices.length} price${prices.length === 1 ? "" : "s"}, ${bids.length} bid${bids.length === 1 ? "" : "s"} by the sniper (○)`));
  if (outcome) {
    chart.append(svg("text", { class: "chart-outcome outcome-" + outcome, x: xEnd + 6, y: T + 12 }, outcome));
  }
  chart.setAttribute("aria-label", `Price over time: ${prices.length} prices, ${bids.length} bids` +
    (stop ? `, stop price ${stop}` : "") + (outcome ? `, ${outcome}` : ""));
  return chart;
}

async function showHistory(item) {
  $("history-item").textContent = item;
  $("history").hidden = false;
  const list = $("history-events");
  try {
    const data = await api("GET", "api/snipers/" + encodeURIComponent(item) + "/events");
    if ($("history-item").textContent !== item) return; // another item was opened meanwhile
    $("history-chart").replaceChildren(drawChart(data.events));
    list.replaceChildren(...data.events.map((ev) => {
      const t = new Date(ev.time);
      return el("li", { class: "event event-" + ev.type, "data-seq": ev.seq },
        el("time", { datetime: ev.time }, t.toLocaleTimeString()), describe(ev));
    }));
  } catch (err) {
    $("history-chart").replaceChildren();
    list.replaceChildren(el("li", { class: "error" }, err.message));
  }
}

$("history-close").addEventListener("click", () => { $("history").hidden = true; });

connect();
