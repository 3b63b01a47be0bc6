// The aggregate: a bank account, its events, and the rules. Pure functions, no I/O: state is a fold
// over the account's events, and a command is decided against that state.

export type AccountEvent =
  | { type: "opened"; owner: string }
  | { type: "deposited"; amount: number }
  | { type: "withdrawn"; amount: number }
  | { type: "fee_charged"; amount: number };

export type Command =
  | { kind: "open"; id: string; account: string; owner: string }
  | { kind: "deposit"; id: string; account: string; amount: number }
  /** A fee makes two events, withdrawn and fee_charged: stored together or not at all. */
  | { kind: "withdraw"; id: string; account: string; amount: number; fee?: number };

export interface Account {
  open: boolean;
  balance: number;
  /** Stream sequence of the last event folded in (0: none): what an append expects to be last. */
  version: number;
}

export const empty: Account = { open: false, balance: 0, version: 0 };

/** An amount of money: a whole number of cents, more than none, that a JSON number holds exactly. */
export const isAmount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) > 0;

/** A state as fold() makes it (what a snapshot must hold). */
export function isAccount(a: unknown): a is Account {
  const s = a as Account;
  return (
    typeof s === "object" &&
    s !== null &&
    typeof s.open === "boolean" &&
    Number.isSafeInteger(s.balance) &&
    s.balance >= 0 &&
    Number.isSafeInteger(s.version) &&
    s.version >= 0
  );
}

export function fold(state: Account, e: AccountEvent, seq: number): Account {
  switch (e.type) {
    case "opened":
      return { ...state, open: true, version: seq };
    case "deposited":
      return { ...state, balance: state.balance + e.amount, version: seq };
    case "withdrawn":
    case "fee_charged":
      return { ...state, balance: state.balance - e.amount, version: seq };
  }
}

/** The events a command makes, or why it is refused. The invariant: a balance never goes below zero. */
export function decide(state: Account, c: Command): AccountEvent[] | { rejected: string } {
  if (c.kind === "open") return state.open ? { rejected: "already open" } : [{ type: "opened", owner: c.owner }];
  if (!state.open) return { rejected: "no such account" };
  if (!Number.isSafeInteger(state.balance) || state.balance < 0)
    return { rejected: `the account's balance (${state.balance}) is not one it can decide on` };
  if (!isAmount(c.amount)) return { rejected: "amount must be a whole number of cents > 0" };
  if (c.kind === "deposit") {
    if (!Number.isSafeInteger(state.balance + c.amount)) return { rejected: "the balance would be too large to hold exactly" };
    return [{ type: "deposited", amount: c.amount }];
  }
  const fee = c.fee ?? 0;
  if (fee !== 0 && !isAmount(fee)) return { rejected: "a fee must be a whole number of cents > 0" };
  if (state.balance < c.amount + fee) return { rejected: `insufficient funds: balance ${state.balance}, needs ${c.amount + fee}` };
  return fee > 0
    ? [
        { type: "withdrawn", amount: c.amount },
        { type: "fee_charged", amount: fee },
      ]
    : [{ type: "withdrawn", amount: c.amount }];
}
