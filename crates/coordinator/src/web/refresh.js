// Pages marked data-refresh="SECONDS" reload their main content in place, so the overview
// stays live without a full reload (and without any build step).
(function () {
  const main = document.getElementById("main");
  const seconds = main && Number(main.firstElementChild && main.firstElementChild.dataset.refresh);
  if (!seconds) return;
  setInterval(async function () {
    if (document.hidden) return;
    try {
      const response = await fetch(location.href, { headers: { accept: "text/html" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("main");
      if (fresh) main.replaceChildren(...fresh.childNodes);
    } catch (e) {
      // Offline for a moment: the next tick tries again.
    }
  }, seconds * 1000);
})();
