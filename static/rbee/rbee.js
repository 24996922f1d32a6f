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

  document.addEventListener("htmx:wsAfterMessage", function (e) {
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
    var code = e.detail.event.code;
    if (code === 1001 || code === 1005) {
      setTimeout(function () { e.detail.socketWrapper.reconnect(); }, 1500);
    }
  });

  document.addEventListener("DOMContentLoaded", updateTitle);
})();
