// CLI: runs one command against an account, as an application would:
//   tsx src/command.ts open <account> <owner> | deposit <account> <amount> | withdraw <account> <amount> [fee]
// It prints whether it was accepted (and the balance) or why not; a refusal is not an error (exit 0).
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connectFromEnv, intOption, isEntry, runMain, UserError } from "@repo/kit";
import type { Command } from "./account.js";
import { setup } from "./setup.js";
import { execute } from "./store.js";

const usage = "usage: command open <account> <owner> | deposit <account> <amount> | withdraw <account> <amount> [fee]";

if (isEntry(import.meta.url)) {
  runMain("command", async (_signal, log) => {
    const [kind, account, arg, fee] = process.argv.slice(2);
    if (!account || !arg) throw new UserError(usage);
    const id = `${kind}-${account}-${Date.now().toString(36)}`;
    const command: Command =
      kind === "open"
        ? { kind, id, account, owner: arg }
        : kind === "deposit"
          ? { kind, id, account, amount: intOption("amount", arg) }
          : kind === "withdraw"
            ? { kind, id, account, amount: intOption("amount", arg), fee: fee ? intOption("fee", fee) : undefined }
            : (() => {
                throw new UserError(usage);
              })();
    const nc = await connectFromEnv("event-sourcing-command");
    try {
      const jsm = await jetstreamManager(nc);
      const { atomic, snapshots } = await setup(jsm, nc);
      const r = await execute(jetstream(nc), jsm, atomic, command, { snapshots });
      if (r.accepted) log.info({ id, events: r.events, balance: r.state.balance, conflicts: r.conflicts }, "accepted");
      else log.info({ id, reason: r.reason, balance: r.state.balance }, "refused");
    } finally {
      await nc.close();
    }
  });
}
