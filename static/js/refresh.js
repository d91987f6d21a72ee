/* Reload the page every N seconds (data-refresh-seconds on this script tag), but never while someone
   is using a form on it: focus inside a form, or a form edited and not yet submitted, postpones the
   reload by another period. A hidden tab waits too. No inline script: the page's CSP forbids it. */
(function () {
  "use strict";
  var script = document.currentScript;
  var seconds = parseInt(script && script.getAttribute("data-refresh-seconds"), 10) || 60;
  var edited = false;
  var timer = null;

  function markEdited(event) {
    if (event.target && event.target.form) {
      edited = true;
      showStatus();
    }
  }

  function busy() {
    var active = document.activeElement;
    return edited || document.hidden || Boolean(active && active.closest && active.closest("form"));
  }

  function showStatus() {
    var note = document.getElementById("refresh-status");
    if (note) {
      note.textContent = busy()
        ? "Auto-refresh paused while you use a form."
        : "Refreshes every " + (seconds === 60 ? "minute" : seconds + " seconds") + ".";
    }
  }

  function tick() {
    if (busy()) {
      showStatus();
      schedule();
      return;
    }
    window.location.reload();
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(tick, seconds * 1000);
  }

  document.addEventListener("input", markEdited, true);
  document.addEventListener("change", markEdited, true);
  document.addEventListener("focusin", showStatus);
  document.addEventListener("focusout", function () { window.setTimeout(showStatus, 0); });
  document.addEventListener("visibilitychange", showStatus);
  document.documentElement.setAttribute("data-auto-refresh", String(seconds));
  schedule();
})();
