// A due job as it comes off the wire, given payloads nobody writes by hand (no server).
import { fc, test } from "@fast-check/vitest";
import { parseSent } from "@repo/harness";
import { expect } from "vitest";
import { parseJob } from "../src/runner.js";

const task = fc.oneof(fc.string(), fc.constant(null));
const payload = fc.oneof(
  fc.jsonValue(),
  fc.record({ id: fc.oneof(fc.string(), fc.integer()), task, input: fc.jsonValue() }, { requiredKeys: [] }),
);

test.prop([payload])("any payload: a job exactly as sent, or a MalformedPayload", (value) => {
  const r = parseSent(parseJob, value);
  if (!r) return;
  expect(r.parsed).toEqual({ id: r.sent.id, task: r.sent.task, input: r.sent.input });
});
