// One job's page: while the job runs, its events stream in over
// Server-Sent Events (GET /jobs/{id}/events: `job` events, then one `end`);
// the cancel button posts without leaving the page. Text goes in with
// textContent only.
(function () {
  "use strict";

  var list = document.getElementById("events");
  if (!list) return;
  var src = list.getAttribute("data-src");
  var next = parseInt(list.getAttribute("data-next") || "0", 10);
  var running = list.getAttribute("data-running") === "1";
  var note = document.getElementById("job-stream");
  var stateEl = document.getElementById("job-state");
  var cancel = document.getElementById("cancel");
  var empty = document.getElementById("no-events");

  function say(text, level) {
    if (!note) return;
    note.textContent = text;
    note.className = "note" + (level ? " " + level : "");
    note.hidden = !text;
  }

  function setState(s) {
    if (!stateEl) return;
    stateEl.textContent = s;
    stateEl.className = "pill st-" + s;
  }

  // Follow the output while the reader is at its end.
  function atEnd() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function clock(t) {
    var i = t.indexOf("T");
    return i < 0 ? t : t.slice(i + 1).replace(/Z$/, "");
  }

  function add(e) {
    if (typeof e.seq !== "number" || e.seq < next) return; // already on the page
    next = e.seq + 1;
    var follow = atEnd();
    var li = document.createElement("li");
    li.className = "ev s-" + String(e.stream).replace(/[^a-z_-]/gi, "") +
      (e.event ? " e-" + String(e.event).replace(/[^a-z_-]/gi, "") : "");
    li.setAttribute("data-seq", String(e.seq));
    var time = document.createElement("time");
    time.setAttribute("datetime", e.time || "");
    time.textContent = clock(e.time || "");
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    if (e.event) {
      var name = document.createElement("span");
      name.className = "ev-name";
      name.textContent = e.event;
      li.appendChild(name);
      li.appendChild(document.createTextNode(" "));
    }
    var text = document.createElement("span");
    text.className = "ev-text";
    text.textContent = e.text;
    li.appendChild(text);
    list.appendChild(li);
    if (empty) empty.hidden = true;
    if (e.stream === "state" && e.event) setState(e.event);
    if (follow) list.scrollTop = list.scrollHeight;
  }

  list.scrollTop = list.scrollHeight;

  if (cancel) {
    // On the document, so app.js's listener (registered first) has asked
    // for confirmation (data-confirm) before this one runs.
    document.addEventListener("submit", function (ev) {
      if (ev.target !== cancel || ev.defaultPrevented || !window.fetch) return;
      ev.preventDefault();
      var body = new URLSearchParams(new FormData(cancel));
      fetch(cancel.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: body
      }).then(function (r) {
        if (r.ok) {
          say("Cancel requested: the job's processes get SIGTERM, then SIGKILL.", "warn");
          cancel.hidden = true;
        } else {
          return r.text().then(function (t) {
            var doc = new DOMParser().parseFromString(t, "text/html");
            var msg = doc.getElementById("error");
            say("Cancelling failed: " + (msg ? msg.textContent : "HTTP " + r.status), "bad");
            cancel.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
          });
        }
      }).catch(function (e) {
        say("Cancelling failed: " + e.message, "bad");
        cancel.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      });
    });
  }

  if (!running || !src || !("EventSource" in window)) return;

  say("Following the output live…");
  var es = new EventSource(src);
  es.addEventListener("job", function (m) {
    try {
      add(JSON.parse(m.data));
    } catch (e) {
      /* an unreadable event: the next one still counts */
    }
    if (note && note.className === "note bad") say("Following the output live…");
  });
  es.addEventListener("end", function (m) {
    es.close();
    setState(m.data);
    if (cancel) cancel.hidden = true;
    say("The job has ended (" + m.data + "). Reloading for its result…");
    // The finished page shows the exit code and the files the job left.
    window.setTimeout(function () { location.reload(); }, 1500);
  });
  es.onerror = function () {
    if (es.readyState === 2) {
      say("The output stream closed: reload the page to see more.", "bad");
    } else {
      say("The output stream dropped: reconnecting…", "bad");
    }
  };
})();
