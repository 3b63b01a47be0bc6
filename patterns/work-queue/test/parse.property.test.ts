// A job as it comes off the wire, given payloads nobody writes by hand (no server: parsing is pure):
// a job whose id can be a status key and whose task a subject token, or a MalformedPayload (the DLQ).
import { fc, test } from "@fast-check/vitest";
import { parseSent } from "@repo/harness";
import { expect } from "vitest";
import { parseJob } from "../src/job.js";

const field = fc.oneof(
  fc.string(),
  fc.stringMatching(/^[-/=.\w]{1,20}$/),
  fc.integer(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 2 }),
);
const payload = fc.oneof(fc.jsonValue(), fc.record({ id: field, task: field, input: fc.jsonValue() }, { requiredKeys: [] }));

test.prop([payload])("any payload: a usable job, exactly as sent, or a MalformedPayload", (value) => {
  const r = parseSent(parseJob, value);
  if (!r) return;
  expect(r.parsed).toEqual({ id: r.sent.id, task: r.sent.task, input: r.sent.input });
  expect(r.parsed.id).toMatch(/^[-/=\w]+(\.[-/=\w]+)*$/); // a KV key: no leading, trailing or double dot
  expect(r.parsed.task).toMatch(/^[-\w]+(\.[-\w]+)*$/); // subject tokens
});
