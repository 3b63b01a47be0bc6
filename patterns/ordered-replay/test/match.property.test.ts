// The client-side filter (several filters on servers before 2.10), against NATS's subject rules
// written another way, over subjects and filters nobody writes by hand (no server).
import { fc, test } from "@fast-check/vitest";
import { expect } from "vitest";
import { subjectMatches } from "../src/replayer.js";

/** The rules as a regular expression: `*` is one token, a last `>` one token or more. */
function reference(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const body = f.map((t, i) =>
    t === ">" && i === f.length - 1 ? "[^.]+(\\.[^.]+)*" : t === "*" ? "[^.]+" : t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
  );
  return new RegExp(`^${body.join("\\.")}$`).test(subject);
}

const token = fc.constantFrom("a", "b", "orders", "ORD-1");
const subject = fc.array(token, { minLength: 1, maxLength: 5 }).map((t) => t.join("."));
const filter = fc
  .tuple(fc.array(fc.oneof(token, fc.constant("*")), { maxLength: 5 }), fc.boolean())
  .filter(([t, last]) => t.length > 0 || last)
  .map(([t, last]) => [...t, ...(last ? [">"] : [])].join("."));

test.prop([filter, subject])("matches exactly the subjects NATS would deliver for the filter", (f, s) => {
  expect(subjectMatches(f, s)).toBe(reference(f, s));
});

test.prop([subject])("every subject matches itself and >, and no shorter or longer subject matches it", (s) => {
  expect(subjectMatches(s, s)).toBe(true);
  expect(subjectMatches(">", s)).toBe(true);
  expect(subjectMatches(s, `${s}.x`)).toBe(false);
  expect(subjectMatches(`${s}.x`, s)).toBe(false);
});
