// kubefaas console: progressive enhancement only; every page works without this file.
// Turns code textareas into CodeMirror editors (static/vendor/codemirror.js, bundled from
// npm by vendor_src/build.sh). In the editor, Tab indents; press Escape then Tab to leave it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const editor = window.KubefaasEditor;
  if (!editor) return; // plain textareas still submit the same form
  document.querySelectorAll("textarea[data-editor]").forEach((area) => {
    const view = editor.attach(area, area.dataset.editor);
    view.dom.classList.add("editor");
    // The textarea's <label> focuses the editor.
    const label = document.querySelector(`label[for="${area.id}"]`);
    if (label) label.addEventListener("click", () => view.focus());
  });
  // The functions page refreshes its figures every 10 s while it is visible.
  const main = document.querySelector("main[data-refresh]");
  if (main) {
    const every = Number(main.dataset.refresh) * 1000;
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const answer = await fetch(location.href, { credentials: "same-origin" });
        if (!answer.ok || answer.redirected) return;
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.querySelector("main[data-refresh]");
        if (fresh && !main.contains(document.activeElement)) main.replaceChildren(...fresh.childNodes);
      } catch (error) {
        // Offline for a moment: the next tick tries again.
      }
    }, every);
  }
  // A result or an error is announced and scrolled into view after a post.
  const focusTarget = document.querySelector("#result, #deploy-status, .field-error");
  if (focusTarget) focusTarget.scrollIntoView({ block: "nearest" });
});
