// pyprof_http flame graph (icicle: callers above callees). No dependencies, no network.
// Profile names are attacker-controlled: they only ever reach the DOM through textContent.
(function () {
  "use strict";

  var ROW = 18; // px per stack level
  var MIN_SHARE = 0.001; // frames narrower than 0.1% of the view are not drawn

  var data = JSON.parse(document.getElementById("profile-data").textContent);
  // data: {title, comments, sample_types: [{type, unit}], default_index,
  //        frames: [[function, filename, line]], stacks: [[frame index, root first]],
  //        samples: [[stack index, [value per sample type], [label value index per key, -1]]],
  //        label_keys: [key], label_values: [[value] per key], group_by: key or null}
  var el = function (id) { return document.getElementById(id); };
  var chart = el("chart"), statusLine = el("status"), select = el("sample-type");
  var groupSelect = el("group-by");
  var search = el("search"), matchInfo = el("match"), reset = el("reset"), empty = el("empty");
  var defaultStatus = statusLine.textContent;

  var typeIndex = data.default_index, unit = "";
  var groupIndex = data.label_keys.indexOf(data.group_by); // -1: not grouped
  var root = null, focus = null, query = "";
  var nodeOf = new WeakMap(); // drawn element -> tree node

  // By default the server sends one frame per function (as go tool pprof draws); with
  // granularity=lines a function can have several frames, which are then told apart by line.
  var framesOf = new Map();
  data.frames.forEach(function (f) {
    var key = f[0] + "\u0000" + f[1];
    framesOf.set(key, (framesOf.get(key) || 0) + 1);
  });
  function byLine(f) { return framesOf.get(f[0] + "\u0000" + f[1]) > 1; }

  // ---- the tree for one sample type, optionally grouped by one label ------------------------
  // A node is a frame (frame >= 0), the root (frame -1, no parent) or, when grouped, a
  // synthetic group below the root (frame -1, group = "key: value").
  function newNode(frame, parent, group) {
    return { frame: frame, group: group, value: 0, parent: parent,
             depth: parent ? parent.depth + 1 : 0, children: new Map() };
  }

  function descend(node, key, value, frame, group) {
    var child = node.children.get(key);
    if (!child) {
      child = newNode(frame, node, group);
      node.children.set(key, child);
    }
    child.value += value;
    return child;
  }

  function groupName(g, v) {
    return data.label_keys[g] + ": " + (v < 0 ? "(none)" : String(data.label_values[g][v]));
  }

  function build(t, g) {
    var top = newNode(-1, null, null);
    for (var i = 0; i < data.samples.length; i++) {
      var sample = data.samples[i], value = sample[1][t];
      if (!(value > 0)) continue; // zero and negative values (deltas) cannot be drawn
      var node = top, stack = data.stacks[sample[0]];
      node.value += value;
      if (g >= 0) {
        var v = sample[2][g];
        node = descend(node, "group " + v, value, -1, groupName(g, v));
      }
      for (var j = 0; j < stack.length; j++) node = descend(node, stack[j], value, stack[j], null);
    }
    // children as arrays, heaviest first (ties by name) so the layout is stable
    var todo = [top];
    while (todo.length) {
      var n = todo.pop();
      n.children = Array.from(n.children.values()).sort(function (a, b) {
        return b.value - a.value || (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0);
      });
      for (var k = 0; k < n.children.length; k++) todo.push(n.children[k]);
    }
    return top;
  }

  function name(node) {
    if (node.group) return node.group;
    if (node.frame < 0) return "all";
    var f = data.frames[node.frame];
    return byLine(f) ? f[0] + ":" + f[2] : String(f[0]);
  }
  function where(node) {
    if (node.frame < 0) return "";
    var f = data.frames[node.frame];
    return f[1] + ":" + f[2];
  }

  // ---- formatting ---------------------------------------------------------------------------
  function scaled(v, steps, base) {
    var i = 0;
    while (i < steps.length - 1 && Math.abs(v) >= base) { v /= base; i++; }
    return (i ? v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) : String(v)) + " " + steps[i];
  }
  function formatValue(v) {
    if (unit === "nanoseconds") {
      if (Math.abs(v) >= 60e9) return (v / 60e9).toFixed(1) + " min";
      return scaled(v, ["ns", "\u00b5s", "ms", "s"], 1000);
    }
    if (unit === "bytes") return scaled(v, ["B", "KiB", "MiB", "GiB", "TiB"], 1024);
    return v.toLocaleString("en-US") + (unit && unit !== "count" ? " " + unit : "");
  }
  function percent(part, whole) {
    return whole > 0 ? (100 * part / whole).toFixed(2) + "%" : "0%";
  }

  // ---- colours: a warm hue from the function name, stable across renders --------------------
  function colour(node) {
    var s = name(node), h = 0;
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    h = Math.abs(h);
    return "hsl(" + (h % 55) + ", " + (60 + (h >> 8) % 30) + "%, " + (55 + (h >> 16) % 15) + "%)";
  }

  // ---- search -------------------------------------------------------------------------------
  function matches(node) {
    if (!query || !node.parent) return false;
    if (node.group) return node.group.toLowerCase().indexOf(query) >= 0;
    var f = data.frames[node.frame];
    return String(f[0]).toLowerCase().indexOf(query) >= 0 ||
      String(f[1]).toLowerCase().indexOf(query) >= 0;
  }

  // share of all samples with a matching frame somewhere on the stack (nested matches once)
  function matchedValue(top) {
    var total = 0, todo = [top];
    while (todo.length) {
      var n = todo.pop();
      if (matches(n)) { total += n.value; continue; }
      for (var i = 0; i < n.children.length; i++) todo.push(n.children[i]);
    }
    return total;
  }

  function updateMatches() {
    var boxes = chart.children;
    for (var i = 0; i < boxes.length; i++) {
      boxes[i].classList.toggle("match", matches(nodeOf.get(boxes[i])));
    }
    if (!query || !root.value) { matchInfo.textContent = ""; return; }
    var v = matchedValue(root);
    matchInfo.textContent = "Matched: " + percent(v, root.value) + " (" + formatValue(v) + ")";
  }

  // ---- drawing ------------------------------------------------------------------------------
  function box(node, x, share, extra) {
    var d = document.createElement("div");
    d.className = "frame" + extra + (node.group ? " group" : "") +
      (matches(node) ? " match" : "");
    d.style.left = (100 * x) + "%";
    d.style.width = (100 * share) + "%";
    d.style.top = (node.depth * ROW) + "px";
    if (node.frame >= 0) d.style.background = colour(node);
    // the totals are in the box itself, not only on hover: "f 52.31% · 1.20 s"
    d.textContent = name(node) + " " + percent(node.value, root.value) + " \u00b7 " +
      formatValue(node.value);
    d.title = describe(node);
    d.tabIndex = 0;
    d.setAttribute("role", "button");
    nodeOf.set(d, node);
    return d;
  }

  function render() {
    var out = document.createDocumentFragment(), deepest = focus.depth;
    for (var a = focus.parent; a; a = a.parent) {
      out.appendChild(box(a, 0, 1, (a.parent ? "" : " root") + " ancestor"));
    }
    // depth-first with an explicit stack: deep recursion in Python makes deep stacks here
    var todo = [[focus, 0]];
    while (todo.length) {
      var item = todo.pop(), node = item[0], x = item[1];
      var share = node.value / focus.value;
      if (share < MIN_SHARE) continue;
      out.appendChild(box(node, x, share, node.parent ? "" : " root"));
      if (node.depth > deepest) deepest = node.depth;
      for (var i = node.children.length - 1, cx = x + share; i >= 0; i--) {
        cx -= node.children[i].value / focus.value;
        todo.push([node.children[i], cx]);
      }
    }
    chart.replaceChildren(out);
    chart.style.height = ((deepest + 1) * ROW) + "px";
    reset.disabled = focus === root;
  }

  function describe(node) {
    var text = name(node);
    var at = where(node);
    if (at) text += " \u2014 " + at;
    text += " \u2014 " + formatValue(node.value) + " (" + percent(node.value, root.value) +
      " of total";
    if (focus !== root) text += ", " + percent(node.value, focus.value) + " of zoomed frame";
    return text + ")";
  }

  function zoom(node) {
    focus = node;
    render();
    statusLine.textContent = node === root ? defaultStatus : "Zoomed: " + describe(node);
  }

  function selectType(t) {
    typeIndex = t;
    unit = data.sample_types[t] ? data.sample_types[t].unit : "";
    root = build(t, groupIndex);
    var nothing = root.value === 0;
    empty.hidden = !nothing;
    chart.hidden = nothing;
    statusLine.hidden = nothing;
    zoom(root);
    updateMatches();
  }

  // ---- wiring -------------------------------------------------------------------------------
  function frameAt(target) {
    return target && target.classList && target.classList.contains("frame") ?
      nodeOf.get(target) : undefined;
  }

  chart.addEventListener("click", function (e) {
    var node = frameAt(e.target);
    if (node) zoom(node === focus && node.parent ? node.parent : node);
  });
  chart.addEventListener("keydown", function (e) {
    var node = frameAt(e.target);
    if (node && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      zoom(node);
    }
  });
  function show(e) {
    var node = frameAt(e.target);
    if (node) statusLine.textContent = describe(node);
  }
  chart.addEventListener("mouseover", show);
  chart.addEventListener("focusin", show);
  chart.addEventListener("mouseleave", function () {
    statusLine.textContent = focus === root ? defaultStatus : "Zoomed: " + describe(focus);
  });
  reset.addEventListener("click", function () { zoom(root); });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && root) {
      if (e.target === search && search.value) {
        search.value = "";
        query = "";
        updateMatches();
      } else {
        zoom(root);
      }
    }
  });
  search.addEventListener("input", function () {
    query = search.value.trim().toLowerCase();
    updateMatches();
  });
  select.addEventListener("change", function () { selectType(Number(select.value)); });

  // ---- grouping: the <select> and the URL fragment (#group=task) share one state -----------
  function groupFromHash(otherwise) {
    var wanted = new URLSearchParams(location.hash.slice(1)).get("group");
    return wanted === null ? otherwise : data.label_keys.indexOf(wanted); // unknown: ungrouped
  }
  function selectGroup(g) {
    groupIndex = g;
    groupSelect.value = g < 0 ? "" : data.label_keys[g];
    selectType(typeIndex);
  }
  groupSelect.addEventListener("change", function () {
    var key = groupSelect.value;
    // replaceState fires no hashchange; the address can be shared to open the same grouping
    history.replaceState(null, "", key ? "#group=" + encodeURIComponent(key) :
      location.pathname + location.search);
    selectGroup(data.label_keys.indexOf(key));
  });
  window.addEventListener("hashchange", function () {
    selectGroup(groupFromHash(-1));
  });

  if (data.comments && data.comments.length) el("comments").textContent = data.comments.join(" \u00b7 ");
  if (data.sample_types.length > 1) {
    data.sample_types.forEach(function (st, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = st.type + " (" + st.unit + ")";
      select.appendChild(option);
    });
    select.value = String(typeIndex);
    el("sample-type-label").hidden = false;
  }
  if (data.label_keys.length) {
    data.label_keys.forEach(function (key) {
      var option = document.createElement("option");
      option.value = key;
      option.textContent = key;
      groupSelect.appendChild(option);
    });
    el("group-label").hidden = false;
    groupIndex = groupFromHash(groupIndex);
  }
  selectGroup(groupIndex);
})();
