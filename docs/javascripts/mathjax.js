// MathJax settings for pymdownx.arithmatex in generic mode, which wraps inline math in
// \( ... \) and display math in \[ ... \] inside elements of class "arithmatex".
window.MathJax = {
  // textmacros: escapes such as \_ inside \text{...}, which some docstrings use.
  loader: { load: ["[tex]/textmacros"] },
  tex: {
    packages: { "[+]": ["textmacros"] },
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    // Only typeset what arithmatex marked, never stray dollar signs in code or prose.
    ignoreHtmlClass: ".*",
    processHtmlClass: "arithmatex",
  },
};

// Material's instant navigation swaps pages without a reload: typeset each new page.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
