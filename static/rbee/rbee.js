// Live pages: tell the server what we already show when a socket (re)opens (?after=N
// in the job socket's URL, rewritten before every reconnect), keep the tab title on
// the job's progress, say so when the live updates stop, reconnect after a server
// restart, and keep relative times ("3 minutes ago") true while the page is open.
(function () {
  "use strict";

  function lastSeq() {
    var marker = document.getElementById("job-last-seq");
    return marker ? Number(marker.dataset.seq || 0) : 0;
  }

  function isLost() {
    return document.documentElement.dataset.live === "lost";
  }

  function updateTitle() {
    var progress = document.getElementById("job-progress");
    if (!progress) return;
    if (isLost() && progress.dataset.name) document.title = "disconnected · " + progress.dataset.name;
    else if (progress.dataset.title) document.title = progress.dataset.title;
  }

  function withAfter(url) {
    if (!/\/ws\/jobs\/\d+\//.test(url)) return url;
    var base = url.replace(/[?&]after=\d*/, "");
    return base + (base.indexOf("?") === -1 ? "?" : "&") + "after=" + lastSeq();
  }

  if (window.htmx && htmx.createWebSocket) {
    var createWebSocket = htmx.createWebSocket;
    htmx.createWebSocket = function (url) { return createWebSocket(withAfter(url)); };
  }

  // While the socket is down, the page must stop claiming "running · 18 s left".
  function setLive(live) {
    if (live) delete document.documentElement.dataset.live;
    else document.documentElement.dataset.live = "lost";
    var status = document.getElementById("live-status");
    if (status) status.hidden = live;
    updateTitle();
  }

  // A restarting server should be found again within seconds, not the extension's minute.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.wsReconnectDelay = function (retries) {
        return Math.min(500 * Math.pow(2, retries), 4000) * (0.5 + Math.random() / 2);
      };
    }
  });

  document.addEventListener("htmx:wsOpen", function (e) {
    if (e.target.dataset.socket === "jobs") e.detail.socketWrapper.send(JSON.stringify({ resync: true }));
    setLive(true);
  });

  // An in-page confirmation (cancel): "Keep" closes it without leaving the page, a
  // done request closes it, and so does the job ending meanwhile.
  document.addEventListener("click", function (e) {
    var keep = e.target.closest && e.target.closest("[data-dismiss]");
    if (!keep) return;
    var box = document.querySelector(keep.dataset.dismiss);
    if (box && box.closest("#job-confirm")) { e.preventDefault(); box.remove(); }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var box = e.detail.elt.closest(".confirm");
    if (box && e.detail.successful && e.detail.requestConfig.verb !== "get") box.remove();
  });

  function dropStaleConfirmation() {
    var box = document.getElementById("cancel-confirm");
    if (box && document.getElementById("job-header") && !document.getElementById("job-cancel")) box.remove();
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    updateTitle();
    dropStaleConfirmation();
    var events = document.getElementById("job-events");
    if (events) events.scrollTop = events.scrollHeight;
    var empty = document.getElementById("jobs-empty");
    if (empty && document.querySelector("#job-rows tr")) empty.remove();
  });

  // htmx reconnects by itself only after abnormal closes; a server that restarts
  // cleanly says "going away" (1001), and the page should come back to life too.
  document.addEventListener("htmx:wsClose", function (e) {
    setLive(false);
    var code = e.detail.event.code;
    if (code === 1001 || code === 1005) {
      setTimeout(function () { e.detail.socketWrapper.reconnect(); }, 1500);
    }
  });

  // Relative times, as Django's naturaltime writes them; the exact time stays in the title.
  function plural(n, one, many) {
    return n === 1 ? one : n + "\u00a0" + many;  // as naturaltime: a no-break space
  }

  function naturalTime(then, now) {
    var seconds = Math.floor((now - then) / 1000);
    if (seconds < 1) return "now";  // a browser clock a little behind the server's
    if (seconds < 60) return plural(seconds, "a second", "seconds") + " ago";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return plural(minutes, "a minute", "minutes") + " ago";
    var hours = Math.floor(minutes / 60);
    if (hours < 24) return plural(hours, "an hour", "hours") + " ago";
    return null;  // a day or more: the server's wording ("1 day, 2 hours ago") holds long enough
  }

  function tickTimes() {
    var now = Date.now();
    document.querySelectorAll("time.rel[datetime]").forEach(function (el) {
      var then = Date.parse(el.getAttribute("datetime"));
      if (isNaN(then)) return;
      var text = naturalTime(then, now);
      if (text !== null && el.textContent !== text) el.textContent = text;
    });
  }

  setInterval(tickTimes, 15000);
  document.addEventListener("DOMContentLoaded", function () {
    updateTitle();
    tickTimes();
  });
})();
