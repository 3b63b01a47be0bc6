// CLI: `tsx src/post.ts <count>` sends `count` payments to the ingest service at INGEST_URL (default
// http://127.0.0.1:8080), each twice, as a client retrying after a lost answer would: the service
// stores each once. Prints how many were stored and how many were duplicates.
import { intOption, isEntry, runMain, UserError } from "@repo/kit";

if (isEntry(import.meta.url)) {
  runMain("post", async (_signal, log) => {
    const count = intOption("count", process.argv[2] ?? "10");
    const url = `${process.env.INGEST_URL ?? "http://127.0.0.1:8080"}/payments`;
    const run = Date.now().toString(36);
    const tally = { stored: 0, duplicate: 0 };
    for (let i = 0; i < count; i++) {
      for (let send = 0; send < 2; send++) {
        const res = await fetch(url, { method: "POST", body: JSON.stringify({ id: `${run}-${i}`, amount: 100 + i }) }).catch(() => {
          throw new UserError(`no ingest service at ${url} — start it with "npm start" or set INGEST_URL`);
        });
        const answer = (await res.json()) as { duplicate?: boolean; error?: string };
        if (!res.ok) throw new UserError(`payment ${run}-${i}: ${res.status} ${answer.error ?? ""}`);
        tally[answer.duplicate ? "duplicate" : "stored"]++;
      }
    }
    log.info(tally, "sent each payment twice");
  });
}
