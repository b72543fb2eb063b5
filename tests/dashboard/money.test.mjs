// The dashboard's formats, in Node: `src/dashboard/app.js` exports them when loaded outside a
// browser. Run by tests/it/dashboard.rs (`node --test`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const source = readFileSync(new URL("../../src/dashboard/app.js", import.meta.url), "utf8");
const context = { module: { exports: {} } };
vm.runInNewContext(source, context);
const { formatUsd, bucketName } = context.module.exports;

test("money: exact, cents at least, every digit that is not zero, never rounded", () => {
  assert.equal(formatUsd(8_000_000_000), "$8.00");
  assert.equal(formatUsd(8_500_000_000), "$8.50");
  assert.equal(formatUsd(374_000), "$0.000374");
  assert.equal(formatUsd(1_234_567_890), "$1.23456789");
  assert.equal(formatUsd(60), "$0.00000006");
  assert.equal(formatUsd(0), "$0.00");
  assert.equal(formatUsd(null), "$0.00");
  assert.equal(formatUsd(-5_000), "-$0.000005");
  assert.equal(formatUsd(1_234_000_000_000), "$1,234.00");
});

test("buckets are named as the usage API names them", () => {
  const ms = Date.UTC(2026, 11, 4, 13, 30);
  assert.equal(bucketName(ms, true), "2026-12-04T13:00Z");
  assert.equal(bucketName(ms, false), "2026-12-04");
});
