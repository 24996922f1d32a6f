// Live pages: tell the server what we already show when a socket (re)opens (?after=N
// in the job socket's URL, rewritten before every reconnect), keep the tab title on
// the job's progress, and reconnect after a server restart.
(function () {
  "use strict";

  function lastSeq() {
    var marker = document.getElementById("job-last-seq");
    return marker ? Number(marker.dataset.seq || 0) : 0;
  }

  function updateTitle() {
    var progress = document.getElementById("job-progress");
    if (progress && progress.dataset.title) document.title = progress.dataset.title;
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

  document.addEventListener("htmx:wsOpen", function (e) {
    if (e.target.dataset.socket === "jobs") e.detail.socketWrapper.send(JSON.stringify({ resync: true }));
  });

  document.addEventListener("htmx:wsAfterMessage", function (e) {
    updateTitle();
    var events = document.getElementById("job-events");
    if (events) events.scrollTop = events.scrollHeight;
    var empty = document.getElementById("jobs-empty");
    if (empty && document.querySelector("#job-rows tr")) empty.remove();
  });

  // htmx reconnects by itself only after abnormal closes; a server that restarts
  // cleanly says "going away" (1001), and the page should come back to life too.
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail.event.code;
    if (code === 1001 || code === 1005) {
      setTimeout(function () { e.detail.socketWrapper.reconnect(); }, 1500);
    }
  });

  document.addEventListener("DOMContentLoaded", updateTitle);
})();
