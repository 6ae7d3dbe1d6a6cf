// Streams one chat completion through the proxy with the official OpenAI
// SDK and prints how it ended: used by tests/integration/ratelimit_test.cc
// to check that a stream a limit finished is one the SDK accepts.
// usage: node openai_stream.mjs <baseURL> <apiKey> <model>
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const stream = await client.chat.completions.create({
  model,
  stream: true,
  messages: [{ role: "user", content: "Count to four hundred." }],
});
let text = "";
let finish = "";
let finishedBy = "";
for await (const chunk of stream) {
  for (const choice of chunk.choices) {
    text += choice.delta?.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  if (chunk.infermesh?.finished_by) finishedBy = `${chunk.infermesh.finished_by}/${chunk.infermesh.limit}`;
}
console.log(`finish_reason=${finish} chars=${text.length} finished_by=${finishedBy.split("/").slice(1).join("/")}`);
