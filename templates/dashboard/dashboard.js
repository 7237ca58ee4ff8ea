// devops-butler dashboard: the page is complete without this script. It only refreshes the data:
// every N seconds it fetches the same page from the server and swaps in its <main>, so nothing
// renders twice (server-side only) and nothing reloads.
(function () {
  "use strict";
  var seconds = parseInt(document.body.dataset.refreshSeconds, 10) || 30;
  var refreshes = 0;

  function setState(text, failed) {
    var el = document.getElementById("refresh-state");
    if (el) {
      el.textContent = text;
      el.classList.toggle("stale", !!failed);
    }
  }

  function refresh() {
    if (document.hidden) {
      return;
    }
    fetch(window.location.pathname, { cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var next = fresh.getElementById("live");
        var live = document.getElementById("live");
        if (!next || !live) {
          throw new Error("the page has no #live section");
        }
        live.innerHTML = next.innerHTML;
        live.dataset.generated = next.dataset.generated;
        document.title = fresh.title;
        refreshes += 1;
        document.body.dataset.refreshes = String(refreshes);
        setState("Updated " + new Date().toLocaleTimeString() + "; refreshes every " + seconds + " s.", false);
      })
      .catch(function (error) {
        setState("Could not refresh (" + error.message + "); showing the last data. Retrying in " + seconds + " s.", true);
      });
  }

  window.setInterval(refresh, seconds * 1000);
})();
