/* eOffice web UI behaviours: recipient search, upload progress. No inline scripts (CSP). */
(function () {
  "use strict";

  // Accent-insensitive matching, so "minh lang" finds "Minh Lãng" and "d" finds "Đ".
  function fold(text) {
    return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "")
      .replace(/đ/g, "d").replace(/Đ/g, "D").toLowerCase();
  }

  function summarise(select) {
    var summary = document.querySelector('.picker-summary[data-for="' + select.id + '"]');
    if (!summary) { return; }
    var names = Array.prototype.filter.call(select.options, function (o) { return o.selected; })
      .map(function (o) { return o.textContent.replace(/^[\s\u00a0└]+/, ""); });
    summary.textContent = names.length ? "✓ " + names.join("; ") : "";
  }

  function setupPicker(input) {
    var select = document.getElementById(input.getAttribute("data-target"));
    if (!select) { return; }
    input.addEventListener("input", function () {
      var needle = fold(input.value.trim());
      Array.prototype.forEach.call(select.options, function (option) {
        var hay = fold(option.textContent + " " + option.value);
        option.hidden = needle !== "" && hay.indexOf(needle) === -1 && !option.selected;
      });
    });
    // Enter in the search box picks the first visible match instead of submitting the form.
    input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") { return; }
      event.preventDefault();
      var first = Array.prototype.find.call(select.options, function (o) { return !o.hidden && input.value.trim(); });
      if (first) { first.selected = true; summarise(select); }
    });
    select.addEventListener("change", function () { summarise(select); });
    summarise(select);
  }

  function setup(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".picker-search"), setupPicker);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setup(document);
    document.body.addEventListener("htmx:xhr:progress", function (event) {
      var bar = document.getElementById("upload-progress");
      if (bar && event.detail.lengthComputable) {
        bar.value = Math.round(event.detail.loaded * 100 / event.detail.total);
        bar.textContent = bar.value + "%";
      }
    });
    // A message swapped in after an HTMX error is announced and scrolled into view.
    document.body.addEventListener("htmx:afterSwap", function (event) {
      if (event.detail.target && event.detail.target.id === "messages") {
        event.detail.target.scrollIntoView({block: "nearest"});
      }
    });
  });
})();
