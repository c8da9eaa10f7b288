// The console's editor: CodeMirror 6 bundled into one IIFE exposing window.KubefaasEditor.
// Rebuilt by build.sh; the bundle is committed, so serving needs no npm and no network.
import { EditorView, basicSetup } from "codemirror";
import { EditorState, Compartment } from "@codemirror/state";
import { keymap } from "@codemirror/view";
import { indentWithTab } from "@codemirror/commands";
import { python } from "@codemirror/lang-python";
import { javascript } from "@codemirror/lang-javascript";
import { json } from "@codemirror/lang-json";
import { yaml } from "@codemirror/lang-yaml";
import { oneDark } from "@codemirror/theme-one-dark";

function language(name) {
  if (name.endsWith(".py")) return python();
  if (name.endsWith(".js") || name.endsWith(".mjs")) return javascript();
  if (name.endsWith(".json")) return json();
  if (name.endsWith(".yaml") || name.endsWith(".yml")) return yaml();
  return [];
}

// Replace a <textarea> with an editor that keeps the textarea's value in sync, so the
// form still submits (and works without JavaScript, as a plain textarea).
function attach(textarea, filename) {
  // The page's Content-Security-Policy admits only styles carrying this nonce.
  const nonceMeta = document.querySelector('meta[name="csp-nonce"]');
  const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  const theme = new Compartment();
  const view = new EditorView({
    state: EditorState.create({
      doc: textarea.value,
      extensions: [
        basicSetup,
        nonceMeta ? EditorView.cspNonce.of(nonceMeta.content) : [],
        keymap.of([indentWithTab]),
        language(filename || ""),
        theme.of(dark ? oneDark : []),
        EditorView.contentAttributes.of({ "aria-label": textarea.getAttribute("aria-label") || "Code" }),
        EditorView.updateListener.of((u) => { if (u.docChanged) textarea.value = u.state.doc.toString(); }),
      ],
    }),
  });
  textarea.style.display = "none";
  textarea.parentNode.insertBefore(view.dom, textarea.nextSibling);
  return view;
}

window.KubefaasEditor = { attach };
