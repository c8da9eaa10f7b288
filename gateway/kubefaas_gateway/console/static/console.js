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
  // A result or an error is announced and scrolled into view after a post.
  const focusTarget = document.querySelector("#result, #deploy-status, .field-error");
  if (focusTarget) focusTarget.scrollIntoView({ block: "nearest" });
});
