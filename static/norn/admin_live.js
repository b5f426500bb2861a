/* The admin's deployment list, live (templates/admin/deployments/deployment/change_list.html).
 *
 * Listens on /ws/deployments/ (every deployment's live events, docs/live.md).
 * When a deployment shown in the list changes, its status cell is fetched
 * again from the dashboard (/deployments/<uuid>/_status, server-rendered);
 * a new deployment reloads the list, unless rows are selected for an action.
 * The status cells are coloured by their value as the dashboard's are.
 */
(function () {
  "use strict";

  var box = document.getElementById("norn-live");
  if (!box) return;
  colourStatuses();
  if (!("WebSocket" in window)) return;

  var PERMANENT = { 4401: "not logged in", 4403: "not allowed" };
  var MAX_BACKOFF = 30000;
  var text = box.querySelector(".norn-live-text");
  var reloadLink = box.querySelector(".norn-live-reload");
  var statusUrl = box.dataset.statusUrl;
  var placeholder = "00000000-0000-0000-0000-000000000000";
  var attempt = 0;
  var dropped = false; // a connection was lost: events may have been missed
  var pending = {};

  function setState(value) {
    box.hidden = false;
    text.textContent = "Live updates: " + value;
  }

  // The list's first column is the deployment's short id (its first eight
  // characters), linked to the change page.
  function rowFor(uuid) {
    var short = String(uuid).slice(0, 8);
    var cells = document.querySelectorAll("#result_list th.field-short_id");
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].textContent.trim() === short) return cells[i].closest("tr");
    }
    return null;
  }

  function selecting() {
    return document.querySelector("#result_list input.action-select:checked") !== null;
  }

  function reloadList() {
    // Reloading would drop the user's selection for an action: offer it instead.
    if (selecting()) reloadLink.hidden = false;
    else location.reload();
  }

  function updateStatus(uuid) {
    if (pending[uuid]) return;
    // A burst of events for one deployment makes one request.
    pending[uuid] = setTimeout(function () {
      delete pending[uuid];
      var row = rowFor(uuid);
      var cell = row && row.querySelector("td.field-status");
      if (!cell) return;
      fetch(statusUrl.replace(placeholder, uuid), { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) throw new Error(response.status);
          return response.text();
        })
        .then(function (html) {
          cell.innerHTML = html; // server-rendered and escaped, not event data
        })
        .catch(function () {
          reloadLink.hidden = false;
        });
    }, 200);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(scheme + "//" + location.host + box.dataset.wsPath);
    socket.onopen = function () {
      attempt = 0;
      setState("on");
      // This endpoint does not replay: after a lost connection the list may
      // be stale, so read it again.
      if (dropped) reloadList();
    };
    socket.onmessage = function (message) {
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (data.type !== "event" || data.event === "deploy.log") return;
      if (rowFor(data.deployment)) updateStatus(data.deployment);
      else if (data.event === "deploy.queued") reloadList();
    };
    socket.onclose = function (close) {
      if (PERMANENT[close.code]) {
        setState("off (" + PERMANENT[close.code] + ")");
        return;
      }
      dropped = true;
      var delay = Math.min(MAX_BACKOFF, 1000 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt += 1;
      setState("reconnecting…");
      setTimeout(connect, delay);
    };
  }

  // The list's status cells as the dashboard shows statuses: coloured by
  // their value (admin.css), the word kept. Cells fetched later come so.
  function colourStatuses() {
    var cells = document.querySelectorAll("#result_list td.field-status");
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].querySelector(".status")) continue;
      var label = cells[i].textContent.trim();
      var badge = document.createElement("span");
      badge.className = "status status-" + label.toLowerCase().replace(/ /g, "_");
      badge.textContent = label;
      cells[i].textContent = "";
      cells[i].appendChild(badge);
    }
  }

  setState("connecting…");
  connect();
})();
