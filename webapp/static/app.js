// flypack-web: behaviour every page shares. No inline handlers (the CSP
// forbids them): forms and elements say what they want in data-* attributes.
(function () {
  "use strict";

  // <form data-confirm="..."> asks before it submits; a submitted form's
  // buttons are disabled so a second tap does not start a second job.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement)) return;
    var msg = form.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
      return;
    }
    if (ev.defaultPrevented) return;
    window.setTimeout(function () {
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    }, 0);
  });
  // Back/forward cache: re-enable the buttons of a page shown again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("button[type=submit]:disabled").forEach(function (b) { b.disabled = false; });
  });

  // On a phone the tabs scroll sideways: keep this page's tab in view.
  var here = document.querySelector(".tabs [aria-current=page]");
  if (here && here.scrollIntoView) here.scrollIntoView({ block: "nearest", inline: "center" });

  // <time class="local" datetime="RFC 3339"> in the phone's own time zone.
  document.querySelectorAll("time.local[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    t.title = t.getAttribute("datetime");
    t.textContent = d.toLocaleString([], {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit"
    });
  });

  // The waivers page: /waivers?check=ID picks that check.
  var check = document.getElementById("check");
  if (check instanceof HTMLSelectElement) {
    var want = new URLSearchParams(location.search).get("check");
    if (want) {
      for (var i = 0; i < check.options.length; i++) {
        if (check.options[i].value === want) check.selectedIndex = i;
      }
      var reason = document.getElementById("reason");
      if (reason) reason.focus();
    }
  }

  // The status page follows the status: when firstboot writes a new one (or
  // a new QA report), the page reloads, unless someone is typing.
  var verdict = document.getElementById("verdict");
  if (verdict && verdict.hasAttribute("data-status-time")) {
    var seenStatus = verdict.getAttribute("data-status-time") || "";
    var seenReport = verdict.getAttribute("data-report-time") || "";
    var busy = function () {
      var a = document.activeElement;
      return a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT");
    };
    var poll = function () {
      if (document.hidden) return;
      fetch("/api/status", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          var s = (j.status && j.status.time) || "";
          var q = (j.report && j.report.time) || "";
          if ((s !== seenStatus || q !== seenReport) && !busy()) location.reload();
        })
        .catch(function () { /* the unit may be restarting: try again next time */ });
    };
    window.setInterval(poll, 10000);
  }
})();
