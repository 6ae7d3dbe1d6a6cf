// Writes <out>/cl100k_base.tiktoken and <out>/o200k_base.tiktoken from the
// ranks js-tiktoken ships, in tiktoken's rank-file format: one line per
// token, "<base64 of the token's bytes> <rank>", by rank.
//
// js-tiktoken's ranks/<encoding> modules hold `bpe_ranks` compressed: lines
// of "! <offset> <b64> <b64> ...", where the i-th token on a line has rank
// offset + i (see Tiktoken's constructor in js-tiktoken's dist/). The
// base64 is copied as is.
//
// usage: node export_ranks.mjs <npm dir with node_modules> <out dir>
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [npmDir, outDir] = process.argv.slice(2);
if (!npmDir || !outDir) {
  console.error("usage: node export_ranks.mjs <npm dir> <out dir>");
  process.exit(2);
}
const require = createRequire(path.resolve(npmDir, "package.json"));
fs.mkdirSync(outDir, { recursive: true });

for (const encoding of ["cl100k_base", "o200k_base"]) {
  const ranks = require(`js-tiktoken/ranks/${encoding}`);
  const byRank = [];
  for (const line of ranks.bpe_ranks.split("\n")) {
    if (!line) continue;
    const [, offsetStr, ...tokens] = line.split(" ");
    const offset = Number.parseInt(offsetStr, 10);
    if (!Number.isInteger(offset)) throw new Error(`${encoding}: bad offset in "${line.slice(0, 40)}"`);
    tokens.forEach((token, i) => byRank.push([offset + i, token]));
  }
  byRank.sort((a, b) => a[0] - b[0]);
  const text = byRank.map(([rank, token]) => `${token} ${rank}\n`).join("");
  const file = path.join(outDir, `${encoding}.tiktoken`);
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
  console.log(`export_ranks: ${file} (${byRank.length} ranks)`);
}
