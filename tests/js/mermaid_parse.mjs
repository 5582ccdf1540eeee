// Parses Mermaid charts with Mermaid's own parser.
// stdin: a JSON array of chart texts; stdout: a JSON array, null for a chart that parses, else
// the parser's error message. Mermaid's sanitiser needs a DOM, which jsdom provides.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const chart of JSON.parse(input)) {
  try {
    await mermaid.parse(chart);
    results.push(null);
  } catch (e) {
    results.push(String(e.message ?? e));
  }
}
process.stdout.write(JSON.stringify(results));
