// Conveniences only: every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // "Reveal all" personal fields of a lead.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-reveal-all]");
    if (!button) return;
    document.querySelectorAll("details.reveal").forEach(function (d) { d.open = true; });
    button.hidden = true;
  });

  // "Select all" checkbox for a list of checkboxes with the given name.
  document.addEventListener("change", function (event) {
    var box = event.target.closest("[data-select-all]");
    if (!box) return;
    var name = box.getAttribute("data-select-all");
    box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (c) {
      c.checked = box.checked;
    });
  });

  // Parts marked data-refresh="N" reload themselves every N seconds while they say so.
  function refresh(part) {
    var seconds = parseInt(part.getAttribute("data-refresh"), 10) || 5;
    setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(part.id);
          if (!fresh) return;
          part.replaceWith(fresh);
          if (fresh.hasAttribute("data-refresh")) refresh(fresh);
        })
        .catch(function () { refresh(part); });
    }, seconds * 1000);
  }
  document.querySelectorAll("[data-refresh][id]").forEach(refresh);
})();
