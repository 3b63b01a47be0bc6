// A charge command as it comes off the wire, given payloads nobody writes by hand (no server).
import { fc, test } from "@fast-check/vitest";
import { parseSent } from "@repo/harness";
import { expect } from "vitest";
import { parseCharge } from "../src/producer.js";

const number = fc.oneof(fc.integer({ min: -10, max: 10_000 }), fc.double(), fc.constantFrom(2 ** 60, Number.MAX_SAFE_INTEGER, 0));
const id = fc.oneof(fc.string(), fc.stringMatching(/^[A-Za-z0-9_-]{1,70}$/));
const payload = fc.oneof(
  fc.jsonValue(),
  fc.record({ id, account: fc.oneof(fc.string(), fc.integer()), amount: fc.oneof(number, fc.string()) }, { requiredKeys: [] }),
);

test.prop([payload])("any payload: a charge of a positive whole number of cents, exactly as sent, or a MalformedPayload", (value) => {
  const r = parseSent(parseCharge, value);
  if (!r) return;
  expect(r.parsed).toEqual({ id: r.sent.id, account: r.sent.account, amount: r.sent.amount });
  expect(r.parsed.id).toMatch(/^[A-Za-z0-9_-]{1,64}$/); // a subject token and a KV key
  expect(Number.isSafeInteger(r.parsed.amount) && r.parsed.amount > 0).toBe(true);
});
