/* Copy buttons of shortened identifiers ({% short_id %}, {% short_middle %}:
 * deployments/templatetags/ids.py). One listener on the document, so buttons
 * in parts of the page swapped in later work too. navigator.clipboard where
 * the page may use it; otherwise a selected, off-screen textarea and
 * document.execCommand("copy").
 */
(function () {
  "use strict";

  // The buttons are shown only once this script runs (CSS: .has-copy).
  document.documentElement.classList.add("has-copy");

  var announcer = null;

  function announce(text) {
    if (!announcer) {
      announcer = document.createElement("span");
      announcer.className = "visually-hidden";
      announcer.setAttribute("role", "status");
      document.body.appendChild(announcer);
    }
    announcer.textContent = text;
  }

  function copyByHand(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.top = "0";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (err) {
      copied = false;
    }
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("the browser refused to copy"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyByHand(text);
      });
    }
    return copyByHand(text);
  }

  function show(button, state) {
    button.dataset.state = state;
    clearTimeout(button.nornCopyTimer);
    button.nornCopyTimer = setTimeout(function () {
      delete button.dataset.state;
    }, 1500);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy[data-copy]") : null;
    if (!button) return;
    event.preventDefault();
    var text = button.dataset.copy;
    copy(text).then(
      function () {
        show(button, "copied");
        announce("Copied " + text);
      },
      function () {
        show(button, "failed");
        announce("Could not copy; select the text and copy it by hand");
      }
    );
  });
})();
