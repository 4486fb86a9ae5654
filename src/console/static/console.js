// kinetic's console: the one script it runs. Pages work without it; with it, a page whose <main>
// says data-live="MS" fetches its <main> again every MS milliseconds and swaps it in place (no full
// reload), pausing while the tab is hidden. Nothing else.
"use strict";
(function () {
  const main = document.querySelector("main[data-live]");
  if (!main) return;
  const every = Number(main.dataset.live) || 2000;
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Console-Fragment": "main" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.redirected || response.status === 401 || response.status === 303) {
        window.location.assign("/console/login");
        return;
      }
      if (response.ok) {
        main.innerHTML = await response.text();
        main.dataset.refreshedAt = String(Date.now());
      }
    } catch (error) {
      // The next tick tries again; the page keeps what it shows.
    } finally {
      busy = false;
    }
  }
  window.setInterval(refresh, every);
})();
