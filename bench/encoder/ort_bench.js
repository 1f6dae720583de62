// ONNX Runtime (npm onnxruntime-node, its bundled native library, CPU execution provider) side of bench/encoder:
// the exported model on the same ids as nlpd, intra-op THREADS threads, one warm-up and RUNS timed runs; writes the
// logits and prints {"times": [...], "median_s": ..}.
// usage: node ort_bench.js MODEL.onnx IDS_FILE BATCH SEQ RUNS THREADS LOGITS_OUT
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, idsFile, b, s, r, t, out] = process.argv.slice(2);
  const B = +b, S = +s, runs = +r, threads = +t;
  const raw = fs.readFileSync(idsFile);
  const i32 = new Int32Array(raw.buffer, raw.byteOffset, 2 * B * S);
  const ids = BigInt64Array.from(i32.subarray(0, B * S), BigInt);
  const mask = BigInt64Array.from(i32.subarray(B * S), BigInt);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', executionProviders: ['cpu'],
  });
  const feeds = {input_ids: new ort.Tensor('int64', ids, [B, S]), attention_mask: new ort.Tensor('int64', mask, [B, S])};
  let res = await sess.run(feeds); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    res = await sess.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) * 1e-9);
  }
  fs.writeFileSync(out, Buffer.from(res.logits.data.buffer, res.logits.data.byteOffset, res.logits.data.byteLength));
  const sorted = [...times].sort((x, y) => x - y);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  console.log(JSON.stringify({times, median_s: median}));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
