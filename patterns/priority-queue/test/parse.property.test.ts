// A task as it comes off the wire, given payloads nobody writes by hand (no server).
import { fc, test } from "@fast-check/vitest";
import { parseSent } from "@repo/harness";
import { expect } from "vitest";
import { parseTask } from "../src/producer.js";
import { LEVELS } from "../src/setup.js";

const level = fc.oneof(fc.constantFrom(...LEVELS, "urgent", "HIGH"), fc.string());
const payload = fc.oneof(fc.jsonValue(), fc.record({ id: fc.oneof(fc.string(), fc.integer()), level }, { requiredKeys: [] }));

test.prop([payload])("any payload: a task of a known level, exactly as sent, or a MalformedPayload", (value) => {
  const r = parseSent(parseTask, value);
  if (!r) return;
  expect(r.parsed).toEqual({ id: r.sent.id, level: r.sent.level });
  expect(LEVELS).toContain(r.parsed.level);
});
