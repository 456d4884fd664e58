// Refresh the turnout table every 10 seconds while the round page is open.
(function () {
  "use strict";
  var table = document.getElementById("turnout");
  if (!table) { return; }
  var below = document.getElementById("below-template").textContent;
  function refresh() {
    fetch(table.dataset.url, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        data.groups.forEach(function (g) {
          var row = table.querySelector("tr[data-group='" + g.group + "']");
          if (!row) { return; }
          row.querySelector(".issued").textContent = g.issued;
          row.querySelector(".cast").textContent = g.cast === null ? below : g.cast;
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 10000);
})();
