/* The log viewer of the deployment page (templates/deployments/_steps.html).
 *
 * The server renders each step's output as numbered lines (span.ln) with
 * their times, colours and the builder notice marked (deployments/logview.py),
 * and only its tail. This script adds what needs a script: search (matches
 * highlighted, next/previous, a count), "Load earlier" (the lines before the
 * shown part, from …/steps/<step>/output?before=N), keeping both when live.js
 * swaps in a new copy of the steps, and NornLog.append, which live.js calls
 * to write the text of live log events as lines the same way. Output is data:
 * it becomes text nodes, never markup.
 */
(function () {
  "use strict";

  document.documentElement.classList.add("logview-js");

  var BANNER = "DEPRECATED: The legacy builder is deprecated";
  var MAX_MATCHES = 10000;
  // Escape sequences, as deployments/logview.py's ESCAPE (SGR kept apart).
  var ESCAPE = /\x1b\[([0-?]*)[ -\/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -\/]*[0-~]?|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;
  var UNFINISHED = /\x1b(?:\[[0-?]*[ -\/]*)?$/;

  var states = new WeakMap(); // per pre: where appended text carries on
  var searches = {}; // per step: { query, matches, current }
  var clockSkew = null; // server clock minus this browser's, in ms

  // --- styles (SGR) ------------------------------------------------------------

  function parseStyle(encoded) {
    var parts = String(encoded || "0,,").split(",");
    return {
      bold: parts[0] === "1",
      fg: parts[1] === "" || parts[1] === undefined ? null : Number(parts[1]),
      bg: parts[2] === "" || parts[2] === undefined ? null : Number(parts[2])
    };
  }

  function applySgr(style, params) {
    var codes = params ? params.split(/[;:]/).map(function (c) { return /^\d+$/.test(c) ? Number(c) : 0; }) : [0];
    var s = { bold: style.bold, fg: style.fg, bg: style.bg };
    for (var i = 0; i < codes.length; i++) {
      var code = codes[i];
      if (code === 0) s = { bold: false, fg: null, bg: null };
      else if (code === 1) s.bold = true;
      else if (code === 22) s.bold = false;
      else if (code >= 30 && code <= 37) s.fg = code - 30;
      else if (code >= 90 && code <= 97) s.fg = code - 90 + 8;
      else if (code === 39) s.fg = null;
      else if (code >= 40 && code <= 47) s.bg = code - 40;
      else if (code >= 100 && code <= 107) s.bg = code - 100 + 8;
      else if (code === 49) s.bg = null;
      else if ((code === 38 || code === 48) && i + 1 < codes.length) i += codes[i + 1] === 5 ? 2 : codes[i + 1] === 2 ? 4 : 0;
    }
    return s;
  }

  function styleClasses(style) {
    var names = [];
    if (style.bold) names.push("a-b");
    if (style.fg !== null) names.push("a-f" + style.fg);
    if (style.bg !== null) names.push("a-g" + style.bg);
    return names.join(" ");
  }

  // --- appending live output -----------------------------------------------------

  function stateOf(pre) {
    var state = states.get(pre);
    if (state) return state;
    var last = pre.lastElementChild;
    var open = last && last.classList.contains("ln") && last.textContent.slice(-1) !== "\n" ? last : null;
    state = {
      style: parseStyle(pre.dataset.sgr),
      carry: pre.dataset.carry || "",
      next: Number(pre.dataset.nextLine) || 1,
      open: open, // the last line, when it has no line break yet
      banner: !!(last && last.classList.contains("noise") && last.textContent !== "\n")
    };
    states.set(pre, state);
    return state;
  }

  // Read when the steps arrive (the page, or a swapped-in copy), not when a
  // line does: data-now is the server's clock when it rendered them.
  function syncClock() {
    var steps = document.getElementById("deployment-steps");
    var now = steps && Number(steps.dataset.now);
    clockSkew = now ? now - Date.now() : 0;
  }

  function timeLabel(el) {
    if (clockSkew === null) syncClock();
    var when = new Date(Date.now() + clockSkew);
    var iso = when.toISOString();
    el.dataset.t = iso.slice(11, 19);
    el.title = iso + " (arrived live)";
  }

  function newLine(pre, state) {
    var line = document.createElement("span");
    line.className = "ln";
    line.dataset.n = String(state.next);
    var time = document.createElement("span");
    time.className = "lt";
    timeLabel(time);
    line.appendChild(time);
    pre.appendChild(line);
    return line;
  }

  function writeStyled(line, text, state) {
    var position = 0;
    var match;
    ESCAPE.lastIndex = 0;
    function put(piece) {
      if (!piece) return;
      var classes = styleClasses(state.style);
      if (classes) {
        var span = document.createElement("span");
        span.className = classes;
        span.textContent = piece;
        line.appendChild(span);
      } else {
        line.appendChild(document.createTextNode(piece));
      }
    }
    while ((match = ESCAPE.exec(text)) !== null) {
      if (match[0] === "") { ESCAPE.lastIndex += 1; continue; }
      put(text.slice(position, match.index));
      if (match[2] === "m") state.style = applySgr(state.style, match[1]);
      position = ESCAPE.lastIndex;
    }
    put(text.slice(position));
  }

  // The banner and the lines that belong to it, as the server marks them.
  function classify(line, state, pre) {
    var text = line.textContent.replace(/\n$/, "");
    if (text.indexOf(BANNER) === 0) {
      state.banner = true;
      line.classList.add("noise", "noise-head");
      noiseToggle(pre);
    } else if (state.banner && (text === "" || /^\s/.test(text))) {
      line.classList.add("noise");
      state.banner = text !== "";
    } else {
      state.banner = false;
    }
  }

  // Text of a live log event, its line breaks already LF (live.js).
  function append(pre, text) {
    var state = stateOf(pre);
    text = state.carry + text;
    var unfinished = UNFINISHED.exec(text);
    state.carry = unfinished ? unfinished[0] : "";
    if (unfinished) text = text.slice(0, unfinished.index);
    var pieces = text.split("\n");
    pieces.forEach(function (piece, i) {
      var last = i === pieces.length - 1;
      if (last && piece === "") return;
      var line = state.open || newLine(pre, state);
      writeStyled(line, piece, state);
      if (last) {
        state.open = line;
      } else {
        line.appendChild(document.createTextNode("\n"));
        classify(line, state, pre);
        state.open = null;
        state.next += 1;
      }
    });
    pre.dataset.nextLine = String(state.next);
    var digits = Math.max(3, String(state.next).length);
    if (pre.style.getPropertyValue("--digits") !== String(digits)) pre.style.setProperty("--digits", String(digits));
    scheduleSearch(pre);
  }

  function noiseToggle(pre) {
    var details = pre.closest("details");
    var tools = details && details.querySelector(".log-tools");
    if (!tools || tools.querySelector("[data-log-noise]")) return;
    var label = document.createElement("label");
    label.className = "log-noise";
    var box = document.createElement("input");
    box.type = "checkbox";
    box.setAttribute("data-log-noise", "");
    label.appendChild(box);
    label.appendChild(document.createTextNode(" Show the builder notice"));
    tools.appendChild(label);
  }

  // --- search ------------------------------------------------------------------------

  var highlights = window.CSS && CSS.highlights && window.Highlight ? CSS.highlights : null;
  var searchTimers = {};

  function stepOf(el) {
    var li = el.closest("li.step");
    return li ? li.dataset.step : null;
  }

  function scheduleSearch(pre) {
    var step = stepOf(pre);
    var search = searches[step];
    if (!search || !search.query) return;
    clearTimeout(searchTimers[step]);
    searchTimers[step] = setTimeout(function () { runSearch(step, false); }, 300);
  }

  function runSearch(step, jump) {
    var pre = document.getElementById("output-" + step);
    var input = document.querySelector('[data-log-search="' + step + '"]');
    if (!pre || !input) return;
    var query = input.value;
    var search = searches[step] || (searches[step] = { query: "", matches: [], current: -1 });
    var keep = search.query === query ? search.current : -1;
    search.query = query;
    search.matches = query ? findMatches(pre, query.toLowerCase()) : [];
    search.current = search.matches.length ? (keep >= 0 && keep < search.matches.length ? keep : 0) : -1;
    paint();
    showCount(step, search, pre);
    if (jump && search.current >= 0) reveal(pre, search.matches[search.current]);
  }

  function findMatches(pre, needle) {
    var nodes = [];
    var text = "";
    var walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      nodes.push({ node: node, start: text.length });
      text += node.data;
    }
    var haystack = text.toLowerCase();
    var ranges = [];
    var at = haystack.indexOf(needle);
    var n = 0;
    while (at !== -1 && ranges.length < MAX_MATCHES) {
      var end = at + needle.length;
      while (n + 1 < nodes.length && nodes[n + 1].start <= at) n++;
      var m = n;
      while (m + 1 < nodes.length && nodes[m + 1].start < end) m++;
      var range = document.createRange();
      range.setStart(nodes[n].node, at - nodes[n].start);
      range.setEnd(nodes[m].node, end - nodes[m].start);
      ranges.push(range);
      at = haystack.indexOf(needle, end);
    }
    return ranges;
  }

  function paint() {
    if (!highlights) return;
    var all = [];
    var current = [];
    Object.keys(searches).forEach(function (step) {
      var search = searches[step];
      all = all.concat(search.matches);
      if (search.current >= 0) current.push(search.matches[search.current]);
    });
    highlights.set("log-match", new Highlight(...all));
    highlights.set("log-current", new Highlight(...current));
  }

  function showCount(step, search, pre) {
    var count = document.getElementById("log-count-" + step);
    if (!count) return;
    if (!search.query) count.textContent = "";
    else if (!search.matches.length) count.textContent = "no matches";
    else count.textContent = (search.current + 1) + " of " + search.matches.length + (search.matches.length >= MAX_MATCHES ? "+" : "");
    if (search.query && Number(pre.dataset.start) > 0) count.textContent += " in the lines shown";
  }

  function reveal(pre, range) {
    var line = range.startContainer.parentElement.closest(".ln");
    if (line && line.classList.contains("noise")) {
      var box = pre.closest("details").querySelector("[data-log-noise]");
      if (box) box.checked = true;
    }
    var box2 = range.getBoundingClientRect();
    var frame = pre.getBoundingClientRect();
    pre.scrollTop += box2.top - frame.top - pre.clientHeight / 2;
    if (!highlights) {
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
  }

  function move(stepName, by) {
    var search = searches[stepName];
    if (!search || !search.query) return runSearch(stepName, true);
    if (!search.matches.length) return;
    search.current = (search.current + by + search.matches.length) % search.matches.length;
    paint();
    showCount(stepName, search, document.getElementById("output-" + stepName));
    reveal(document.getElementById("output-" + stepName), search.matches[search.current]);
  }

  document.addEventListener("input", function (evt) {
    var name = evt.target.getAttribute && evt.target.getAttribute("data-log-search");
    if (!name) return;
    clearTimeout(searchTimers[name]);
    searchTimers[name] = setTimeout(function () { runSearch(name, true); }, 150);
  });

  document.addEventListener("keydown", function (evt) {
    var name = evt.target.getAttribute && evt.target.getAttribute("data-log-search");
    if (!name || evt.key !== "Enter") return;
    evt.preventDefault();
    clearTimeout(searchTimers[name]);
    if (searches[name] && searches[name].query === evt.target.value) move(name, evt.shiftKey ? -1 : 1);
    else runSearch(name, true);
  });

  document.addEventListener("click", function (evt) {
    var target = evt.target.closest && evt.target.closest("[data-log-next],[data-log-prev],[data-log-earlier]");
    if (!target) return;
    if (target.hasAttribute("data-log-next")) move(target.getAttribute("data-log-next"), 1);
    else if (target.hasAttribute("data-log-prev")) move(target.getAttribute("data-log-prev"), -1);
    else loadEarlier(target);
  });

  // --- load earlier ----------------------------------------------------------------------

  function loadEarlier(button) {
    var details = button.closest("details");
    var pre = details.querySelector("pre.log");
    var note = details.querySelector(".log-earlier");
    var range = note.querySelector(".log-range");
    if (button.disabled) return;
    button.disabled = true;
    var url = button.getAttribute("data-log-earlier") + "?before=" + encodeURIComponent(pre.dataset.start);
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || new URL(response.url).pathname.indexOf("/deployments/") !== 0) {
          throw new Error("the server answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        // Escaped by the server (deployments/logview.py); parsed in a
        // document of its own, so nothing in it runs.
        var part = new DOMParser().parseFromString(html, "text/html").querySelector("pre");
        if (!part) throw new Error("the answer was not output");
        var height = pre.scrollHeight;
        var top = pre.firstChild;
        while (part.firstChild) pre.insertBefore(document.adoptNode(part.firstChild), top);
        pre.scrollTop += pre.scrollHeight - height;
        pre.dataset.start = part.dataset.start;
        pre.dataset.firstLine = part.dataset.firstLine;
        pre.dataset.loaded = "true";
        showRange(note, pre);
        scheduleSearch(pre);
      })
      .catch(function (err) {
        range.textContent = "Could not load earlier lines (" + err.message + "); try again.";
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function showRange(note, pre) {
    var range = note.querySelector(".log-range");
    var last = pre.lastElementChild ? pre.lastElementChild.dataset.n : pre.dataset.firstLine;
    if (Number(pre.dataset.start) > 0) {
      range.textContent = "Showing lines " + pre.dataset.firstLine + "–" + last + ".";
    } else {
      note.hidden = true;
    }
  }

  // --- a new copy of the steps (live.js swaps it in) -----------------------------------

  var kept = {};

  document.body.addEventListener("htmx:beforeSwap", function (evt) {
    if (!evt.detail.target || evt.detail.target.id !== "deployment-steps") return;
    kept = {};
    evt.detail.target.querySelectorAll("pre.log").forEach(function (pre) {
      var name = stepOf(pre);
      var details = pre.closest("details");
      var noise = details.querySelector("[data-log-noise]");
      kept[name] = {
        pre: pre,
        loaded: pre.dataset.loaded === "true",
        query: (details.querySelector("[data-log-search]") || {}).value || "",
        noise: !!(noise && noise.checked),
        scroll: pre.scrollTop,
        atEnd: pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8
      };
    });
  });

  document.body.addEventListener("htmx:afterSwap", function (evt) {
    if (!evt.target || evt.target.id !== "deployment-steps") return;
    syncClock();
    Object.keys(kept).forEach(function (name) {
      var old = kept[name];
      var pre = document.getElementById("output-" + name);
      if (!pre) return;
      var details = pre.closest("details");
      if (old.loaded) {
        // Earlier lines the reader loaded stay: those numbered before the new copy's first.
        var first = Number(pre.dataset.firstLine);
        var top = pre.firstChild;
        var moved = false;
        Array.prototype.slice.call(old.pre.children).forEach(function (line) {
          if (Number(line.dataset.n) < first) {
            pre.insertBefore(line, top);
            moved = true;
          }
        });
        if (moved) {
          pre.dataset.start = old.pre.dataset.start;
          pre.dataset.firstLine = old.pre.dataset.firstLine;
          pre.dataset.loaded = "true";
          showRange(details.querySelector(".log-earlier"), pre);
        }
      }
      var noise = details.querySelector("[data-log-noise]");
      if (noise) noise.checked = old.noise;
      pre.scrollTop = old.atEnd ? pre.scrollHeight : old.scroll;
      var input = details.querySelector("[data-log-search]");
      if (input && old.query) {
        input.value = old.query;
        runSearch(name, false);
      } else {
        delete searches[name];
      }
    });
    paint();
    kept = {};
  });

  // An open output shows its end: the last lines are what a failure or a
  // running step is about.
  function showEnds() {
    document.querySelectorAll("details.output[open] pre.log").forEach(function (pre) {
      pre.scrollTop = pre.scrollHeight;
    });
  }
  document.addEventListener("toggle", function (evt) {
    var pre = evt.target.open && evt.target.matches && evt.target.matches("details.output") && evt.target.querySelector("pre.log");
    if (pre && pre.dataset.loaded !== "true") pre.scrollTop = pre.scrollHeight;
  }, true); // toggle does not bubble
  function ready() {
    syncClock();
    showEnds();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();

  window.NornLog = { append: append };
})();
