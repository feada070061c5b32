(function () {
  "use strict";
  // Hide the rows whose package name and summary do not hold every word of the filter box.
  // index.html?filter=WORDS fills the box in on load.
  var box = document.getElementById("filter");
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-search]"));
  var counters = Array.prototype.slice.call(document.querySelectorAll("[data-count-of]"));
  function apply() {
    var words = box.value.toLowerCase().split(/\s+/).filter(function (word) { return word; });
    var shown = {};
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search");
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      row.hidden = !match;
      if (match) {
        var table = row.getAttribute("data-table");
        shown[table] = (shown[table] || 0) + 1;
      }
    });
    counters.forEach(function (counter) {
      counter.textContent = String(shown[counter.getAttribute("data-count-of")] || 0);
    });
  }
  var initial = new URLSearchParams(window.location.search).get("filter");
  if (initial) {
    box.value = initial;
  }
  box.addEventListener("input", apply);
  apply();
})();
