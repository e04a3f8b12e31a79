// The pages' one script, no build step. Pages marked data-refresh="SECONDS" reload their main
// content in place (the overview, a running cluster, a running job's output); the cluster form
// (data-quote="URL") shows the price as it is filled in. Without JavaScript both still work:
// reload the page, or press "Quote".
(function () {
  const main = document.getElementById("main");
  const marked = main && main.querySelector("[data-refresh]");
  const seconds = marked && Number(marked.dataset.refresh);
  if (seconds) {
    setInterval(async function () {
      if (document.hidden) return;
      try {
        const response = await fetch(location.href, { headers: { accept: "text/html" } });
        if (response.redirected) return location.reload();
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("main");
        if (fresh) main.replaceChildren(...fresh.childNodes);
      } catch (e) {
        // Offline for a moment: the next tick tries again.
      }
    }, seconds * 1000);
  }

  // Forms that end something ask first (delegated: refreshed content has new forms).
  document.addEventListener("submit", function (event) {
    const confirming = event.target.closest("form[data-confirm]");
    if (confirming && !window.confirm(confirming.dataset.confirm)) event.preventDefault();
  });

  const form = document.querySelector("form[data-quote]");
  if (!form) return;
  const target = document.getElementById("quote");
  let timer = null;
  let asked = 0;
  async function quote() {
    const ask = ++asked;
    const body = new URLSearchParams(new FormData(form));
    try {
      const response = await fetch(form.dataset.quote, { method: "POST", body: body });
      // The session ended: the page itself goes to sign-in.
      if (response.redirected) return location.reload();
      // Only the answer to the latest question is shown.
      if (ask === asked && response.ok) target.innerHTML = await response.text();
    } catch (e) {
      // The "Quote" button still works.
    }
  }
  function soon() {
    clearTimeout(timer);
    timer = setTimeout(quote, 250);
  }
  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  quote();
})();
