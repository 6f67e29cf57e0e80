// News answers: progressive enhancement of the search page and the article page.
//
// The server renders every page in full (the site works with JavaScript off);
// this script only makes searching faster (fetch /api/search, render in place,
// keep the URL, Back and Forward in step) and marks a passage cited by a bare
// #p-ID link. Article text is untrusted: the DOM is built with createElement and
// textContent only, never from HTML strings.
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

  // Highlight offsets count Unicode code points (Python string indices), not UTF-16 units.
  function markParts(text, highlight) {
    var cps = Array.from(text);
    var spans = (highlight || [])
      .map(function (s) { return [Math.max(0, s.start | 0), Math.min(cps.length, s.end | 0)]; })
      .filter(function (s) { return s[0] < s[1]; })
      .sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var merged = [];
    spans.forEach(function (s) {
      var last = merged[merged.length - 1];
      if (last && s[0] <= last[1]) last[1] = Math.max(last[1], s[1]);
      else merged.push([s[0], s[1]]);
    });
    var parts = [], pos = 0;
    merged.forEach(function (s) {
      if (s[0] > pos) parts.push([cps.slice(pos, s[0]).join(""), false]);
      parts.push([cps.slice(s[0], s[1]).join(""), true]);
      pos = s[1];
    });
    if (pos < cps.length || !parts.length) parts.push([cps.slice(pos).join(""), false]);
    // A marked span that crosses a paragraph break is marked paragraph by paragraph, not across the gap.
    var out = [];
    parts.forEach(function (part) {
      if (!part[1]) { out.push(part); return; }
      part[0].split(/(\s*\n\s*)/).forEach(function (bit, i) {
        if (bit) out.push([bit, i % 2 === 0]);
      });
    });
    return out;
  }

  function siteName(source, url) {
    if (source) return source;
    try {
      var u = new URL(url);
      if (u.protocol === "http:" || u.protocol === "https:") return u.hostname.replace(/^www\./, "");
    } catch (e) { /* no usable URL */ }
    return "";
  }

  function articleLink(href, q, passageId, anchor) {
    var path = String(href).split("#")[0].split("?")[0];
    var params = new URLSearchParams();
    if (q) params.set("q", q);
    params.set("p", String(passageId));
    return path + "?" + params.toString() + (anchor ? "#p-" + passageId : "");
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

    function kValue() {
      var k = form.querySelector("input[name=k]");
      return k ? k.value : "";
    }

    function setK(k) {
      var field = form.querySelector("input[name=k]");
      if (k && !field) {
        field = h("input", { type: "hidden", name: "k" });
        input.parentNode.insertBefore(field, input.nextSibling);
      }
      if (field) {
        if (k) field.value = k;
        else field.parentNode.removeChild(field);
      }
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

    function snapshot() {
      snapshots.set(location.search, {
        state: status.getAttribute("data-state"),
        text: status.textContent,
        results: results.cloneNode(true),
      });
    }

    function restore(key) {
      var saved = snapshots.get(key);
      if (!saved) return false;
      setStatus(saved.state, saved.text);
      var fresh = saved.results.cloneNode(true);
      results.parentNode.replaceChild(fresh, results);
      results = fresh;
      return true;
    }

    function renderHit(r, q) {
      var c = r.citation || {};
      var site = siteName(c.source, c.url);
      var date = (c.published || "").slice(0, 10);
      var meta = [];
      if (site) meta.push(h("span", { "class": "site" }, [site]));
      if (site && date) meta.push(" · ");
      if (date) meta.push(h("time", { datetime: date }, [date]));
      var quote = markParts(r.text || "", r.highlight).map(function (part) {
        return part[1] ? h("mark", null, [part[0]]) : document.createTextNode(part[0]);
      });
      var score = Number(r.score).toFixed(2);
      return h("li", { "class": "hit" }, [
        h("h2", { "class": "hit-title" }, [h("a", { href: articleLink(c.href, q, r.passage_id, false) }, [c.title || c.article_id])]),
        h("p", { "class": "hit-meta" }, meta),
        h("blockquote", { "class": "hit-text" }, quote),
        h("p", { "class": "hit-foot" }, [
          h("a", { "class": "cite", href: articleLink(c.href, q, r.passage_id, true) }, [
            "Read in context", h("span", { "class": "vh" }, [": " + (c.title || c.article_id)]),
          ]),
          " ",
          h("span", { "class": "score", title: "rank " + r.rank + ", relevance score " + score }, ["#" + r.rank + " · " + score]),
        ]),
      ]);
    }

    function render(body, q) {
      var hits = body.results;
      clear(results);
      if (!hits.length) {
        setStatus("no-results", "No passages match “" + q + "”. Try other words, or fewer of them.");
        return;
      }
      var n = hits.length;
      setStatus("results", n + " passage" + (n === 1 ? "" : "s") + " · " + Math.round(body.took_ms) + " ms");
      results.appendChild(h("ol", { "class": "hits" }, hits.map(function (r) { return renderHit(r, q); })));
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

    // Run a search for q; `how` says what to do with the browser history: "push", "replace" or "none".
    function search(q, k, how) {
      var params = new URLSearchParams();
      params.set("q", q);
      if (k) params.set("k", k);
      var url = form.getAttribute("action") + "?" + params.toString();
      if (how === "push" && location.search !== "?" + params.toString()) history.pushState({ q: q, k: k }, "", url);
      else if (how !== "none") history.replaceState({ q: q, k: k }, "", url);
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
      fetch("/api/search?" + params.toString(), { headers: { Accept: "application/json" }, signal: ctl.signal })
        .then(function (resp) {
          return resp.json().then(
            function (body) { return { resp: resp, body: body }; },
            function () { return { resp: resp, body: null }; });
        })
        .then(function (answer) {
          if (mine !== seq) return;
          var body = answer.body;
          if (answer.resp.ok && body && Array.isArray(body.results)) render(body, q);
          else if (body && body.error && body.error.message) showError(body.error.message);
          else showError("The server answered with an error (HTTP " + answer.resp.status + "). Please try again.");
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
      search(input.value, kValue(), "push");
      // On touch screens, close the on-screen keyboard so the results can be seen.
      if (window.matchMedia && window.matchMedia("(pointer: coarse)").matches) input.blur();
    });

    window.addEventListener("popstate", function () {
      var params = new URLSearchParams(location.search);
      var q = params.get("q");
      input.value = q || "";
      setK(params.get("k") || "");
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
        search(q, params.get("k") || "", "none");
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

    history.replaceState({ q: input.value, k: kValue() }, "");
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
      Array.prototype.forEach.call(text.querySelectorAll(".seg"), function (seg) {
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
