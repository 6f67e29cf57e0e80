// News answers: progressive enhancement of the search page and the article page.
//
// The server renders every page in full (the site works with JavaScript off);
// this script only makes searching faster (fetch the server's page for the new
// question or filter and swap its results in, keep the URL, Back and Forward in
// step) and marks a passage cited by a bare #p-ID link. One renderer, the server's
// templates, which escape every article's text; the script itself builds nodes with
// createElement and textContent only.
(function () {
  "use strict";

  var BUSY_DELAY_MS = 120;     // show "Searching…" when an answer takes longer than this
  var TIMEOUT_MS = 30000;      // give up on an answer after this long
  var SITE = "News answers";

  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, String(attrs[name]));
      });
    }
    (children || []).forEach(function (child) {
      if (child === null || child === undefined || child === "") return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function pageTitle(q) {
    return q && q.trim() ? q + " – " + SITE : SITE;
  }

  // ---------------------------------------------------------------- search page

  function initSearch() {
    var form = document.getElementById("search");
    if (!form) return;
    var input = document.getElementById("q");
    var status = document.getElementById("status");
    var results = document.getElementById("results");
    var snapshots = new Map();   // location.search -> what the page showed for it
    var controller = null, seq = 0, busyTimer = null;

    // The form's fields as URL parameters, empty ones left out (so the URL stays short and shareable).
    function formParams() {
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (value !== "" || name === "q") params.append(name, value);
      });
      return params;
    }

    // Put the fields back as a URL has them (Back and Forward).
    function setFields(params) {
      input.value = params.get("q") || "";
      var k = form.querySelector("input[name=k]");
      if (params.get("k") && !k) {
        k = h("input", { type: "hidden", name: "k" });
        input.parentNode.insertBefore(k, input.nextSibling);
      }
      if (k) {
        if (params.get("k")) k.value = params.get("k");
        else k.parentNode.removeChild(k);
      }
      ["from", "to"].forEach(function (name) { form.elements[name].value = params.get(name) || ""; });
      form.elements.sort.value = params.get("sort") || "";
      form.elements.source.value = params.get("source") || "";
    }

    function setStatus(state, text) {
      status.className = "status status-" + state;
      status.setAttribute("data-state", state);
      status.textContent = text || "";
    }

    function setBusy(busy) {
      document.body.classList.toggle("is-busy", busy);
      if (busy) results.setAttribute("aria-busy", "true");
      else results.removeAttribute("aria-busy");
    }

    function replace(node, fresh) {
      var copy = document.importNode(fresh, true);
      node.parentNode.replaceChild(copy, node);
      return copy;
    }

    function snapshot() {
      snapshots.set(location.search, {
        state: status.getAttribute("data-state"),
        text: status.textContent,
        results: results.cloneNode(true),
        sources: form.elements.source.cloneNode(true),
      });
    }

    function restore(key) {
      var saved = snapshots.get(key);
      if (!saved) return false;
      setStatus(saved.state, saved.text);
      results = replace(results, saved.results);
      replace(form.elements.source, saved.sources);
      return true;
    }

    // Show what the server rendered for this search: one renderer, the server's, with or without script.
    function render(html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("results"), freshStatus = doc.getElementById("status");
      if (!fresh || !freshStatus) return false;
      results = replace(results, fresh);
      setStatus(freshStatus.getAttribute("data-state"), freshStatus.textContent);
      var sources = doc.getElementById("f-source"), mine = form.elements.source;
      if (sources && document.activeElement !== mine) replace(mine, sources);  // new counts, unless in use
      var clearLink = doc.querySelector("#filters .clear"), old = form.querySelector("#filters .clear");
      if (old) old.parentNode.removeChild(old);
      if (clearLink) document.getElementById("filters").appendChild(document.importNode(clearLink, true));
      return true;
    }

    function showError(message) {
      clear(results);
      setStatus("error", message);
    }

    function cancel() {
      seq += 1;
      if (controller) controller.abort();
      controller = null;
      clearTimeout(busyTimer);
      setBusy(false);
    }

    // Run the search the parameters describe; `how` says what to do with the browser history: "push", "replace" or "none".
    function search(params, how) {
      var q = params.get("q") || "";
      var url = form.getAttribute("action") + "?" + params.toString();
      if (how === "push" && location.search !== "?" + params.toString()) history.pushState({}, "", url);
      else if (how !== "none") history.replaceState({}, "", url);
      document.title = pageTitle(q);
      cancel();
      if (!q.trim()) {
        clear(results);
        setStatus("empty-query", "Type a question first, then press Enter.");
        snapshot();
        input.focus();
        return;
      }
      var mine = seq, timedOut = false;
      var ctl = controller = new AbortController();
      var key = location.search;
      busyTimer = setTimeout(function () {
        if (mine !== seq) return;
        setStatus("busy", "Searching…");
        setBusy(true);
      }, BUSY_DELAY_MS);
      var timer = setTimeout(function () { timedOut = true; ctl.abort(); }, TIMEOUT_MS);
      fetch(url, { headers: { Accept: "text/html" }, signal: ctl.signal })
        .then(function (resp) {
          return resp.text().then(function (text) { return { resp: resp, text: text }; });
        })
        .then(function (got) {
          if (mine !== seq) return;
          if (!(got.resp.ok && render(got.text))) {
            showError("The server answered with an error (HTTP " + got.resp.status + "). Please try again.");
          }
        }, function () {
          if (mine !== seq) return;
          showError(timedOut ? "The server took too long to answer. Please try again."
                             : "Could not reach the server. Check your connection and try again.");
        })
        .then(function () {
          clearTimeout(timer);
          if (mine !== seq) return;
          clearTimeout(busyTimer);
          setBusy(false);
          controller = null;
          if (location.search === key) snapshot();
        });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      search(formParams(), "push");
      // On touch screens, close the on-screen keyboard so the results can be seen.
      if (window.matchMedia && window.matchMedia("(pointer: coarse)").matches) input.blur();
    });

    // A changed filter searches again at once when there is a question to ask.
    form.addEventListener("change", function (event) {
      if (event.target === input || !input.value.trim()) return;
      search(formParams(), "push");
    });

    window.addEventListener("popstate", function () {
      var params = new URLSearchParams(location.search);
      var q = params.get("q");
      setFields(params);
      document.title = pageTitle(q || "");
      if (restore(location.search)) {
        cancel();
        return;
      }
      if (q === null) {
        cancel();
        clear(results);
        setStatus("start", "");
        results.appendChild(h("p", { "class": "hint" }, ["Type a question and press Enter."]));
      } else {
        search(params, "none");
      }
    });

    // "/" jumps to the search box from anywhere on the page, as on most search sites.
    document.addEventListener("keydown", function (event) {
      if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
      var t = event.target;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
      event.preventDefault();
      input.focus();
      input.select();
    });

    history.replaceState({}, "");
    snapshot();
  }

  // --------------------------------------------------------------- article page

  function initArticle() {
    var article = document.getElementById("article");
    var text = document.getElementById("text");
    if (!article || !text) return;

    function swap(node, tag) {
      var repl = document.createElement(tag);
      Array.prototype.forEach.call(node.attributes, function (a) { repl.setAttribute(a.name, a.value); });
      while (node.firstChild) repl.appendChild(node.firstChild);
      node.parentNode.replaceChild(repl, node);
      return repl;
    }

    function mark(pid) {
      // Another passage than the server marked: the sentence marked in the old one goes too.
      article.classList.remove("has-said");
      Array.prototype.forEach.call(text.querySelectorAll(".seg"), function (seg) {
        seg.classList.remove("said");
        var inside = (seg.getAttribute("data-p") || "").split(" ").indexOf(pid) >= 0;
        if (inside !== (seg.tagName === "MARK")) swap(seg, inside ? "mark" : "span");
      });
      article.setAttribute("data-cited", pid);
      if (!document.getElementById("cited-note")) {
        var header = article.querySelector("header");
        header.appendChild(h("p", { "class": "cited-note", id: "cited-note" },
          ["The cited passage is ", h("mark", null, ["marked"]), " below. ", h("a", { href: "#p-" + pid }, ["Go to it"])]));
      } else {
        document.querySelector("#cited-note a").setAttribute("href", "#p-" + pid);
      }
    }

    function fromHash() {
      var m = /^#p-(\d+)$/.exec(location.hash);
      if (!m || !document.getElementById("p-" + m[1])) return;
      if (article.getAttribute("data-cited") !== m[1]) {
        mark(m[1]);
        document.getElementById("p-" + m[1]).scrollIntoView({ block: "start" });
      }
    }

    fromHash();
    window.addEventListener("hashchange", fromHash);
  }

  function init() {
    initSearch();
    initArticle();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
