// pyprof_http trace timeline: one row group per lane (thread, task, requests), canvas drawing,
// zoom and pan, click for details. No dependencies, no network. Names are attacker-controlled:
// they reach the page only through canvas fillText and textContent, never as markup.
(function () {
  "use strict";

  var ROW = 18, LABEL_W = 240, AXIS = 22;
  var COLORS = {step: "#4e79a7", callback: "#9c755f", work: "#59a14f", gc: "#e15759",
                stall: "#b07aa1", mark: "#f28e2b", span: "#edc948", request: "#76b7b2"};
  var data = JSON.parse(document.getElementById("trace-data").textContent);
  var el = function (id) { return document.getElementById(id); };
  var canvas = el("timeline"), viewport = el("viewport"), spacer = el("spacer");
  var details = el("details"), range = el("range");
  var ctx = canvas.getContext("2d");

  data.notes.forEach(function (note) {
    var li = document.createElement("li");
    li.textContent = note;
    el("notes").appendChild(li);
  });

  // events: [kind, lane, start_ns, dur_ns, name, args, wait_ns, behind, stack, request]
  var events = data.events.map(function (e) {
    return {kind: data.kinds[e[0]], lane: e[1], start: e[2], dur: e[3], name: e[4],
            args: e[5], wait: e[6], behind: e[7], stack: e[8], request: e[9]};
  });

  // Pack each lane's events into rows: an event goes to the first row free at its start.
  var lanes = data.lanes.map(function (l) {
    return {id: l[0], kind: l[1], name: l[2], rows: [], top: 0};
  });
  var byId = {};
  lanes.forEach(function (lane) { byId[lane.id] = lane; });
  events.forEach(function (ev) {
    var lane = byId[ev.lane];
    if (!lane) { return; }
    var end = ev.start + ev.dur, placed = false;
    for (var r = 0; r < lane.rows.length && !placed; r++) {
      var row = lane.rows[r];
      if (row.end <= ev.start) { row.items.push(ev); row.end = Math.max(row.end, end); placed = true; }
    }
    if (!placed) { lane.rows.push({items: [ev], end: end}); }
  });
  var y = AXIS;
  lanes.forEach(function (lane) {
    if (!lane.rows.length) { lane.rows.push({items: [], end: 0}); }
    lane.top = y;
    y += lane.rows.length * ROW + 4;
    var li = document.createElement("li");
    li.className = "lane lane-" + lane.kind;
    li.textContent = lane.name;
    el("lanes").appendChild(li);
  });
  var totalHeight = y;

  var duration = Math.max(data.duration_ns, 1);
  events.forEach(function (ev) { duration = Math.max(duration, ev.start + ev.dur); });
  var view = {from: 0, to: duration};
  var selected = null;

  function width() { return Math.max(100, canvas.width / (window.devicePixelRatio || 1) - LABEL_W); }
  function xOf(ns) { return LABEL_W + (ns - view.from) / (view.to - view.from) * width(); }
  function ms(ns) { return (ns / 1e6).toFixed(3) + " ms"; }

  function resize() {
    var ratio = window.devicePixelRatio || 1;
    var w = viewport.clientWidth, h = Math.min(viewport.clientHeight || 400, totalHeight);
    canvas.width = w * ratio; canvas.height = h * ratio;
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    spacer.style.height = totalHeight + "px";
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    draw();
  }

  function draw() {
    var w = canvas.width / (window.devicePixelRatio || 1);
    var h = canvas.height / (window.devicePixelRatio || 1);
    var scroll = viewport.scrollTop;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    lanes.forEach(function (lane, index) {
      var top = lane.top - scroll;
      var height = lane.rows.length * ROW;
      if (top + height < AXIS || top > h) { return; }
      ctx.fillStyle = index % 2 ? "#fafafa" : "#f2f2f2";
      ctx.fillRect(0, top, w, height + 4);
      lane.rows.forEach(function (row, r) {
        var rowTop = top + r * ROW, lastX = -1;
        row.items.forEach(function (ev) {
          if (ev.start + ev.dur < view.from || ev.start > view.to) { return; }
          var x0 = xOf(ev.start), x1 = xOf(ev.start + ev.dur);
          if (ev.kind === "mark") {
            ctx.fillStyle = COLORS.mark;
            ctx.beginPath(); ctx.moveTo(x0, rowTop + 2); ctx.lineTo(x0 + 5, rowTop + ROW / 2);
            ctx.lineTo(x0, rowTop + ROW - 2); ctx.lineTo(x0 - 5, rowTop + ROW / 2); ctx.fill();
            return;
          }
          x0 = Math.max(x0, LABEL_W);
          if (x1 - x0 < 1) { if (Math.floor(x0) === lastX) { return; } x1 = x0 + 1; }
          lastX = Math.floor(x0);
          ctx.fillStyle = ev === selected ? "#000" : (COLORS[ev.kind] || "#888");
          ctx.fillRect(x0, rowTop + 1, x1 - x0, ROW - 2);
          if (x1 - x0 > 30) {
            ctx.save(); ctx.beginPath(); ctx.rect(x0, rowTop, x1 - x0, ROW); ctx.clip();
            ctx.fillStyle = "#fff"; ctx.fillText(ev.name, x0 + 3, rowTop + ROW / 2);
            ctx.restore();
          }
        });
      });
      ctx.fillStyle = "#fff"; ctx.fillRect(0, top, LABEL_W, height + 4);
      ctx.fillStyle = "#222";
      ctx.save(); ctx.beginPath(); ctx.rect(0, top, LABEL_W - 4, height); ctx.clip();
      ctx.fillText(lane.name, 4, top + ROW / 2); ctx.restore();
    });
    drawAxis(w);
    range.textContent = ms(view.from) + " \u2013 " + ms(view.to) + " of " + ms(duration);
  }

  function drawAxis(w) {
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, AXIS);
    ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#444";
    var span = view.to - view.from, step = Math.pow(10, Math.floor(Math.log10(span / 5)));
    if (span / step > 10) { step *= 2; }
    for (var t = Math.ceil(view.from / step) * step; t <= view.to; t += step) {
      var x = xOf(t);
      ctx.beginPath(); ctx.moveTo(x, AXIS - 6); ctx.lineTo(x, AXIS); ctx.stroke();
      ctx.fillText(ms(t), x + 2, AXIS / 2);
    }
  }

  function zoom(factor, atX) {
    var span = view.to - view.from;
    var at = view.from + (Math.max(atX, LABEL_W) - LABEL_W) / width() * span;
    var next = Math.min(duration * 1.05, Math.max(1000, span * factor));
    view.from = Math.max(0, at - (at - view.from) * next / span);
    view.to = view.from + next;
    draw();
  }
  function pan(dx) {
    var shift = dx / width() * (view.to - view.from);
    view.from += shift; view.to += shift; draw();
  }

  function hit(px, py) {
    var yAbs = py + viewport.scrollTop;
    for (var i = 0; i < lanes.length; i++) {
      var lane = lanes[i], r = Math.floor((yAbs - lane.top) / ROW);
      if (r < 0 || r >= lane.rows.length) { continue; }
      var best = null;
      lane.rows[r].items.forEach(function (ev) {
        var x0 = xOf(ev.start), x1 = Math.max(xOf(ev.start + ev.dur), x0 + 1);
        if (ev.kind === "mark") { x0 -= 5; x1 += 5; }
        if (px >= x0 && px <= x1) { best = ev; }
      });
      return best;
    }
    return null;
  }

  function show(ev) {
    selected = ev;
    while (details.firstChild) { details.removeChild(details.firstChild); }
    if (!ev) { var p = document.createElement("p"); p.className = "hint"; p.textContent = "No event selected."; details.appendChild(p); draw(); return; }
    var h = document.createElement("h2");
    h.textContent = ev.kind + ": " + ev.name;
    details.appendChild(h);
    var dl = document.createElement("dl");
    function row(k, v) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; dl.appendChild(dt); dl.appendChild(dd);
    }
    row("start", "+" + ms(ev.start));
    if (ev.kind !== "mark") { row("duration", ms(ev.dur)); }
    if (ev.wait) { row("ready before it ran", ms(ev.wait)); }
    ev.behind.forEach(function (b) { row("waited behind", b[0] + ": " + ms(b[1])); });
    ev.args.forEach(function (a) { row(a[0], a[1]); });
    if (ev.stack.length) {
      row("stack", ev.stack.map(function (f) { return f[0] + "  " + f[1] + ":" + f[2]; }).join("\n"));
    }
    details.appendChild(dl);
    draw();
  }

  var drag = null;
  canvas.addEventListener("mousedown", function (e) { drag = {x: e.clientX, moved: false}; });
  window.addEventListener("mousemove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x;
    if (Math.abs(dx) > 2) { drag.moved = true; }
    if (drag.moved) { pan(-dx); drag.x = e.clientX; }
  });
  window.addEventListener("mouseup", function (e) {
    if (drag && !drag.moved) {
      var rect = canvas.getBoundingClientRect();
      show(hit(e.clientX - rect.left, e.clientY - rect.top));
    }
    drag = null;
  });
  canvas.addEventListener("wheel", function (e) {
    if (!e.ctrlKey && !e.metaKey) { return; }
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.25 : 0.8, e.clientX - canvas.getBoundingClientRect().left);
  }, {passive: false});
  viewport.addEventListener("scroll", draw);
  viewport.addEventListener("keydown", function (e) {
    var w = width();
    if (e.key === "w") { zoom(0.8, LABEL_W + w / 2); }
    else if (e.key === "s") { zoom(1.25, LABEL_W + w / 2); }
    else if (e.key === "a") { pan(-w / 10); }
    else if (e.key === "d") { pan(w / 10); }
    else if (e.key === "0") { view = {from: 0, to: duration}; draw(); }
  });
  el("zoom-in").addEventListener("click", function () { zoom(0.5, LABEL_W + width() / 2); });
  el("zoom-out").addEventListener("click", function () { zoom(2, LABEL_W + width() / 2); });
  el("reset").addEventListener("click", function () { view = {from: 0, to: duration}; draw(); });
  window.addEventListener("resize", resize);
  function matching(kind, name) {
    return events.filter(function (ev) { return ev.kind === kind && (!name || ev.name === name); });
  }
  // For tests and the console: how many lanes and events, and select an event by kind and name.
  window.__traceTimeline = {
    lanes: lanes.length, events: events.length,
    find: function (kind, name) { return matching(kind, name).length; },
    select: function (kind, name) { var found = matching(kind, name); show(found[0] || null); return found.length; }
  };
  resize();
})();
