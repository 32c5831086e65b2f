// The magbridge console's one script: progressive enhancement only; every page works without it.
// - [data-live][data-refresh=N]: fetch the page again every N seconds and swap in the same region,
//   unless the operator is using it (a box ticked or a field focused in it) or the tab is hidden.
// - [data-select-all=NAME]: a checkbox that ticks every checkbox named NAME in its form.
(function () {
  "use strict";

  function busy(region) {
    return region.querySelector("input[type=checkbox]:checked") !== null || region.contains(document.activeElement);
  }

  function refresh(name, seconds) {
    window.setTimeout(function () {
      var region = document.querySelector('[data-live="' + name + '"]');
      if (!region) { return; }
      if (document.hidden || busy(region)) { refresh(name, seconds); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector('[data-live="' + name + '"]');
          if (!fresh) { return; }
          region.replaceWith(fresh);
          bind(fresh);
          var again = fresh.getAttribute("data-refresh");
          if (again) { refresh(name, Number(again)); }
        })
        .catch(function () { refresh(name, seconds * 2); });
    }, seconds * 1000);
  }

  function bind(root) {
    root.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var name = box.getAttribute("data-select-all");
        box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
          other.checked = box.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    bind(document);
    document.querySelectorAll("[data-live][data-refresh]").forEach(function (region) {
      refresh(region.getAttribute("data-live"), Number(region.getAttribute("data-refresh")));
    });
  });
}());
