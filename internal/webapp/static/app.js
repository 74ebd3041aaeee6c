// Mayfly web app: countdowns, copy buttons, the live policy decision and
// live regions fed by server-sent events. User data is only ever set with
// textContent or moved as nodes the server rendered (escaped) itself.
"use strict";
(function () {
  const csrfMeta = document.querySelector('meta[name="mayfly-csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const status = document.getElementById("live-status");
  function say(msg) { if (status) { status.textContent = msg; } }

  // Countdowns to expiry.
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      const left = Math.floor((Date.parse(el.dataset.expires) - now) / 1000);
      if (left <= 0) { el.textContent = "expired"; return; }
      const h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
      el.textContent = (h > 0 ? h + "h " : "") + (h > 0 || m > 0 ? m + "m " : "") + s + "s left";
    });
  }
  tick();
  setInterval(tick, 1000);

  // Copy buttons.
  document.addEventListener("click", function (ev) {
    const b = ev.target.closest("button[data-copy]");
    if (!b) { return; }
    const src = document.getElementById(b.dataset.copy);
    if (!src) { return; }
    const done = function () { say("Copied."); b.dataset.copied = "1"; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(src.textContent).then(done, function () { selectText(src); say("Press Ctrl+C to copy."); });
    } else { selectText(src); say("Press Ctrl+C to copy."); }
  });
  function selectText(el) {
    const r = document.createRange(); r.selectNodeContents(el);
    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(r);
  }

  // The live policy decision on the request form.
  const form = document.getElementById("request-form");
  const out = document.getElementById("decision");
  if (form && out) {
    let timer = null, seq = 0;
    const update = function () {
      const mine = ++seq;
      const body = new URLSearchParams(new FormData(form));
      fetch(out.dataset.preview, { method: "POST", body: body, headers: { "X-Mayfly-CSRF": csrf, "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (d) { if (mine === seq) { showDecision(d); } })
        .catch(function () {});
    };
    const later = function () { clearTimeout(timer); timer = setTimeout(update, 200); };
    form.addEventListener("input", later);
    form.addEventListener("change", later);
    update();
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function showDecision(d) {
    const parts = [];
    if (d.error) {
      parts.push(el("p", "error", d.error.message));
    } else {
      const names = { auto: "Approved automatically", approval: "Needs approval", deny: "Refused", break_glass: "Break-glass: access at once, reviewed later" };
      const head = el("p", "decision-" + d.decision, names[d.decision] || d.decision);
      head.id = "decision-outcome";
      head.dataset.decision = d.decision;
      parts.push(head);
      if (d.decision === "approval") {
        const ol = el("ol", "steps");
        d.steps.forEach(function (s) {
          ol.appendChild(el("li", "", s.approvals + " approval" + (s.approvals === 1 ? "" : "s") + " from " + s.approver_groups.join(", ")));
        });
        parts.push(ol);
      }
      if (d.reason) { parts.push(el("p", "", d.reason)); }
      const dl = el("dl");
      const row = function (k, v) { dl.appendChild(el("dt", "", k)); dl.appendChild(el("dd", "", v)); };
      if (d.policy) { row("Policy", d.policy); }
      if (d.duration) { row("Duration", d.duration); }
      if (d.max_duration) { row("Maximum", d.max_duration); }
      if (d.reason_pattern) {
        row("Reason must match", d.reason_pattern);
        row("Your reason", d.reason_matches ? "matches" : "does not match yet");
      }
      parts.push(dl);
    }
    out.replaceChildren.apply(out, parts);
  }

  // Live regions: reload them when something changes, on any replica.
  const regions = document.querySelectorAll("[data-live]");
  if (regions.length && window.EventSource) {
    let busy = false, again = false;
    const refresh = function () {
      if (busy) { again = true; return; }
      busy = true;
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          const doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live]").forEach(function (cur) {
            const next = doc.getElementById(cur.id);
            if (!next) { return; }
            if (cur.contains(document.activeElement) && document.activeElement !== document.body) {
              // Keep what the person is typing; refresh after they leave.
              cur.addEventListener("focusout", refresh, { once: true });
              return;
            }
            const before = cur.querySelectorAll("[data-request]").length;
            const fresh = document.importNode(next, true);
            cur.replaceWith(fresh);
            const after = fresh.querySelectorAll("[data-request]").length;
            if (after !== before) { say("Updated: " + after + " request" + (after === 1 ? "" : "s") + " shown."); }
            tick();
          });
        })
        .catch(function () {})
        .finally(function () { busy = false; if (again) { again = false; refresh(); } });
    };
    const es = new EventSource("/app/events");
    es.addEventListener("changed", refresh);
    document.documentElement.dataset.live = "connecting";
    let opened = false;
    es.addEventListener("open", function () {
      document.documentElement.dataset.live = "open";
      // After a reconnect, catch up on what changed meanwhile.
      if (opened) { refresh(); }
      opened = true;
    });
  }
})();
