// The History page: each chart is a named query that the web app runs on
// VictoriaMetrics (GET /api/history/{chart}?range=1h answers with
// query_range's JSON: a matrix), drawn with uPlot (vendored, loaded on this
// page only).
(function () {
  "use strict";

  var charts = Array.prototype.slice.call(document.querySelectorAll(".chart[data-chart]"));
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".ranges button[data-range]"));
  if (!charts.length) return;
  var ranges = buttons.map(function (b) { return b.getAttribute("data-range"); });
  var PALETTE = ["#1d72e8", "#e8591d", "#16a34a", "#a23ee8", "#d4a106", "#0aa5b8", "#e0407b", "#6b7280"];
  var plots = {};

  function current() {
    var m = /range=([0-9a-z]+)/.exec(location.hash);
    if (m && ranges.indexOf(m[1]) >= 0) return m[1];
    return ranges.indexOf("1h") >= 0 ? "1h" : ranges[0];
  }

  function si(v, unit) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    var a = Math.abs(v);
    if (unit === "b/s") {
      if (a >= 1e9) return (v / 1e9).toFixed(2) + " Gb/s";
      if (a >= 1e6) return (v / 1e6).toFixed(1) + " Mb/s";
      if (a >= 1e3) return (v / 1e3).toFixed(0) + " kb/s";
      return v.toFixed(0) + " b/s";
    }
    var digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
    return v.toFixed(digits) + (unit === "%" ? " %" : " " + unit);
  }

  // Axis ticks: short (the unit is in the chart's title).
  function short(v, unit) {
    if (v === null || v === undefined || isNaN(v)) return "";
    var a = Math.abs(v);
    var n = function (x) { return String(Math.round(x * 10) / 10); };
    if (unit === "b/s") {
      if (a >= 1e9) return n(v / 1e9) + "G";
      if (a >= 1e6) return n(v / 1e6) + "M";
      if (a >= 1e3) return n(v / 1e3) + "k";
      return n(v);
    }
    return n(v) + (unit === "%" ? "%" : "");
  }

  function label(metric, fallback) {
    var parts = [];
    Object.keys(metric || {}).sort().forEach(function (k) {
      if (k !== "__name__") parts.push(metric[k]);
    });
    return parts.length ? parts.join(" ") : fallback;
  }

  // query_range's matrix to uPlot's columns: one x column (the union of the
  // timestamps), one y column per series with null where it has no point.
  function columns(result) {
    var xs = {};
    result.forEach(function (r) {
      (r.values || []).forEach(function (p) { xs[p[0]] = true; });
    });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var at = {};
    x.forEach(function (t, i) { at[t] = i; });
    var cols = [x];
    result.forEach(function (r) {
      var y = new Array(x.length).fill(null);
      (r.values || []).forEach(function (p) {
        var v = parseFloat(p[1]);
        y[at[Number(p[0])]] = isFinite(v) ? v : null;
      });
      cols.push(y);
    });
    return cols;
  }

  function message(chart, text, level) {
    var p = chart.querySelector(".chart-msg");
    p.textContent = text;
    p.className = "chart-msg " + (level || "muted");
    p.hidden = !text;
  }

  function width(chart) {
    return Math.max(200, chart.querySelector(".plot").clientWidth);
  }

  function draw(chart, result) {
    var id = chart.getAttribute("data-chart");
    var unit = chart.getAttribute("data-unit");
    var title = chart.getAttribute("data-title");
    var box = chart.querySelector(".plot");
    if (plots[id] && result.length && plots[id].series.length === result.length + 1) {
      plots[id].setData(columns(result));
      message(chart, "");
      return;
    }
    if (plots[id]) {
      plots[id].destroy();
      delete plots[id];
    }
    box.textContent = "";
    if (!result.length) {
      message(chart, "No data in this range (the metric is not collected on this unit, or nothing was measured).");
      return;
    }
    var fg = getComputedStyle(document.body).color;
    var grid = "rgba(128,128,128,0.2)";
    var series = [{}];
    result.forEach(function (r, i) {
      series.push({
        label: label(r.metric, title),
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        spanGaps: false,
        value: function (u, v) { return si(v, unit); }
      });
    });
    var opts = {
      width: width(chart),
      height: 200,
      series: series,
      scales: { x: { time: true } },
      axes: [
        { stroke: fg, grid: { stroke: grid }, ticks: { stroke: grid } },
        {
          stroke: fg, grid: { stroke: grid }, ticks: { stroke: grid }, size: 52,
          values: function (u, vals) { return vals.map(function (v) { return short(v, unit); }); }
        }
      ],
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } }
    };
    plots[id] = new window.uPlot(opts, columns(result), box);
    message(chart, "");
  }

  function load(chart) {
    var id = chart.getAttribute("data-chart");
    var url = "/api/history/" + encodeURIComponent(id) + "?range=" + encodeURIComponent(current());
    if (!plots[id]) message(chart, "Loading…");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        return r.text().then(function (t) { return { r: r, t: t }; });
      })
      .then(function (x) {
        if (x.r.status === 401) {
          message(chart, "Your session has ended: reload the page to log in again.", "error");
          return;
        }
        var j = null;
        try {
          j = JSON.parse(x.t);
        } catch (e) {
          // Not JSON: the web app's error page (VictoriaMetrics down, ...).
          var doc = new DOMParser().parseFromString(x.t, "text/html");
          var err = doc.getElementById("error");
          throw new Error(err ? err.textContent : "HTTP " + x.r.status);
        }
        if (!x.r.ok || j.status !== "success") {
          throw new Error((j && j.error) || "HTTP " + x.r.status);
        }
        if (typeof window.uPlot !== "function") throw new Error("the chart library did not load");
        draw(chart, (j.data && j.data.result) || []);
      })
      .catch(function (e) {
        if (plots[id]) {
          message(chart, "Not refreshed: " + e.message, "error");
        } else {
          chart.querySelector(".plot").textContent = "";
          message(chart, e.message, "error");
        }
      });
  }

  function loadAll() {
    charts.forEach(load);
  }

  function pick(range) {
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", b.getAttribute("data-range") === range ? "true" : "false");
    });
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      var r = b.getAttribute("data-range");
      history.replaceState(null, "", "#range=" + r);
      pick(r);
      Object.keys(plots).forEach(function (k) { plots[k].destroy(); delete plots[k]; });
      loadAll();
    });
  });

  var resizing = 0;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(function () {
      charts.forEach(function (c) {
        var p = plots[c.getAttribute("data-chart")];
        if (p) p.setSize({ width: width(c), height: 200 });
      });
    }, 150);
  });

  // Fresh figures once a minute while the page is in view.
  window.setInterval(function () {
    if (!document.hidden) loadAll();
  }, 60000);

  pick(current());
  loadAll();
})();
