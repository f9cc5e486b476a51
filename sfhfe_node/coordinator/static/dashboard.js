// sfhfe-node dashboard: polls /v1/dashboard and draws the federation with SVG.
//
// Everything in the document comes from client nodes and is untrusted: it
// reaches the page only as text (textContent, SVG text nodes) or as numbers
// in SVG attributes, never as markup.
"use strict";

(function () {
  const POLL_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "sfhfe-dashboard-token";
  const PALETTE = [
    "#60A5FA", "#F472B6", "#34D399", "#FBBF24", "#A78BFA", "#F87171",
    "#2DD4BF", "#FB923C", "#A3E635", "#E879F9", "#38BDF8", "#FDE68A",
  ];
  const STATE_COLOURS = { active: "#34D399", drifting: "#FBBF24", stale: "#64748B" };
  const WIDTH = 560;
  const LEGEND_MAX = 16;
  const DRIFT_ROWS = 24;
  const META_ROWS = 20;

  let token = null;
  let timer = null;
  let busy = false;

  // Small helpers: elements built from text only.

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, String(value));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function titled(node, text) {
    node.appendChild(svg("title", {}, text));
    return node;
  }

  function canvas(height) {
    return svg("svg", {
      viewBox: "0 0 " + WIDTH + " " + height,
      role: "img",
      preserveAspectRatio: "xMidYMid meet",
    });
  }

  function empty(container, message) {
    container.replaceChildren(el("div", "empty", message));
  }

  // Colours by rank of the name among those drawn, so that a few nodes or
  // experts never share one; they stay put while the set does not change.
  function colours(names) {
    const table = new Map();
    Array.from(new Set(names)).sort().forEach((name, i) => {
      table.set(name, PALETTE[i % PALETTE.length]);
    });
    return (name) => table.get(name) || PALETTE[0];
  }

  function finite(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function stamp(seconds) {
    const date = new Date(seconds * 1000);
    return date.toLocaleDateString() + " " + clock(seconds);
  }

  function ago(seconds) {
    if (!finite(seconds) || seconds < 0) return "-";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function fixed(value, digits) {
    return finite(value) ? value.toFixed(digits) : "-";
  }

  function short(value) {
    if (!finite(value)) return "-";
    const size = Math.abs(value);
    if (size !== 0 && (size < 0.01 || size >= 10000)) return value.toExponential(1);
    return String(Number(value.toPrecision(3)));
  }

  function bytes(value) {
    if (!finite(value)) return "-";
    if (value >= 1048576) return (value / 1048576).toFixed(1) + " MiB";
    return (value / 1024).toFixed(0) + " KiB";
  }

  // Scales and axes.

  function extent(values, fallback) {
    let low = Infinity;
    let high = -Infinity;
    for (const value of values) {
      if (!finite(value)) continue;
      if (value < low) low = value;
      if (value > high) high = value;
    }
    if (low === Infinity) return fallback;
    if (low === high) {
      const pad = low === 0 ? 1 : Math.abs(low) * 0.1;
      return [low - pad, high + pad];
    }
    return [low, high];
  }

  function scale(domain, range, log) {
    const map = log ? Math.log10 : (value) => value;
    const d0 = map(domain[0]);
    const d1 = map(domain[1]);
    const span = d1 - d0 || 1;
    return (value) => range[0] + ((map(value) - d0) / span) * (range[1] - range[0]);
  }

  function ticks(domain, count, log) {
    const result = [];
    if (log) {
      const low = Math.floor(Math.log10(domain[0]));
      const high = Math.ceil(Math.log10(domain[1]));
      for (let power = low; power <= high; power += 1) {
        const value = Math.pow(10, power);
        if (value >= domain[0] && value <= domain[1]) result.push(value);
      }
      if (result.length < 2) result.push(domain[0], domain[1]);
      return result;
    }
    for (let i = 0; i <= count; i += 1) {
      result.push(domain[0] + ((domain[1] - domain[0]) * i) / count);
    }
    return result;
  }

  // A line chart: one line per series, gaps where a value is missing.
  function lineChart(container, series, options) {
    const drawn = series.filter((item) => item.ys.some(finite));
    if (drawn.length === 0) {
      empty(container, options.none || "no values yet");
      return;
    }
    const height = 240;
    const box = { left: 52, right: WIDTH - 30, top: 10, bottom: height - 26 };
    const xs = drawn.flatMap((item) => item.xs);
    const ys = drawn.flatMap((item) => item.ys).filter(
      (value) => finite(value) && (!options.log || value > 0)
    );
    const xDomain = extent(xs, [0, 1]);
    const yDomain = options.y || extent(ys, options.log ? [0.001, 1] : [0, 1]);
    if (options.log && yDomain[0] <= 0) yDomain[0] = yDomain[1] / 1000;
    const x = scale(xDomain, [box.left, box.right], false);
    const y = scale(yDomain, [box.bottom, box.top], options.log);
    const chart = canvas(height);

    for (const value of ticks(yDomain, 4, options.log)) {
      const at = y(value);
      chart.appendChild(svg("line", { class: "grid", x1: box.left, x2: box.right, y1: at, y2: at }));
      chart.appendChild(svg("text", { class: "tick", x: box.left - 6, y: at + 4, "text-anchor": "end" }, short(value)));
    }
    let previous = null;
    for (const value of ticks(xDomain, 4, false)) {
      const label = options.formatX(value);
      if (label === previous) continue;
      previous = label;
      const at = x(value);
      chart.appendChild(svg("line", { class: "grid", x1: at, x2: at, y1: box.top, y2: box.bottom }));
      chart.appendChild(svg("text", { class: "tick", x: at, y: height - 8, "text-anchor": "middle" }, label));
    }
    chart.appendChild(svg("line", { class: "axis", x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom }));

    for (const item of drawn) {
      let path = "";
      let pen = false;
      let alone = null;
      for (let i = 0; i < item.xs.length; i += 1) {
        const value = item.ys[i];
        if (!finite(value) || (options.log && value <= 0)) {
          pen = false;
          continue;
        }
        const px = x(item.xs[i]).toFixed(1);
        const py = y(value).toFixed(1);
        path += (pen ? "L" : "M") + px + " " + py;
        alone = pen ? null : [px, py];
        pen = true;
      }
      const line = svg("path", { class: "series", d: path, stroke: item.colour });
      chart.appendChild(titled(line, item.name));
      if (item.xs.length === 1 && alone) {
        const dot = svg("circle", { cx: alone[0], cy: alone[1], r: 3, fill: item.colour });
        chart.appendChild(titled(dot, item.name));
      }
    }
    container.replaceChildren(chart, legend(drawn));
  }

  function legend(items) {
    const box = el("div", "legend");
    for (const item of items.slice(0, LEGEND_MAX)) {
      const entry = el("span");
      const swatch = el("i");
      swatch.style.backgroundColor = item.colour;
      entry.append(swatch, document.createTextNode(item.name));
      box.appendChild(entry);
    }
    if (items.length > LEGEND_MAX) {
      box.appendChild(el("span", null, "+" + (items.length - LEGEND_MAX) + " more"));
    }
    return box;
  }

  // The parts of the page.

  function drawSummary(doc) {
    const drifting = doc.nodes.filter((node) => node.state === "drifting").length;
    $("sum-nodes").textContent = String(doc.totals.nodes);
    $("sum-active").textContent = String(doc.totals.active);
    $("sum-drifting").textContent = String(drifting);
    $("sum-meta").textContent = String(doc.meta_version);
    $("sum-updated").textContent = clock(doc.generated);
    const note = doc.totals.shown < doc.totals.nodes
      ? "(the " + doc.totals.shown + " seen last of " + doc.totals.nodes + ")"
      : "";
    $("nodes-note").textContent = note;
  }

  function drawNodes(doc) {
    const rows = doc.nodes.map((node) => {
      const row = el("tr");
      const id = el("td", "id", node.node_id);
      id.title = node.node_id;
      const state = el("td");
      state.appendChild(el("span", "badge " + safeState(node.state), node.state));
      const accuracy = finite(node.accuracy) ? (node.accuracy * 100).toFixed(2) + " %" : "-";
      row.append(
        id,
        state,
        el("td", null, node.task || "-"),
        el("td", "num", finite(node.records) ? node.records.toLocaleString() : "-"),
        el("td", "num", fixed(node.loss, 4)),
        el("td", "num", accuracy),
        el("td", "num", bytes(node.memory_bytes)),
        el("td", "num", ago(doc.generated - node.last_seen)),
        el("td", null, node.gossip || "-"),
      );
      return row;
    });
    $("nodes").tBodies[0].replaceChildren(...rows);
  }

  function safeState(state) {
    return Object.prototype.hasOwnProperty.call(STATE_COLOURS, state) ? state : "stale";
  }

  function drawCurves(doc) {
    const colour = colours(doc.nodes.map((node) => node.node_id));
    const series = (field) => doc.nodes.map((node) => ({
      name: node.node_id,
      colour: colour(node.node_id),
      xs: node.series.time,
      ys: node.series[field],
    }));
    lineChart($("loss-chart"), series("loss"), { formatX: clock });
    lineChart($("accuracy-chart"), series("accuracy"), {
      formatX: clock,
      y: [0, 1],
      none: "no accuracy reported (regression tasks have none)",
    });
  }

  function drawHeatmap(doc) {
    const container = $("heatmap");
    const names = doc.experts.names;
    const nodes = doc.nodes;
    if (names.length === 0 || nodes.length === 0) {
      empty(container, "no expert usage reported yet");
      return;
    }
    const labelWidth = 120;
    const cell = Math.max(2, Math.min(64, (WIDTH - labelWidth - 8) / nodes.length));
    const rowHeight = 24;
    const showNodes = cell >= 12;
    const footer = showNodes ? 70 : 16;
    const height = names.length * rowHeight + footer;
    const chart = canvas(height);
    names.forEach((name, row) => {
      const top = row * rowHeight;
      chart.appendChild(svg("text", { x: labelWidth - 8, y: top + 16, "text-anchor": "end" }, name));
      nodes.forEach((node, column) => {
        const value = doc.experts.usage[row][column];
        const attrs = {
          x: labelWidth + column * cell,
          y: top + 1,
          width: Math.max(1, cell - 1),
          height: rowHeight - 2,
        };
        if (finite(value)) {
          attrs.fill = heat(value);
        } else {
          attrs.class = "cell-empty";
        }
        const text = name + " on " + node.node_id + ": "
          + (finite(value) ? (value * 100).toFixed(1) + " %" : "not present");
        chart.appendChild(titled(svg("rect", attrs), text));
      });
    });
    if (showNodes) {
      nodes.forEach((node, column) => {
        const cx = labelWidth + column * cell + cell / 2;
        const cy = names.length * rowHeight + 8;
        const label = svg("text", {
          x: cx, y: cy, "text-anchor": "end",
          transform: "rotate(-55 " + cx.toFixed(1) + " " + cy + ")",
        }, clip(node.node_id, 12));
        chart.appendChild(titled(label, node.node_id));
      });
    }
    container.replaceChildren(chart, heatLegend());
  }

  function heat(value) {
    // From the card colour (no use) to a light blue (all records).
    const share = Math.max(0, Math.min(1, value));
    const from = [44, 60, 90];
    const to = [147, 197, 253];
    const mix = from.map((low, i) => Math.round(low + (to[i] - low) * Math.sqrt(share)));
    return "rgb(" + mix.join(",") + ")";
  }

  function heatLegend() {
    const box = el("div", "legend");
    for (const share of [0, 0.1, 0.25, 0.5, 1]) {
      const entry = el("span");
      const swatch = el("i");
      swatch.style.backgroundColor = heat(share);
      entry.append(swatch, document.createTextNode((share * 100) + " %"));
      box.appendChild(entry);
    }
    return box;
  }

  function clip(text, size) {
    return text.length > size ? text.slice(0, size - 1) + "\u2026" : text;
  }

  function drawTopology(doc) {
    const container = $("topology");
    const nodes = doc.nodes.slice().sort((a, b) => (a.node_id < b.node_id ? -1 : 1));
    if (nodes.length === 0) {
      empty(container, "no nodes");
      return;
    }
    const height = 320;
    const centre = [WIDTH / 2, height / 2];
    const radius = nodes.length === 1 ? 0 : height / 2 - 40;
    const place = new Map();
    nodes.forEach((node, i) => {
      const angle = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
      place.set(node.node_id, [
        centre[0] + radius * Math.cos(angle),
        centre[1] + radius * Math.sin(angle),
      ]);
    });
    const chart = canvas(height);
    for (const edge of doc.topology.edges) {
      const a = place.get(edge.source);
      const b = place.get(edge.target);
      if (!a || !b) continue;
      const strength = finite(edge.similarity) ? Math.max(0, edge.similarity) : 0.3;
      const line = svg("line", {
        class: "edge",
        x1: a[0], y1: a[1], x2: b[0], y2: b[1],
        "stroke-width": 1 + 2 * strength,
        "stroke-opacity": 0.25 + 0.65 * strength,
      });
      const similarity = finite(edge.similarity) ? edge.similarity.toFixed(3) : "unknown";
      chart.appendChild(titled(line, edge.source + " - " + edge.target + ", similarity " + similarity));
    }
    const labels = nodes.length <= 40;
    for (const node of nodes) {
      const [px, py] = place.get(node.node_id);
      const dot = svg("circle", {
        cx: px, cy: py, r: nodes.length > 60 ? 4 : 8,
        fill: STATE_COLOURS[safeState(node.state)],
        stroke: "#121212", "stroke-width": 1.5,
      });
      chart.appendChild(titled(dot, node.node_id + " (" + node.state + ")"));
      if (labels) {
        const outward = px >= centre[0] ? "start" : "end";
        const dx = px >= centre[0] ? 12 : -12;
        chart.appendChild(svg("text", { x: px + dx, y: py + 4, "text-anchor": outward }, clip(node.node_id, 18)));
      }
    }
    const note = doc.topology.edges.length === 0
      ? el("div", "legend", "no edges: no two live nodes with gossip addresses")
      : topologyLegend();
    container.replaceChildren(chart, note);
  }

  function topologyLegend() {
    const box = el("div", "legend");
    for (const [state, fill] of Object.entries(STATE_COLOURS)) {
      const entry = el("span");
      const swatch = el("i");
      swatch.style.backgroundColor = fill;
      entry.append(swatch, document.createTextNode(state));
      box.appendChild(entry);
    }
    box.appendChild(el("span", null, "thicker edge: more similar embeddings"));
    return box;
  }

  function drawDrift(doc) {
    const container = $("drift");
    const events = doc.drift;
    if (events.length === 0) {
      empty(container, "no drift reported");
      return;
    }
    const order = [];
    for (const event of events.slice().reverse()) {
      if (!order.includes(event.node_id)) order.push(event.node_id);
    }
    const rows = order.slice(0, DRIFT_ROWS).sort();
    const rowHeight = 18;
    const box = { left: 130, right: WIDTH * 2 - 30, top: 6 };
    const height = box.top + rows.length * rowHeight + 26;
    const chart = svg("svg", { viewBox: "0 0 " + WIDTH * 2 + " " + height, role: "img" });
    const colour = colours(doc.nodes.map((node) => node.node_id).concat(order));
    const xDomain = extent(events.map((event) => event.received).concat([doc.generated]), [0, 1]);
    const x = scale(xDomain, [box.left, box.right], false);
    const bottom = box.top + rows.length * rowHeight;
    let previous = null;
    for (const value of ticks(xDomain, 6, false)) {
      if (clock(value) === previous) continue;
      previous = clock(value);
      const at = x(value);
      chart.appendChild(svg("line", { class: "grid", x1: at, x2: at, y1: box.top, y2: bottom }));
      chart.appendChild(svg("text", { class: "tick", x: at, y: bottom + 16, "text-anchor": "middle" }, clock(value)));
    }
    rows.forEach((name, row) => {
      const cy = box.top + row * rowHeight + rowHeight / 2;
      chart.appendChild(svg("line", { class: "grid", x1: box.left, x2: box.right, y1: cy, y2: cy }));
      chart.appendChild(svg("text", { x: box.left - 8, y: cy + 4, "text-anchor": "end" }, clip(name, 20)));
    });
    for (const event of events) {
      const row = rows.indexOf(event.node_id);
      if (row < 0) continue;
      const fill = colour(event.node_id);
      const mark = svg("circle", {
        cx: x(event.received).toFixed(1),
        cy: box.top + row * rowHeight + rowHeight / 2,
        r: 4 + Math.min(3, Math.log2(1 + (event.events || 0))),
        fill: event.active ? fill : "none",
        stroke: fill,
        "stroke-width": 1.5,
      });
      const text = event.node_id + " at " + stamp(event.received) + ", insight " + event.seq
        + ": " + event.events + " event(s)" + (event.active ? ", drift active" : "");
      chart.appendChild(titled(mark, text));
    }
    const parts = [chart];
    if (order.length > rows.length) {
      parts.push(el("div", "legend", (order.length - rows.length) + " more node(s) with drift not drawn"));
    }
    container.replaceChildren(...parts);
  }

  function drawMeta(doc) {
    const versions = doc.meta;
    const names = new Set();
    for (const version of versions) {
      Object.keys(version.learning_rates).forEach((name) => names.add(name));
      Object.keys(version.router_priors).forEach((name) => names.add(name));
    }
    const sorted = Array.from(names).sort();
    const colour = colours(sorted);
    const series = (field) => sorted.map((name) => ({
      name: name,
      colour: colour(name),
      xs: versions.map((version) => version.version),
      ys: versions.map((version) => {
        const table = version[field];
        return Object.prototype.hasOwnProperty.call(table, name) ? table[name] : null;
      }),
    }));
    const byVersion = (value) => "v" + Math.round(value);
    const none = "no meta version yet";
    lineChart($("meta-rates"), series("learning_rates"), { formatX: byVersion, log: true, none: none });
    lineChart($("meta-priors"), series("router_priors"), { formatX: byVersion, y: [0, 1], none: none });

    const rows = versions.slice(-META_ROWS).reverse().map((version) => {
      let best = "-";
      let top = -Infinity;
      for (const [name, prior] of Object.entries(version.router_priors)) {
        if (prior > top) {
          top = prior;
          best = name;
        }
      }
      const row = el("tr");
      row.append(
        el("td", "num", version.version),
        el("td", null, stamp(version.created)),
        el("td", null, version.trigger),
        el("td", "num", Object.keys(version.learning_rates).length),
        el("td", null, best),
      );
      return row;
    });
    $("meta").tBodies[0].replaceChildren(...rows);
  }

  function draw(doc) {
    drawSummary(doc);
    const waiting = doc.totals.nodes === 0;
    $("waiting").hidden = !waiting;
    $("board").hidden = waiting;
    if (waiting) return;
    drawNodes(doc);
    drawCurves(doc);
    drawHeatmap(doc);
    drawTopology(doc);
    drawDrift(doc);
    drawMeta(doc);
  }

  // Polling, and the token when the coordinator asks for one.

  function status(text, failed) {
    const line = $("status");
    line.textContent = text;
    line.classList.toggle("error", Boolean(failed));
  }

  function askToken(wrong) {
    $("token-form").hidden = false;
    $("board").hidden = true;
    $("waiting").hidden = true;
    status(wrong ? "the token was refused" : "a token is required", wrong);
    $("token-input").focus();
  }

  async function poll() {
    if (busy) return;
    busy = true;
    timer = null;
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const reply = await fetch("/v1/dashboard", {
        headers: headers,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
      if (reply.status === 401) {
        busy = false;
        askToken(Boolean(token));
        return;
      }
      if (!reply.ok) throw new Error("the coordinator answered " + reply.status);
      const doc = await reply.json();
      $("token-form").hidden = true;
      draw(doc);
      status("live, every " + POLL_MS / 1000 + " s", false);
    } catch (error) {
      status("cannot reach the coordinator (" + error.message + "); retrying", true);
    }
    busy = false;
    schedule();
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
    } catch (error) {
      token = null;
    }
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token-input").value.trim() || null;
      $("token-input").value = "";
      try {
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
      } catch (error) {
        // Private windows may refuse storage: the token then lives in memory.
      }
      $("token-form").hidden = true;
      status("connecting\u2026", false);
      if (timer !== null) clearTimeout(timer);
      timer = null;
      poll();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer === null && $("token-form").hidden) poll();
    });
    poll();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
