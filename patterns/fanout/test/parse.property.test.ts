// An order event as it comes off the wire, given payloads nobody writes by hand (no server).
import { fc, test } from "@fast-check/vitest";
import { parseSent } from "@repo/harness";
import { expect } from "vitest";
import { parseEvent } from "../src/producer.js";

const type = fc.oneof(fc.constantFrom("created", "paid", "shipped", "refunded"), fc.string());
const n = fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 60));
const payload = fc.oneof(fc.jsonValue(), fc.record({ orderId: fc.oneof(fc.string(), fc.integer()), type, n }, { requiredKeys: [] }));

test.prop([payload])("any payload: an event exactly as sent, with a whole sequence number, or a MalformedPayload", (value) => {
  const r = parseSent(parseEvent, value);
  if (!r) return;
  expect(r.parsed).toEqual({ orderId: r.sent.orderId, type: r.sent.type, n: r.sent.n });
  expect(["created", "paid", "shipped"]).toContain(r.parsed.type);
  expect(Number.isSafeInteger(r.parsed.n) && r.parsed.n >= 0).toBe(true);
});
