// Plays the terminal recordings of a session page with asciinema-player
// (vendored in static/player, Apache-2.0). Each .player element names its
// recording in data-cast, served by the app with the session's cookie.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  if (typeof AsciinemaPlayer === "undefined") return;
  document.querySelectorAll(".player[data-cast]").forEach(function (el) {
    el.player = AsciinemaPlayer.create(el.dataset.cast, el, {
      fit: "width",
      idleTimeLimit: 2,
      preload: true,
      controls: true,
      terminalFontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
    });
  });
});
