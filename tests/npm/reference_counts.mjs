// For each text of the corpus (one JSON string per line), writes the token
// ids js-tiktoken produces, one JSON object per line in corpus order:
// {"line": <1-based corpus line>, "count": <tokens>, "ids": [...]}, to
// <out>/<encoding>.jsonl for cl100k_base and o200k_base.
//
// Also <out>/<encoding>.random.jsonl: {"text": ..., "ids": [...]} for 5000
// texts strung together at random (a fixed seed) from a pool of letters,
// contractions, digits, punctuation, marks, emoji and every kind of space,
// where a split pattern's corner cases hide.
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

// Pieces for the random texts (no lone surrogates: every text is UTF-8).
const pool = [
  " ", "  ", "\t", "\n", "\r\n", "\r", "\u000b", "\u000c", "\u0085", "\u00a0", "\u1680", "\u2009", "\u200b",
  "\u2028", "\u3000", "\ufeff",
  "a", "b", "e", "s", "t", "S", "T", "D", "l", "L", "v", "r", "m", "\u017f", "\u212a", "k",
  "ing", "the", "The", "THE", "hello", "World",
  "'", "'s", "'S", "'ll", "'re", "'ve", "'d", "'m", "\u2019", "\"",
  "0", "1", "12", "123", "4567", "\u0663", "\u0966", "\u00b2", "\u00bd", "\u216b",
  ".", ",", "!", "?", "-", "_", "/", "//", "\\", "(", ")", "{", "}", "[", "]", "<", ">", "=", "==", "+", "*", "&",
  "|", "#", "@", "$", "%", "^", "~", "`", ";", ":",
  "\u00e9", "\u00fc", "\u00f1", "\u00df", "\u03a9", "\u0436", "\u0416", "\u4e2d", "\u6587", "\u306e", "\u30ab",
  "\ud55c", "\u0639", "\u0628", "\u05e9", "\u0928", "\u093f", "\u094d", "\u0e01", "\u0e31", "\u0301", "\u0308",
  "\u20dd", "\u01c5", "\u02b0", "\ufb01",
  "\u{1f600}", "\u{1f44d}", "\u{1f3fd}", "\u200d", "\u{1f468}", "\u{1f1ef}", "\u{1f1f5}", "\ufe0f", "\u20e3",
  "\u2764", "\u20ac", "\u00a9", "\u2122", "\u2211", "\u2192",
];
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x80000000;
};
const randomTexts = [];
for (let i = 0; i < 5000; i++) {
  let text = "";
  const pieces = 1 + Math.floor(random() * 25);
  for (let j = 0; j < pieces; j++) text += pool[Math.floor(random() * pool.length)];
  randomTexts.push(text);
}

const write = (file, lines) => {
  fs.writeFileSync(`${file}.tmp`, lines.join(""));
  fs.renameSync(`${file}.tmp`, file);
};
fs.mkdirSync(outDir, { recursive: true });
for (const encoding of ["cl100k_base", "o200k_base"]) {
  const enc = new Tiktoken(require(`js-tiktoken/ranks/${encoding}`));
  const file = path.join(outDir, `${encoding}.jsonl`);
  write(
    file,
    texts.map(([n, text]) => {
      const ids = enc.encode(text, [], []);
      return JSON.stringify({ line: n, count: ids.length, ids }) + "\n";
    }),
  );
  console.log(`reference_counts: ${file} (${texts.length} texts)`);
  const randomFile = path.join(outDir, `${encoding}.random.jsonl`);
  write(
    randomFile,
    randomTexts.map((text) => JSON.stringify({ text, ids: enc.encode(text, [], []) }) + "\n"),
  );
  console.log(`reference_counts: ${randomFile} (${randomTexts.length} texts)`);
}
