// For each text of the corpus (one JSON string per line), writes the token
// ids js-tiktoken produces, one JSON object per line in corpus order:
// {"line": <1-based corpus line>, "count": <tokens>, "ids": [...]}, to
// <out>/<encoding>.jsonl for cl100k_base and o200k_base.
//
// Special tokens such as <|endoftext|> are encoded as ordinary text
// (allowedSpecial and disallowedSpecial both empty), which is how the proxy
// counts a user's prompt.
//
// usage: node reference_counts.mjs <npm dir with node_modules> <corpus.jsonl> <out dir>
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [npmDir, corpusFile, outDir] = process.argv.slice(2);
if (!npmDir || !corpusFile || !outDir) {
  console.error("usage: node reference_counts.mjs <npm dir> <corpus.jsonl> <out dir>");
  process.exit(2);
}
const require = createRequire(path.resolve(npmDir, "package.json"));
const { Tiktoken } = require("js-tiktoken/lite");

const texts = fs
  .readFileSync(corpusFile, "utf8")
  .split("\n")
  .map((line, i) => [i + 1, line])
  .filter(([, line]) => line.length > 0)
  .map(([n, line]) => {
    const text = JSON.parse(line);
    if (typeof text !== "string") throw new Error(`${corpusFile}:${n}: not a JSON string`);
    return [n, text];
  });

fs.mkdirSync(outDir, { recursive: true });
for (const encoding of ["cl100k_base", "o200k_base"]) {
  const enc = new Tiktoken(require(`js-tiktoken/ranks/${encoding}`));
  const out = texts.map(([n, text]) => {
    const ids = enc.encode(text, [], []);
    return JSON.stringify({ line: n, count: ids.length, ids }) + "\n";
  });
  const file = path.join(outDir, `${encoding}.jsonl`);
  fs.writeFileSync(`${file}.tmp`, out.join(""));
  fs.renameSync(`${file}.tmp`, file);
  console.log(`reference_counts: ${file} (${texts.length} texts)`);
}
