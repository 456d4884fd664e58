// Refresh the turnout table, and the state of queued mailings, every 10 seconds while the round
// page is open.
(function () {
  "use strict";
  var table = document.getElementById("turnout");
  if (!table) { return; }
  var below = document.getElementById("below-template").textContent;
  var mailings = document.getElementById("mailings");
  function show(cell, value) {
    if (cell && !cell.querySelector("details")) {
      cell.textContent = value === null || value === undefined ? "" : value;
    }
  }
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
        (data.mailings || []).forEach(function (m) {
          var row = mailings && mailings.querySelector("tr[data-job='" + m.id + "']");
          if (!row) { return; }
          show(row.querySelector(".state"), m.state);
          show(row.querySelector(".sent"), m.sent);
          show(row.querySelector(".skipped"), m.skipped);
          show(row.querySelector(".failed"), m.sent === null ? null : m.failed_count);
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 10000);
})();
