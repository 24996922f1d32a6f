// Live pages: tell the server what we already show when a socket (re)opens, keep the
// tab title on the job's progress, and reconnect after a server restart.
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

  document.addEventListener("htmx:wsOpen", function (e) {
    var kind = e.target.dataset.socket;
    if (kind === "job") e.detail.socketWrapper.send(JSON.stringify({ after: lastSeq() }));
    if (kind === "jobs") e.detail.socketWrapper.send(JSON.stringify({ resync: true }));
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
