// The Live page: one snapshot a second (crate::live::Snapshot as JSON) over a
// WebSocket; when the WebSocket is refused (iOS Safari refuses wss:// to a
// certificate trusted only by exception), over Server-Sent Events; when those
// fail too, by polling. The page says which it uses. Data goes into the page
// with textContent only.
(function () {
  "use strict";

  var state = document.getElementById("live-state");
  if (!state) return;
  var paths = {
    ws: state.getAttribute("data-ws"),
    sse: state.getAttribute("data-sse"),
    poll: state.getAttribute("data-poll")
  };
  var boxes = {
    host: document.getElementById("tiles-host"),
    nics: document.getElementById("tiles-nics"),
    srt: document.getElementById("tiles-srt"),
    mcast: document.getElementById("tiles-mcast")
  };
  var exporterNote = document.getElementById("live-exporter");
  var seqEl = document.getElementById("live-seq");
  var timeEl = document.getElementById("live-time");

  var mode = null;        // "ws", "sse", "poll" or "ended"
  var lastAt = 0;         // Date.now() of the last snapshot
  var lastTime = "";      // the last snapshot's own time
  var wsDrops = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // The transport line: a sentence, and a link where one helps.
  function say(text, level, link) {
    state.textContent = text;
    state.className = "note" + (level ? " " + level : "");
    if (link) {
      state.appendChild(document.createTextNode(" "));
      var a = el("a", null, link[1]);
      a.href = link[0];
      state.appendChild(a);
    }
  }

  // ---- formatting ----
  function fixed(v, digits, unit) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    return Number(v).toFixed(digits) + (unit || "");
  }
  function bits(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1e9) return (v / 1e9).toFixed(2) + " Gb/s";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + " Mb/s";
    if (v >= 1e3) return (v / 1e3).toFixed(0) + " kb/s";
    return v.toFixed(0) + " b/s";
  }
  function bytes(v) {
    if (v === null || v === undefined) return "–";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function count(total, delta) {
    return String(total) + (delta ? " (+" + delta + ")" : "");
  }
  function level(v, warn, bad) {
    if (v === null || v === undefined) return "idle";
    return v >= bad ? "bad" : v >= warn ? "warn" : "";
  }

  // ---- tiles ----
  // A tile: {key, title, sub, big, rows: [[label, value]], level, flag}.
  function fill(t, s) {
    t.className = "tile" + (s.level ? " " + s.level : "");
    t.textContent = "";
    var h = el("h3", null, s.title);
    if (s.sub) {
      h.appendChild(document.createTextNode(" "));
      h.appendChild(el("small", null, s.sub));
    }
    t.appendChild(h);
    t.appendChild(el("p", "big", s.big));
    if (s.rows && s.rows.length) {
      var dl = el("dl");
      s.rows.forEach(function (r) {
        dl.appendChild(el("dt", null, r[0]));
        dl.appendChild(el("dd", null, r[1]));
      });
      t.appendChild(dl);
    }
    if (s.flag) t.appendChild(el("p", "flag", s.flag));
  }

  function render(box, items, empty) {
    if (!box) return;
    if (!box.tiles) {
      box.textContent = "";
      box.tiles = {};
      box.empty = el("p", "muted");
    }
    var seen = {};
    items.forEach(function (s, i) {
      var t = box.tiles[s.key];
      if (!t) {
        t = el("div", "tile");
        box.tiles[s.key] = t;
      }
      fill(t, s);
      if (box.children[i] !== t) box.insertBefore(t, box.children[i] || null);
      seen[s.key] = true;
    });
    Object.keys(box.tiles).forEach(function (k) {
      if (!seen[k]) {
        box.removeChild(box.tiles[k]);
        delete box.tiles[k];
      }
    });
    if (items.length) {
      if (box.empty.parentNode) box.removeChild(box.empty);
    } else {
      box.empty.textContent = empty;
      if (!box.empty.parentNode) box.appendChild(box.empty);
    }
  }

  function hostTiles(s) {
    var out = [{
      key: "cpu", title: "CPU", big: fixed(s.cpu_percent, 0, " %"),
      level: level(s.cpu_percent, 80, 95)
    }];
    var m = s.mem;
    out.push({
      key: "mem", title: "Memory", big: m ? fixed(m.percent, 0, " %") : "–",
      rows: m ? [["used", bytes(m.used)], ["of", bytes(m.total)]] : [],
      level: m ? level(m.percent, 85, 95) : "idle"
    });
    var d = s.disk;
    out.push({
      key: "disk", title: "Disk /", big: d ? fixed(d.percent, 0, " %") : "–",
      rows: d ? [["used", bytes(d.used)], ["of", bytes(d.total)]] : [],
      level: d ? level(d.percent, 85, 95) : "idle",
      flag: d && d.percent >= 95 ? "almost full" : ""
    });
    return out;
  }

  function nicTiles(list) {
    return (list || []).map(function (n) {
      var up = n.oper === "up";
      var lvl = "", flag = "";
      if (!up) {
        lvl = n.label ? "warn" : "idle";
        flag = "link " + n.oper;
      }
      if (n.errors_delta > 0) {
        lvl = "bad";
        flag = n.errors_delta + " new errors or drops";
      }
      return {
        key: n.name,
        title: n.label || n.name,
        sub: n.label ? n.name : "",
        big: bits(n.rx_bps) + " in",
        rows: [
          ["out", bits(n.tx_bps)],
          ["rx errors", String(n.rx_errors)],
          ["tx errors", String(n.tx_errors)],
          ["rx dropped", String(n.rx_dropped)]
        ],
        level: lvl,
        flag: flag
      };
    });
  }

  function srtTiles(list) {
    return (list || []).map(function (s) {
      var lvl = "", flag = "";
      if (s.lost_delta > 0) {
        lvl = "warn";
        flag = s.lost_delta + " packets lost in the last second";
      }
      if (s.headroom_ms !== null && s.headroom_ms !== undefined && s.headroom_ms < 0) {
        lvl = "bad";
        flag = "latency too low for this RTT: losses cannot be recovered in time";
      }
      if (!s.up) {
        lvl = "bad";
        flag = "no fresh statistics: the stream is down";
      }
      var rate = s.recv_mbps !== null && s.recv_mbps !== undefined ? s.recv_mbps : s.send_mbps;
      return {
        key: s.name,
        title: s.name,
        big: fixed(rate, 1, " Mb/s"),
        rows: [
          ["RTT", fixed(s.rtt_ms, 1, " ms")],
          ["lost", count(s.lost, s.lost_delta)],
          ["retransmitted", count(s.retrans, s.retrans_delta)],
          ["send", fixed(s.send_mbps, 1, " Mb/s")],
          ["receive", fixed(s.recv_mbps, 1, " Mb/s")],
          ["buffer", fixed(s.buffer_ms, 0, " ms")],
          ["headroom", fixed(s.headroom_ms, 0, " ms")]
        ],
        level: lvl,
        flag: flag
      };
    });
  }

  function mcastTiles(list) {
    return (list || []).map(function (g) {
      var lvl = "", flag = "";
      if (g.expected_mbps && g.mbps !== null && g.mbps !== undefined && g.mbps < g.expected_mbps * 0.5) {
        lvl = "warn";
        flag = "below the expected " + fixed(g.expected_mbps, 1, " Mb/s");
      }
      if (g.joined === false) {
        lvl = "warn";
        flag = "not joined on " + g.interface;
      }
      if (g.missing === true) {
        lvl = "bad";
        flag = "no packets: the stream is missing";
      }
      if (g.mbps === null || g.mbps === undefined) {
        if (!lvl) lvl = "idle";
        if (!flag) flag = "no figures from the exporter";
      }
      return {
        key: g.group + "@" + g.interface,
        title: g.group,
        sub: g.interface,
        big: fixed(g.mbps, 1, " Mb/s"),
        rows: [
          ["packets/s", fixed(g.pps, 0, "")],
          ["expected", fixed(g.expected_mbps, 1, " Mb/s")],
          ["joined", g.joined === null || g.joined === undefined ? "–" : g.joined ? "yes" : "no"]
        ],
        level: lvl,
        flag: flag
      };
    });
  }

  function take(text) {
    var s;
    try {
      s = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (!s || !s.seq) {
      // {"seq":0}: the sampler has not sampled yet.
      return;
    }
    lastAt = Date.now();
    lastTime = s.time || "";
    seqEl.textContent = String(s.seq);
    timeEl.textContent = lastTime ? new Date(lastTime).toLocaleTimeString() : "–";
    render(boxes.host, hostTiles(s), "");
    render(boxes.nics, nicTiles(s.nics), "No network interfaces.");
    render(boxes.srt, srtTiles(s.srt), "No SRT streams are configured or reported.");
    render(boxes.mcast, mcastTiles(s.mcast), "No multicast groups are configured or reported.");
    if (s.exporter_error) {
      exporterNote.textContent = "SRT and multicast figures are missing: the video exporter does not answer (" + s.exporter_error + ").";
      exporterNote.hidden = false;
    } else {
      exporterNote.hidden = true;
    }
    stale(false);
  }

  function stale(on) {
    Object.keys(boxes).forEach(function (k) {
      if (boxes[k]) boxes[k].classList.toggle("stale", on);
    });
  }

  // Figures older than 5 s are shown faded, with their age.
  window.setInterval(function () {
    if (!lastAt || mode === "ended") return;
    var age = Math.round((Date.now() - lastAt) / 1000);
    if (age >= 5) {
      stale(true);
      timeEl.textContent = (lastTime ? new Date(lastTime).toLocaleTimeString() : "–") + " (no new figures for " + age + " s)";
    }
  }, 1000);

  function ended() {
    mode = "ended";
    say("Your session has ended.", "bad", ["/login?next=%2Flive", "Log in again"]);
    stale(true);
  }

  // ---- transports ----
  function startWs() {
    if (!("WebSocket" in window)) {
      startSse("this browser has no WebSocket");
      return;
    }
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + paths.ws;
    var ws, got = false;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      startSse("the WebSocket was refused");
      return;
    }
    mode = "ws";
    var timer = window.setTimeout(function () {
      if (!got) ws.close();
    }, 5000);
    ws.onmessage = function (m) {
      if (!got) {
        got = true;
        wsDrops = 0;
        say("Live over a WebSocket, every second.");
      }
      take(m.data);
    };
    ws.onclose = function () {
      window.clearTimeout(timer);
      if (mode !== "ws") return;
      if (got) {
        wsDrops++;
        if (wsDrops >= 3) {
          startSse("the WebSocket kept dropping");
        } else {
          say("The connection dropped: reconnecting…", "warn");
          window.setTimeout(startWs, 1000 * wsDrops);
        }
      } else {
        startSse("the WebSocket was refused");
      }
    };
  }

  function startSse(why) {
    if (!("EventSource" in window)) {
      startPoll(why + ", and this browser has no Server-Sent Events");
      return;
    }
    mode = "sse";
    var es = new EventSource(paths.sse);
    var got = false;
    var giveUp = function (reason) {
      es.close();
      if (mode === "sse") startPoll(why + ", and " + reason);
    };
    var timer = window.setTimeout(function () {
      if (!got) giveUp("Server-Sent Events gave nothing");
    }, 6000);
    es.onmessage = function (m) {
      if (!got) {
        got = true;
        window.clearTimeout(timer);
        say("Live over Server-Sent Events: " + why + ". (iPhones refuse a WebSocket to a certificate trusted only by exception.)", "warn",
          ["/trust", "Trust this unit"]);
      }
      take(m.data);
    };
    es.onerror = function () {
      if (!got) {
        window.clearTimeout(timer);
        giveUp("Server-Sent Events failed too");
      } else if (es.readyState === 2) {
        // Closed for good (the session ended, or the app restarted): poll,
        // which tells the two apart.
        giveUp("the event stream closed");
      }
      // Otherwise the browser reconnects by itself.
    };
  }

  function startPoll(why) {
    mode = "poll";
    say("Live by polling once a second: " + why + ".", "warn", ["/trust", "Trust this unit"]);
    var failing = false;
    var tick = function () {
      if (mode !== "poll") return;
      if (document.hidden) {
        window.setTimeout(tick, 1000);
        return;
      }
      fetch(paths.poll, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 401) {
            ended();
            return null;
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (t) {
          if (t === null) return;
          if (failing) {
            failing = false;
            say("Live by polling once a second: " + why + ".", "warn", ["/trust", "Trust this unit"]);
          }
          take(t);
        })
        .catch(function (e) {
          failing = true;
          say("The unit does not answer (" + e.message + "): trying again…", "bad");
        })
        .then(function () {
          if (mode === "poll") window.setTimeout(tick, 1000);
        });
    };
    tick();
  }

  startWs();
})();
