// Pingyi ballot: live progress and the Excellent-quota warning. The page works without it.
(function () {
  "use strict";
  var form = document.getElementById("ballot");
  if (!form) { return; }
  var total = parseInt(form.dataset.total, 10);
  var quota = form.dataset.quota === "" ? null : parseInt(form.dataset.quota, 10);
  var best = form.dataset.best;
  var progress = document.getElementById("progress");
  var warning = document.getElementById("quota-warning");

  function update() {
    var rated = 0, excellent = 0;
    form.querySelectorAll("input[type=radio][name^='grade-']:checked").forEach(function (input) {
      rated += 1;
      if (input.value === best) { excellent += 1; }
    });
    progress.textContent = (document.documentElement.lang.indexOf("zh") === 0)
      ? "已评 " + rated + " / " + total + " 人"
      : rated + " of " + total + " rated";
    var over = quota !== null && excellent > quota;
    warning.hidden = !over;
    form.classList.toggle("over-quota", over);
  }
  form.addEventListener("change", update);
  // Coming back to the page, the browser puts the answers back after this script has run.
  window.addEventListener("pageshow", update);
  update();
})();
