// The aggregate's rules, given commands nobody writes by hand (no server: the rules are pure).
// The invariant: whatever commands come, in any order, with any numbers in them, folding the events
// they decide keeps the balance a whole number of cents and never below zero.
import { fc, test } from "@fast-check/vitest";
import { MalformedPayload } from "@repo/kit";
import { expect } from "vitest";
import { type Account, type Command, decide, empty, fold } from "../src/account.js";
import { parseStored } from "../src/store.js";

const anyNumber = fc.oneof(
  fc.integer({ min: -1_000, max: 1_000 }),
  fc.double(),
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0, 0.5, Number.MAX_SAFE_INTEGER, 2 ** 60),
);
const command: fc.Arbitrary<Command> = fc.oneof(
  fc.constant<Command>({ kind: "open", id: "o", account: "A", owner: "x" }),
  anyNumber.map((amount): Command => ({ kind: "deposit", id: "d", account: "A", amount })),
  fc
    .tuple(anyNumber, fc.option(anyNumber, { nil: undefined }))
    .map(([amount, fee]): Command => ({ kind: "withdraw", id: "w", account: "A", amount, fee })),
);

test.prop([fc.array(command, { maxLength: 40 })])("no command sequence takes a balance below zero or off whole cents", (commands) => {
  let state: Account = empty;
  let seq = 0;
  for (const c of commands) {
    const decided = decide(state, c);
    if (!Array.isArray(decided)) continue;
    for (const e of decided) {
      if (e.type !== "opened") expect(Number.isSafeInteger(e.amount) && e.amount > 0).toBe(true);
      state = fold(state, e, ++seq);
    }
    expect(Number.isSafeInteger(state.balance)).toBe(true);
    expect(state.balance).toBeGreaterThanOrEqual(0);
  }
});

const enc = new TextEncoder();
test.prop([
  fc.oneof(
    fc.jsonValue(),
    fc.record({
      type: fc.constantFrom("opened", "deposited", "withdrawn", "fee_charged", "x"),
      amount: anyNumber,
      owner: fc.string(),
      command: fc.string(),
    }),
  ),
])("a stored message is an event with a whole amount above zero, or a MalformedPayload", (value) => {
  const data = enc.encode(JSON.stringify(value) ?? "null");
  let stored: ReturnType<typeof parseStored>;
  try {
    stored = parseStored(data);
  } catch (err) {
    expect(err).toBeInstanceOf(MalformedPayload);
    return;
  }
  // Read as leniently as older versions wrote (any whole amount > 0); decide() is strict about new ones.
  for (const e of "commit" in stored ? stored.commit : [stored])
    if (e.type !== "opened") expect(Number.isInteger(e.amount) && e.amount > 0).toBe(true);
});
