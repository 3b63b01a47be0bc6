// Reading stored messages directly (no consumer is made): what a stream holds now, or the next
// message on a subject. For checks, tools and short reads, not for consuming a stream.
import type { JetStreamManager, NextMsgRequest, SeqMsgRequest, StoredMsg } from "@nats-io/jetstream";

/** Every message the stream holds now, in stream order: read by sequence, `inFlight` requests at a time. */
export async function storedMessages(jsm: JetStreamManager, stream: string, inFlight = 256): Promise<StoredMsg[]> {
  const { state } = await jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq += inFlight) {
    const batch = Array.from({ length: Math.min(inFlight, state.last_seq - seq + 1) }, (_, i) =>
      jsm.streams.getMessage(stream, { seq: seq + i }),
    );
    for (const m of await Promise.all(batch)) if (m) out.push(m); // null: deleted (acked, purged)
  }
  return out;
}

/** The first message at or after `seq` whose subject matches `subject` (wildcards too), or null. nats-server >= 2.9. */
export function nextStored(jsm: JetStreamManager, stream: string, seq: number, subject: string): Promise<StoredMsg | null> {
  const atOrAfter: SeqMsgRequest & NextMsgRequest = { seq, next_by_subj: subject }; // MsgRequest's type lacks next_by_subj
  return jsm.streams.getMessage(stream, atOrAfter);
}
