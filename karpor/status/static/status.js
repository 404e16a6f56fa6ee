// The status page's refresh: every few seconds, /status.json is fetched and
// the page's <main> is rendered again from it, with the same markup the
// server renders (karpor/status/page.py: keep the two in step).  Text is
// only ever set as text (text nodes, attribute values): never as HTML.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var W = 160, H = 36, NONE = "\u2014";

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    setAll(el, attrs);
    add(el, children);
    return el;
  }
  function s(tag, attrs, children) {
    var el = document.createElementNS(SVG, tag);
    setAll(el, attrs);
    add(el, children);
    return el;
  }
  function setAll(el, attrs) {
    for (var k in attrs || {}) {
      if (Object.prototype.hasOwnProperty.call(attrs, k)) el.setAttribute(k, String(attrs[k]));
    }
  }
  function add(el, children) {
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
  }

  function rate(v) { return v === null || v === undefined ? NONE : (v < 100 ? v.toFixed(2) : v.toFixed(0)) + "/s"; }
  function secs(v) { return v === null || v === undefined ? NONE : (v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s"); }
  function bytes(v) { return v === null || v === undefined ? NONE : (v / 1048576).toFixed(1) + " MiB"; }
  function ratio(v) { return v === null || v === undefined ? NONE : (v * 100).toFixed(1) + "%"; }
  function time(v) { return v ? h("time", { datetime: v }, [v.replace("T", " ")]) : NONE; }
  function href(name) { return "/clusters/" + encodeURIComponent(name); }
  function badge(health) {
    var text = { healthy: "\u2713 Healthy", unhealthy: "\u2717 Unhealthy" }[health] || "? Unknown";
    return h("span", { "class": "badge " + health }, [text]);
  }
  function reach(c) {
    var a = c.agent;
    if (c.reach !== "tunnel" || !a) return "direct";
    if (!a.connected) return "tunnel, no agent connected";
    return "tunnel, agent " + (a.version || "?") + " connected since " + (a.since || "?").replace("T", " ");
  }
  function num(x) { return h("td", { "class": "num" }, [x]); }

  function chart(points, keys, label, unit) {
    var top = 0, any = false;
    points.forEach(function (p) {
      keys.forEach(function (k) {
        if (typeof p[k] === "number") { any = true; top = Math.max(top, p[k]); }
      });
    });
    var last = points.length ? points[points.length - 1][keys[keys.length - 1]] : null;
    var fmt = unit === "s" ? secs : rate;
    var summary = any ? label + ": now " + fmt(last) + ", peak " + fmt(top) : label + ": no data yet";
    var svg = s("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H,
                         role: "img", "aria-label": summary },
                [s("title", {}, [summary]),
                 s("line", { "class": "axis", x1: 0, y1: H - 1, x2: W, y2: H - 1 })]);
    keys.forEach(function (k) {
      var c = coords(points.map(function (p) { return p[k]; }), top);
      if (c) svg.appendChild(s("polyline", { "class": "line " + k, points: c }));
    });
    return svg;
  }
  function coords(values, top) {
    var n = values.length, scale = top > 0 ? top : 1, out = [];
    values.forEach(function (v, i) {
      if (typeof v !== "number") return;
      var x = W * (n > 1 ? i / (n - 1) : 1), y = (H - 2) * (1 - v / scale) + 1;
      out.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    if (out.length === 1) {
      var y = out[0].split(",")[1];
      out = ["0.0," + y, W.toFixed(1) + "," + y];
    }
    return out.join(" ");
  }

  function table(id, caption, heads, rows, empty) {
    if (!rows.length) rows = [h("tr", {}, [h("td", { colspan: heads.length, "class": "empty" }, [empty])])];
    return h("div", { "class": "scroll" }, [h("table", { id: id }, [
      h("caption", {}, [caption]),
      h("thead", {}, [h("tr", {}, heads.map(function (x) { return h("th", { scope: "col" }, [x]); }))]),
      h("tbody", {}, rows)])]);
  }
  function rowHead(x) { return h("th", { scope: "row" }, [x]); }
  function link(name) { return name ? h("a", { href: href(name) }, [name]) : NONE; }

  var CLUSTER_HEADS = ["Cluster", "Health", "Version", "Reached", "Last probe", "Requests", "Errors",
                       "p50", "p99", "Watches", "Sessions", "Requests/s, 5 min"];

  function clusterRow(c) {
    var w = c.windows["5m"];
    return h("tr", { "class": "health-" + c.health, "data-cluster": c.name, "data-health": c.health }, [
      h("th", { scope: "row" }, [h("a", { href: href(c.name) }, [c.name]),
                                 c.displayName ? h("span", { "class": "sub" }, [c.displayName]) : null]),
      h("td", {}, [badge(c.health)]),
      h("td", {}, [c.version || NONE]),
      h("td", {}, [reach(c)]),
      h("td", {}, [time(c.lastProbe), h("span", { "class": "sub" }, [c.message || ""])]),
      num(rate(w.rate)), num(rate(w.errorRate)), num(secs(w.p50)), num(secs(w.p99)),
      num(c.watches), num(c.sessions),
      h("td", {}, [chart(c.series["5m"], ["rate"], "Requests per second, 5 minutes", "/s")])]);
  }

  function problems(list, caption) {
    return table("problems", caption, ["Time", "Kind", "Cluster", "Message"], list.map(function (p) {
      return h("tr", {}, [h("td", {}, [time(p.time)]), h("td", {}, [p.kind]),
                          h("td", {}, [link(p.cluster)]), h("td", {}, [p.message])]);
    }), "No problems seen.");
  }

  function gateway(g) {
    var workers = table("workers", "Worker processes",
      ["Slot", "PID", "Generation", "State", "Restarts", "Memory (RSS)"], g.workers.map(function (w) {
        return h("tr", {}, [num(w.slot), num(w.pid), num(w.generation), h("td", {}, [w.state]),
                            num(w.restarts), num(bytes(w.rssBytes))]);
      }), "No worker process.");
    var r = g.reload, readable = r.directoryReadable;
    var config = table("reload", "Configuration and processes", ["What", "Value"], [
      ["Reload generation", r.generation], ["Reloads (all workers)", r.reloads],
      ["Reloads with problems", r.reloadErrors],
      ["Clusters directory", readable === null ? NONE : readable ? "readable" : "NOT readable"],
      ["Worker restarts", g.restarts], ["Rolling restarts", g.rollingRestarts],
      ["Crash-looping slots", g.crashLooping.join(", ") || "none"]
    ].map(function (kv) { return h("tr", {}, [rowHead(kv[0]), h("td", {}, [kv[1]])]); }), "");
    var rejected = table("rejected", "Rejected requests by reason", ["Reason", "Last 5 min", "Total"],
      g.rejected.map(function (x) { return h("tr", {}, [rowHead(x.reason), num(x.last5m), num(x.total)]); }),
      "None.");
    var certs = table("certificates", "Certificates", ["Certificate", "Expires", "Days left"],
      g.certificates.map(function (c) {
        var soon = c.daysLeft !== null && c.daysLeft < 30 ? " warn" : "";
        return h("tr", {}, [rowHead(c.name), h("td", {}, [time(c.notAfter), c.problem]),
                            h("td", { "class": "num" + soon }, [c.daysLeft === null ? NONE : c.daysLeft])]);
      }), "Unknown.");
    var streams = table("streams", "Long-running requests open", ["Kind", "Open"],
      Object.keys(g.streams).sort().map(function (k) { return h("tr", {}, [rowHead(k), num(g.streams[k])]); }),
      "None.");
    var parts = [h("h2", { id: "h-gateway" }, ["Gateway"]),
                 h("div", { "class": "grid" }, [workers, config, rejected, certs, streams])];
    if (r.problems.length) {
      parts.push(h("h3", { id: "h-reload-problems" }, ["Last reload problems"]));
      parts.push(h("ul", { "class": "problems" }, r.problems.map(function (p) { return h("li", {}, [p]); })));
    }
    return h("section", { "aria-labelledby": "h-gateway" }, parts);
  }

  function overview(doc) {
    return [
      h("section", { "aria-labelledby": "h-clusters" }, [h("h2", { id: "h-clusters" }, ["Clusters"]),
        table("clusters", "Clusters: health, and traffic over the last 5 minutes", CLUSTER_HEADS,
              doc.clusters.map(clusterRow), "No cluster defined.")]),
      gateway(doc.gateway),
      h("section", { "aria-labelledby": "h-problems" }, [h("h2", { id: "h-problems" }, ["Problems"]),
        problems(doc.problems, "The last problems, newest first")])];
  }

  function clusterView(doc, name) {
    var back = h("p", {}, [h("a", { href: "/" }, ["\u2190 All clusters"])]);
    var c = doc.clusters.filter(function (x) { return x.name === name; })[0];
    if (!c) {
      return [back, h("section", { "aria-labelledby": "h-cluster" }, [h("h2", { id: "h-cluster" }, [name]),
        h("p", { "class": "empty" }, ["No cluster of that name is defined."])])];
    }
    var labels = Object.keys(c.labels).sort().map(function (k) { return k + "=" + c.labels[k]; }).join(", ");
    var details = table("details", "Cluster details", ["What", "Value"], [
      ["Health", badge(c.health)], ["Display name", c.displayName || NONE], ["Provider", c.provider || NONE],
      ["Labels", labels || NONE], ["Endpoint", c.endpoint || NONE], ["Reached", reach(c)],
      ["Version", c.version || NONE], ["Last probe", time(c.lastProbe)], ["Probe message", c.message || NONE],
      ["Open watches", c.watches], ["Open sessions", c.sessions]
    ].map(function (kv) { return h("tr", {}, [rowHead(kv[0]), h("td", {}, [kv[1]])]); }), "");
    var rows = ["5m", "60m"].map(function (label) {
      var w = c.windows[label], pts = c.series[label];
      return h("tr", {}, [rowHead(label), num(w.requests), num(rate(w.rate)), num(rate(w.errorRate)),
        num(ratio(w.errorRatio)), num(secs(w.p50)), num(secs(w.p99)),
        h("td", {}, [chart(pts, ["rate"], "Requests per second, " + label, "/s")]),
        h("td", {}, [chart(pts, ["errorRate"], "Errors per second, " + label, "/s")]),
        h("td", {}, [chart(pts, ["p50", "p99"], "Latency p50 and p99, " + label, "s")])]);
    });
    var traffic = table("traffic", "Traffic over the last 5 and 60 minutes",
      ["Window", "Requests", "Req/s", "Errors/s", "Error ratio", "p50", "p99", "Requests/s", "Errors/s",
       "Latency p50, p99"], rows, "");
    var mine = doc.problems.filter(function (p) { return p.cluster === name; });
    return [back,
      h("section", { "aria-labelledby": "h-cluster", "class": "health-" + c.health, "data-cluster": name,
                     "data-health": c.health }, [h("h2", { id: "h-cluster" }, [name]), details]),
      h("section", { "aria-labelledby": "h-traffic" }, [h("h2", { id: "h-traffic" }, ["Traffic"]), traffic]),
      h("section", { "aria-labelledby": "h-problems" }, [h("h2", { id: "h-problems" }, ["Problems"]),
        problems(mine, "The last problems of " + name + ", newest first")])];
  }

  // A reader's place is kept: no refresh while a link in the page has the
  // keyboard focus or text in it is selected (the next one renders).
  function inUse(main) {
    var active = document.activeElement;
    if (active && active !== document.body && main.contains(active)) return true;
    var sel = window.getSelection ? window.getSelection() : null;
    return !!(sel && !sel.isCollapsed && main.contains(sel.anchorNode));
  }

  function render(doc) {
    var body = document.body, main = document.getElementById("content");
    if (inUse(main)) return;
    var parts = body.dataset.view === "cluster" ? clusterView(doc, body.dataset.cluster) : overview(doc);
    main.replaceChildren.apply(main, parts);
    var updated = document.getElementById("updated");
    updated.replaceChildren("Sampled ", time(doc.sampledAt),
                            "; refreshes every " + Math.round(doc.sampleInterval) + " s");
    body.dataset.refreshed = String(doc.generatedAt);
  }

  function refresh() {
    fetch("/status.json", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (doc) { if (doc && doc.version === 1) render(doc); })
      .catch(function () { document.body.dataset.stale = "true"; })
      .then(function () { window.setTimeout(refresh, 5000); });
  }
  refresh();
})();
