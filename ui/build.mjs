// Bundle src/ into dist/ (what the fission binary embeds) and hold the first-load budget.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, statSync } from "node:fs";

const BUDGET = 200 * 1024; // bytes of JavaScript on first load (issue 16)

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  jsx: "automatic",
  jsxImportSource: "preact",
  outfile: "dist/app.js",
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/app.css", "dist/app.css");
const size = statSync("dist/app.js").size;
console.log(`dist/app.js: ${size} bytes (budget ${BUDGET})`);
if (size > BUDGET) {
  console.error(`Error: dist/app.js is ${size} bytes, over the ${BUDGET}-byte budget`);
  process.exit(1);
}
