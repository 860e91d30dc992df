// The official openai Node SDK against the local server, as its own README uses it.
// Run by tests/integration/test_node_sdk.py with OPENAI_BASE_URL, OPENAI_API_KEY, OTHER_KEY
// and INPUT (a JSONL file) set, at the server's default request rate. Each check that fails
// throws; the last line is a JSON summary, with the count of answers by status (no 429).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import OpenAI, { toFile } from 'openai';

// Every answer counted by status; with no retries a single 429 would also fail its call.
const statuses = {};
async function counting(url, init) {
  const response = await fetch(url, init);
  statuses[response.status] = (statuses[response.status] || 0) + 1;
  return response;
}
const client = new OpenAI({ maxRetries: 0, fetch: counting });
const input = process.env.INPUT;
const expected = fs.readFileSync(input);
const done = new Set(['completed', 'failed', 'expired', 'cancelled']);
const summary = {};

async function waitFor(id) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (done.has(batch.status)) return batch;
    assert.ok(Date.now() < deadline, `${id} still ${batch.status}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// Files: a stream (sent chunked, with no Content-Length) and toFile from bytes.
const streamed = await client.files.create({ file: fs.createReadStream(input), purpose: 'batch' });
assert.equal(streamed.object, 'file');
assert.equal(streamed.bytes, expected.length);
assert.equal(streamed.filename, 'node_input.jsonl');
assert.ok(streamed.expires_at > streamed.created_at);
const fromBytes = await client.files.create({
  file: await toFile(Buffer.from(expected), 'from_bytes.jsonl'),
  purpose: 'batch',
});
assert.equal(fromBytes.bytes, expected.length);
assert.equal((await client.files.retrieve(fromBytes.id)).filename, 'from_bytes.jsonl');
const content = Buffer.from(await (await client.files.content(streamed.id)).arrayBuffer());
assert.ok(content.equals(expected), 'the content is the bytes uploaded');
const listedFiles = [];
for await (const file of client.files.list({ limit: 1 })) listedFiles.push(file.id);
assert.ok(listedFiles.includes(streamed.id) && listedFiles.includes(fromBytes.id));
summary.files = listedFiles.length;

// Batches: create (with an idempotency key, sent as the README says), retrieve, complete.
const key = `node-${Date.now()}`;
const params = {
  input_file_id: streamed.id,
  endpoint: '/v1/chat/completions',
  completion_window: '24h',
  metadata: { client: 'node' },
};
const batch = await client.batches.create(params, { headers: { 'Idempotency-Key': key } });
const again = await client.batches.create(params, { headers: { 'Idempotency-Key': key } });
assert.equal(again.id, batch.id, 'the same key returns the same batch');
await assert.rejects(
  client.batches.create({ ...params, completion_window: '48h' }, { headers: { 'Idempotency-Key': key } }),
  (error) => error instanceof OpenAI.BadRequestError && error.code === 'idempotency_key_reused',
);
const finished = await waitFor(batch.id);
assert.equal(finished.status, 'completed');
assert.equal(finished.request_counts.completed, expected.toString().trim().split('\n').length);
const output = await (await client.files.content(finished.output_file_id)).text();
const lines = output.trim().split('\n').map((line) => JSON.parse(line));
assert.deepEqual(
  lines.map((line) => line.custom_id).sort(),
  expected.toString().trim().split('\n').map((line) => JSON.parse(line).custom_id).sort(),
);
summary.output_lines = lines.length;

// Cancel a second batch; list every batch with auto-paging, one per page.
const second = await client.batches.create({ ...params, input_file_id: fromBytes.id });
const cancelled = await client.batches.cancel(second.id);
assert.ok(['cancelling', 'cancelled', 'completed'].includes(cancelled.status), cancelled.status);
const pages = [];
for await (const item of client.batches.list({ limit: 1 })) pages.push(item.id);
assert.ok(pages.includes(batch.id) && pages.includes(second.id), 'auto-paging reaches both');
assert.equal(new Set(pages).size, pages.length, 'no batch listed twice');
summary.batches_listed = pages.length;

// More than 100 objects walked by auto-paging, two a page, each seen once; then batches
// created and cancelled in a loop, as a script tidying up does.
const many = [];
for (let i = 0; i < 105; i++) {
  const small = await toFile(Buffer.from(expected.toString().split('\n')[0] + '\n'), `many_${i}.jsonl`);
  many.push((await client.files.create({ file: small, purpose: 'batch' })).id);
}
const walked = [];
for await (const file of client.files.list({ limit: 2 })) walked.push(file.id);
assert.equal(new Set(walked).size, walked.length, 'no file listed twice');
const missing = many.filter((id) => !walked.includes(id));
assert.deepEqual(missing, [], 'auto-paging reaches every file created');
summary.files_walked = walked.length;
const toCancel = [];
for (let i = 0; i < 6; i++) toCancel.push((await client.batches.create({ ...params, input_file_id: many[i] })).id);
for (const id of toCancel) {
  const answer = await client.batches.cancel(id);
  assert.ok(['cancelling', 'cancelled', 'completed'].includes(answer.status), answer.status);
}
summary.cancelled = toCancel.length;

// Errors come as the SDK's own classes, with OpenAI's body.
await assert.rejects(client.batches.retrieve('batch_nope'), (error) => {
  assert.ok(error instanceof OpenAI.NotFoundError);
  assert.equal(error.status, 404);
  assert.equal(error.param, 'batch_id');
  return true;
});
await assert.rejects(
  client.batches.create({ ...params, endpoint: '/v1/nothing' }),
  (error) => error instanceof OpenAI.BadRequestError && error.param === 'endpoint',
);
await assert.rejects(
  new OpenAI({ apiKey: 'sk-not-a-key-000000', maxRetries: 0 }).files.list(),
  (error) => error instanceof OpenAI.AuthenticationError && error.status === 401,
);
const stranger = new OpenAI({ apiKey: process.env.OTHER_KEY, maxRetries: 0 });
await assert.rejects(stranger.files.retrieve(streamed.id), OpenAI.NotFoundError);

// Delete.
const deleted = await client.files.delete(fromBytes.id);
assert.deepEqual([deleted.id, deleted.deleted], [fromBytes.id, true]);
await assert.rejects(client.files.retrieve(fromBytes.id), OpenAI.NotFoundError);

summary.statuses = statuses;
summary.rate_limited = statuses[429] || 0;
console.log(JSON.stringify({ ok: true, ...summary }));
