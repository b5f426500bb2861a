/* Live updates for the deployment page (templates/deployments/deployment_detail.html).
 *
 * Listens on /ws/deployments/<uuid>/?after=<seq> (docs/live.md). Log events
 * are appended to their step's output as text (as numbered, coloured lines by
 * logview.js, loaded before this script; docs/dashboard.md); step and status events make
 * the page fetch its server-rendered partials again through htmx (retried
 * with backoff when that fails). The socket reconnects with backoff and
 * resumes after the last event it saw. Without this script the page is
 * complete and has a Refresh link.
 */
(function () {
  "use strict";

  var root = document.getElementById("live-deployment");
  if (!root || !("WebSocket" in window)) return;

  var PARTIALS = ["header", "steps", "outcome"];
  var TERMINAL_EVENTS = { "deploy.completed": true, "deploy.failed": true };
  // Close codes after which reconnecting cannot help (docs/live.md).
  var PERMANENT = { 4400: "bad request", 4401: "not logged in", 4403: "not allowed", 4404: "deployment not found" };
  var REFRESH_DELAY = 150; // ms: one fetch for a burst of events (a failure ends several steps at once)
  var MAX_BACKOFF = 30000; // ms, for reconnecting and for retrying a failed refresh
  var SILENCE_LIMIT = 50000; // the server pings every 20 s; longer silence means a dead connection

  var stateEl = document.getElementById("live-state");
  var announcer = document.getElementById("step-announcer");
  var lastSeq = Number(root.dataset.after) || 0;
  var finished = root.dataset.terminal === "true";
  var caughtUp = false;
  var stopped = false;
  var socket = null;
  var attempt = 0;
  var reconnectTimer = null;
  var silenceTimer = null;
  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false;
  var refreshFailures = 0; // in a row; sets the backoff of the next retry
  var responseError = false;
  // What the socket last said about itself: shown again once a failed
  // refresh, which shows its own text meanwhile, succeeds.
  var connection = { kind: "connecting", text: "connecting…" };
  // Log events newer than the server's copy of the output (data-seq of the
  // steps section). Swapping in a new steps section replaces the output with
  // a copy that may be older than what arrived meanwhile; these are written
  // again where the new copy ends.
  var pendingLogs = [];
  // Per output element: the last log event it holds and whether its text
  // ended with a CR. A swapped-in element is a new key, so it starts from
  // its own section's data-seq and data-ends-cr.
  var written = new WeakMap();
  var outputsBefore = {}; // outputState() just before the steps section is swapped

  function setState(kind, text) {
    connection = { kind: kind, text: text };
    showState(kind, text);
  }

  function showState(kind, text) {
    stateEl.hidden = false;
    stateEl.className = "live-state live-" + kind;
    stateEl.querySelector(".live-text").textContent = text;
  }

  // Exponential backoff with jitter, so a restarted server is not hit by
  // every open page at the same moment. n = 0, 1, 2 …: 0.5-1 s, 1-2 s, 2-4 s …
  function backoff(n) {
    return Math.min(MAX_BACKOFF, 1000 * Math.pow(2, n)) * (0.5 + Math.random() / 2);
  }

  // --- the socket -------------------------------------------------------------

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    caughtUp = false;
    socket = new WebSocket(scheme + "//" + location.host + root.dataset.wsPath + "?after=" + lastSeq);
    socket.onopen = watchSilence;
    socket.onmessage = function (message) {
      watchSilence();
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      handle(data);
    };
    socket.onclose = function (close) {
      clearTimeout(silenceTimer);
      socket = null;
      if (stopped) return;
      if (PERMANENT[close.code]) {
        setState("off", "live updates off: " + PERMANENT[close.code]);
        return;
      }
      setState("reconnecting", "reconnecting…");
      reconnectTimer = setTimeout(connect, backoff(attempt));
      attempt += 1;
    };
  }

  function watchSilence() {
    clearTimeout(silenceTimer);
    silenceTimer = setTimeout(function () {
      if (socket) socket.close(); // onclose reconnects
    }, SILENCE_LIMIT);
  }

  function stop() {
    stopped = true;
    clearTimeout(reconnectTimer);
    clearTimeout(silenceTimer);
    if (socket) socket.close(1000);
    setState("finished", "finished");
  }

  function handle(data) {
    if (data.type === "caught_up") {
      caughtUp = true;
      attempt = 0;
      if (finished) stop();
      else setState("live", "live");
      return;
    }
    if (data.type !== "event" || data.seq <= lastSeq) return;
    lastSeq = data.seq;
    if (data.event === "deploy.log") {
      appendLog(data);
      return;
    }
    if (data.event === "deploy.step") announce(data.payload || {});
    if (TERMINAL_EVENTS[data.event]) {
      finished = true;
      if (caughtUp) stop();
    }
    scheduleRefresh();
  }

  // --- log output --------------------------------------------------------------

  function renderedSeq() {
    var steps = document.getElementById("deployment-steps");
    return steps ? Number(steps.dataset.seq) || 0 : 0;
  }

  function appendLog(event) {
    if (event.seq <= renderedSeq()) return; // already in the server-rendered output
    pendingLogs.push(event);
    writeLog(event);
  }

  function writeLog(event) {
    var payload = event.payload || {};
    var pre = document.getElementById("output-" + payload.step);
    if (!pre || typeof payload.text !== "string") return;
    var held = written.get(pre);
    if (!held) {
      held = { seq: renderedSeq(), cr: pre.hasAttribute("data-ends-cr") };
      written.set(pre, held);
    }
    if (event.seq <= held.seq) return; // this element has it already: never write a line twice
    held.seq = event.seq;
    // The server's copy reaches the page through the HTML parser, which turns
    // CR LF and a lone CR into LF; do the same here, so live and refreshed
    // output read alike. A CR LF split across two events is one line break.
    var text = payload.text;
    if (held.cr && text.charAt(0) === "\n") text = text.slice(1);
    held.cr = text.charAt(text.length - 1) === "\r";
    text = text.replace(/\r\n?/g, "\n");
    var details = pre.closest("details");
    if (details) details.hidden = false;
    // Follow the output only when the reader is already at its end.
    var atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
    // Event text is data, never markup: logview.js writes it as numbered
    // lines with their colours (text nodes); without it, as plain text.
    if (text && window.NornLog) window.NornLog.append(pre, text);
    else if (text) pre.appendChild(document.createTextNode(text));
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  // Right after a new steps section is swapped in: write what it lacks.
  function replayLogs() {
    var seq = renderedSeq();
    pendingLogs = pendingLogs.filter(function (event) {
      return event.seq > seq;
    });
    pendingLogs.forEach(writeLog);
  }

  function announce(payload) {
    if (!announcer || !payload.step) return;
    var text = "Step " + payload.step + ": " + (payload.status || "");
    if (payload.reason) text += ", " + payload.reason;
    announcer.textContent = text;
  }

  // --- partials ------------------------------------------------------------------

  function scheduleRefresh() {
    // A retry waiting out its backoff is not brought forward by new events:
    // it fetches everything anyway, and the server may still be struggling.
    if (refreshFailures && refreshTimer) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_DELAY);
  }

  function refresh() {
    refreshTimer = null;
    if (!window.htmx) return; // htmx did not load: the Refresh link still works
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    // One after the other: htmx queues concurrent requests from one source
    // element and keeps only the last, which would drop a partial.
    var chain = Promise.resolve();
    PARTIALS.forEach(function (name) {
      chain = chain.then(function () {
        return swap(name);
      });
    });
    chain
      .then(
        function () {
          if (!refreshFailures) return;
          refreshFailures = 0;
          showState(connection.kind, connection.text); // "live" again if the socket is
        },
        function () {
          refreshFailures += 1;
          showState("reconnecting", "could not refresh; retrying…");
        }
      )
      .then(function () {
        refreshing = false;
        if (refreshFailures) {
          clearTimeout(refreshTimer);
          refreshTimer = setTimeout(refresh, backoff(refreshFailures - 1));
        } else if (refreshAgain) {
          scheduleRefresh();
        }
        refreshAgain = false;
      });
  }

  function swap(name) {
    var target = document.getElementById("deployment-" + name);
    if (!target) return Promise.resolve();
    var url = root.getAttribute("data-partial-" + name);
    responseError = false;
    // settle:0ms: htmx otherwise keeps the old classes on same-id elements
    // for a moment (for CSS transitions), and the fix-ups below run then.
    return window.htmx
      .ajax("GET", url, { source: target, target: target, swap: "outerHTML settle:0ms" })
      .then(function () {
        // htmx rejects only when no response came; an error status resolves.
        if (responseError) throw new Error("could not refresh " + name);
      });
  }

  document.body.addEventListener("htmx:responseError", function (evt) {
    if (root.contains(evt.target)) responseError = true;
  });

  document.body.addEventListener("htmx:beforeSwap", function (evt) {
    var xhr = evt.detail.xhr;
    if (!root.contains(evt.detail.target) || !xhr || !xhr.responseURL) return;
    // An expired session turns a partial into the login page (after a
    // redirect); never swap that into the deployment page.
    if (new URL(xhr.responseURL).pathname.indexOf("/deployments/") !== 0) {
      evt.detail.shouldSwap = false;
      finished = true;
      stop();
      setState("off", "live updates off: logged out; reload the page");
      return;
    }
    if (evt.detail.target.id === "deployment-steps") outputsBefore = outputState();
  });

  // Fix-ups in the same task as the swap, so the page is never seen without
  // them: the outputs' open state, and the log lines newer than the new
  // section (waiting for the other partials would hide those meanwhile).
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    if (!root.contains(evt.target)) return;
    if (evt.target.id === "deployment-steps") {
      restoreOutputState(outputsBefore);
      replayLogs();
    }
    tick();
  });

  // A swap brings each output's default open/closed state (open while the
  // step runs or when it failed); keep what the reader chose for steps whose
  // status did not change.
  function outputState() {
    var state = {};
    root.querySelectorAll("li.step").forEach(function (li) {
      var details = li.querySelector("details.output");
      if (details) state[li.dataset.step] = { status: li.dataset.status, open: details.open };
    });
    return state;
  }

  function restoreOutputState(state) {
    root.querySelectorAll("li.step").forEach(function (li) {
      var before = state[li.dataset.step];
      var details = li.querySelector("details.output");
      if (before && details && before.status === li.dataset.status) details.open = before.open;
    });
  }

  // --- running clocks ---------------------------------------------------------------

  function tick() {
    // The server renders what a running clock shows each second from when it
    // rendered it (data-ticks on the clock's container, "|"-separated), so
    // durations are formatted in one place; the browser's own clock only
    // counts the seconds since the element arrived, so clock skew between
    // the two does not matter. Past the last text, fetch fresh partials.
    var now = Date.now();
    root.querySelectorAll(".elapsed[data-elapsed]").forEach(function (el) {
      var holder = el.closest("[data-ticks]");
      if (!holder || !holder.dataset.ticks) return;
      if (!el.dataset.seenAt) el.dataset.seenAt = String(now);
      var ticks = holder.dataset.ticks.split("|");
      var n = Math.floor((now - Number(el.dataset.seenAt)) / 1000);
      if (n >= ticks.length) {
        n = ticks.length - 1;
        if (!el.dataset.refreshAsked) {
          el.dataset.refreshAsked = "true";
          scheduleRefresh();
        }
      }
      el.textContent = ticks[n];
    });
  }

  if (!finished) {
    setInterval(tick, 1000);
    setState("connecting", "connecting…");
    connect();
  }
})();
