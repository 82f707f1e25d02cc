// ringfence console: live alert list (server-sent events) and authenticated actions.
// The token lives in sessionStorage and is sent only as an Authorization header on fetch(): no
// cookie carries it, so another site cannot make the browser act with it (CSRF). Values from alerts
// are inserted with textContent only, never as markup.
"use strict";
(() => {
  const TOKEN_KEY = "ringfence.console.token";
  const $ = (selector) => document.querySelector(selector);
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function showStatus(text, ok) {
    const element = $("#action-status");
    element.textContent = text;
    element.className = ok ? "ok" : "error";
  }

  async function whoami() {
    const who = $("#whoami");
    const signedIn = (actor) => {
      $("#login").hidden = Boolean(actor);
      $("#logout").hidden = !actor;
      document.body.dataset.actor = actor || "";
    };
    if (!token()) { who.textContent = "not signed in"; signedIn(""); return; }
    const response = await fetch("/api/whoami", { headers: { Authorization: "Bearer " + token() } });
    if (response.ok) {
      const body = await response.json();
      who.textContent = "signed in as " + body.actor;
      signedIn(body.actor);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
      who.textContent = "token refused";
      signedIn("");
    }
  }

  async function submitAction(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const body = {};
    for (const [name, value] of new FormData(form)) {
      if (value === "") continue;
      const input = form.elements.namedItem(name);
      body[name] = input && input.type === "number" ? Number(value) : value;
    }
    const headers = { "Content-Type": "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const response = await fetch(form.getAttribute("action"), {
      method: "POST", headers, body: JSON.stringify(body), credentials: "omit",
    });
    let detail = "";
    try { detail = (await response.json()).message || ""; } catch (_) { detail = response.statusText; }
    showStatus((response.ok ? "Done: " : "Refused (" + response.status + "): ") + detail, response.ok);
  }

  function cell(row, name, text) {
    const td = document.createElement("td");
    td.className = name;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function addAlert(alert) {
    const rows = $("#alert-rows");
    for (const old of rows.querySelectorAll("tr")) {
      if (old.dataset.alertId === alert.alert_id) old.remove();
    }
    const row = document.createElement("tr");
    row.dataset.alertId = alert.alert_id;
    row.className = "mode-" + alert.mode + " new";
    for (const name of ["time", "host", "score", "tactic"]) cell(row, name, alert[name]);
    const link = document.createElement("a");
    link.href = alert.url;
    link.textContent = alert.detection_name;
    cell(row, "detection_name", "").appendChild(link);
    cell(row, "mode", alert.mode);
    rows.prepend(row);
    $("#no-alerts").hidden = true;
  }

  function followAlerts() {
    const live = $("#live");
    const source = new EventSource("/events");
    source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
    source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live off"; });
    source.addEventListener("alert", (event) => addAlert(JSON.parse(event.data)));
  }

  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    whoami();
  });
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); whoami(); });
  for (const form of document.querySelectorAll("form.action")) form.addEventListener("submit", submitAction);
  if ($("#alert-rows")) followAlerts();
  whoami();
})();
